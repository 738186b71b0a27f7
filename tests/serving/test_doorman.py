"""``serve``'s Doorman answers the public port while the transformer is not ready, and stops once it is.

The transformer accepts on the same socket as soon as it is up, before the supervisor's next tick marks it
ready: a connection that reaches the Doorman in that overlap must get the transformer's answer (relayed to its
own port), not a 503 (a client that just saw "ready" was refused once, in the wheel test). Real sockets, a real
HTTP server for the transformer's port and a real child process; no KServe needed.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from smart_energy.serving.supervise import Child, Doorman, Supervisor


class _Transformer(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's names
        self._answer(200, b'{"status": "ready"}')

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        self._answer(200, b'{"echo": ' + body + b"}")

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _doorman_on(listener: socket.socket, child: Child):
    """Run a Doorman accepting on ``listener`` in a thread's own event loop; returns a stopper."""
    loop = asyncio.new_event_loop()
    doorman = Doorman(listener, Supervisor([child]), child)
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(doorman.follow())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)

    def stop():
        asyncio.run_coroutine_threadsafe(doorman.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    return stop


def _listener() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


def test_a_request_in_the_overlap_gets_the_transformers_answer_not_a_503():
    own = ThreadingHTTPServer(("127.0.0.1", 0), _Transformer)
    threading.Thread(target=own.serve_forever, daemon=True).start()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    listener = _listener()
    child = Child("transformer", "unused", [], f"http://127.0.0.1:{own.server_port}/v2/health/ready", {}, proc=alive)
    stop = _doorman_on(listener, child)  # the supervisor has not seen the transformer ready yet
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with requests.Session() as http:
            for k in range(3):  # keep-alive through the relay
                answer = http.post(f"{url}/v1/models/m:predict", data=b'{"k": %d}' % k, timeout=10)
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"echo": {"k": k}}
    finally:
        stop()
        alive.kill()
        alive.wait()
        own.shutdown()
        listener.close()


def test_while_the_transformer_is_down_the_doorman_answers_503_with_the_reason():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    listener = _listener()
    unused = _listener()  # a port nobody answers HTTP on
    child = Child("transformer", "unused", [], f"http://127.0.0.1:{unused.getsockname()[1]}/v2/health/ready", {},
                  proc=dead, was_ready=True)
    stop = _doorman_on(listener, child)
    try:
        answer = requests.post(f"http://127.0.0.1:{listener.getsockname()[1]}/v1/models/m:predict", data=b"{}",
                               timeout=10)
        assert answer.status_code == 503
        assert answer.json()["reason"] == "transformer_unavailable"
        assert "transformer exited with code 0" in answer.json()["error"]
        assert answer.headers["retry-after"] == "1"
    finally:
        stop()
        listener.close()
        unused.close()
