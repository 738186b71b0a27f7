"""`smart-energy serve`: predictor and transformer as supervised children behind one public port.

``serve`` itself owns the public port, so a client never meets a closed port. It binds it and hands the
listening socket to the transformer (``--listen_fd``), which accepts on it directly: no proxy on the request path
(the proxy hop cost ~1 ms of CPU per request, a quarter of the path's). While the transformer is not ready,
``serve`` accepts on the same socket too and answers 503 with the reason (``Doorman``); once it is ready again,
``serve`` stops accepting (a connection that reaches ``serve`` after the transformer came up but before the next
tick saw it is relayed to the transformer's own port, not refused). A request in flight in a transformer that is killed sees its connection closed (behind
the proxy it got a 503); the next one gets the 503. ``hop="proxy"`` keeps the old reverse proxy in front of the
transformer instead. While the predictor is down the transformer answers 503 itself. A child that exits after it
was ready once is started again after a back-off (0.5 s, doubling to 30 s, back to 0.5 s once it stayed up 60 s);
one that exits during start-up (a bad model, a port in use) stops ``serve`` with its exit code.

Children run under ``smart_energy.serving.die_with_parent`` (Linux's ``PR_SET_PDEATHSIG`` = SIGKILL), so they die
with ``serve`` even when ``serve`` is SIGKILLed. They are started from the main thread: the kernel
watches the thread that forked them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable
from urllib.parse import urlsplit

import httpx
import orjson

from smart_energy.components.errors import SmartEnergyError
from smart_energy.serving.client import stop_process
from smart_energy.serving.logic import MAX_BODY_BYTES

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0  # up this long: the next crash restarts after the first back-off again
TICK_SECONDS = 0.2
PROXY_TIMEOUT_SECONDS = 30.0  # the transformer gives up on the predictor after 10 s
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
              b"transfer-encoding", b"upgrade", b"host", b"content-length", b"content-encoding"}
OWN_HEADERS = {b"date", b"server"}  # uvicorn adds its own to every answer


@dataclass
class Child:
    """One supervised server process: started, watched, restarted after a back-off."""

    name: str
    module: str
    args: list[str]
    ready_url: str
    env: dict[str, str]
    log: IO | None = None
    pass_fds: tuple[int, ...] = ()
    proc: subprocess.Popen | None = None
    ready: bool = False
    was_ready: bool = False
    restarts: int = 0
    backoff: float = FIRST_BACKOFF_SECONDS
    started_at: float = 0.0
    restart_at: float | None = None
    last_exit: str = ""
    reaped: int | None = None  # pid whose exit was handled

    def start(self) -> None:
        argv = [sys.executable, "-m", "smart_energy.serving.die_with_parent", str(os.getpid()), self.module, *self.args]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT if self.log
                                     else None, start_new_session=True, pass_fds=self.pass_fds)
        self.started_at, self.restart_at, self.ready = time.monotonic(), None, False

    def reason(self) -> str:
        """Why this child does not answer now, for a 503."""
        if self.restart_at is not None:
            wait = max(0.0, self.restart_at - time.monotonic())
            return f"{self.name} {self.last_exit}; restarting in {wait:.1f}s (restart {self.restarts + 1})"
        what = "restarting" if self.restarts else "starting"
        return f"{self.name} is {what}{f' after it {self.last_exit}' if self.last_exit else ''}"


@dataclass
class Supervisor:
    """Watches the children from the event loop of ``serve``'s main thread."""

    children: list[Child]
    announce: str = ""  # said once every child is ready
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    stopping: bool = False
    failure: str | None = None
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    def start(self) -> None:
        for child in self.children:
            child.start()

    def reap(self) -> None:
        """Note children that exited since the last look (and when to start them again)."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None and child.reaped != child.proc.pid:
                self._exited(child, time.monotonic())

    async def tick(self) -> None:
        self.reap()
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                self.say(f"serve: starting {child.name} again (restart {child.restarts + 1})")
                child.restarts += 1
                child.start()
            elif child.proc is not None and child.proc.poll() is None and not child.ready:
                child.ready = await self._answers(child.ready_url)
                if child.ready:
                    child.was_ready = True
                    if child.restarts:
                        self.say(f"serve: {child.name} is back after {now - child.started_at:.1f}s")
            elif child.ready and now - child.started_at > STABLE_SECONDS:
                child.backoff = FIRST_BACKOFF_SECONDS
        if self.announce and all(child.ready for child in self.children):
            self.say(self.announce)
            self.announce = ""

    def _exited(self, child: Child, now: float) -> None:
        child.reaped, code = child.proc.pid, child.proc.returncode
        child.last_exit = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
                           else f"exited with code {code}")
        child.ready = False
        if self.stopping:
            return
        if not child.was_ready:
            self.failure = f"{child.name} {child.last_exit} during start-up"
            return
        child.restart_at = now + child.backoff
        self.say(f"serve: {child.name} {child.last_exit}; restarting in {child.backoff:.1f}s")
        child.backoff = min(child.backoff * 2, MAX_BACKOFF_SECONDS)

    async def _answers(self, url: str) -> bool:
        self._client = self._client or httpx.AsyncClient(timeout=1.0)
        try:
            return (await self._client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every child (transformer first). Signals arriving meanwhile wait until they are down."""
        self.stopping = True
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in reversed(self.children):
                if child.proc is not None:
                    stop_process(child.proc, timeout)
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)


class Proxy:
    """The public port's ASGI app: every request goes to the transformer; when it cannot, a 503 says why."""

    def __init__(self, supervisor: Supervisor, transformer: Child, backend: str):
        self.supervisor = supervisor
        self.transformer = transformer
        self.backend = backend.rstrip("/")
        self.client: httpx.AsyncClient | None = None
        self._watch: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return await _answer(send, 413, {"error": f"request body over {MAX_BODY_BYTES} bytes; split the batch",
                                             "reason": "body_too_large"})
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        target = self.backend + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            resp = await self.client.request(scope["method"], target, content=body, headers=headers)
        except httpx.TransportError as err:
            self.supervisor.reap()
            reason = self.transformer.reason() if not self.transformer.ready else \
                f"transformer did not answer ({type(err).__name__})"
            return await _answer(send, 503, {"error": f"{reason}; retry shortly", "reason": "transformer_unavailable"},
                                 [(b"retry-after", b"1")])
        out = [(k, v) for k, v in resp.headers.raw if k.lower() not in HOP_BY_HOP | OWN_HEADERS]
        await _answer_raw(send, resp.status_code, resp.content, out)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = httpx.AsyncClient(timeout=PROXY_TIMEOUT_SECONDS,
                                                limits=httpx.Limits(max_keepalive_connections=32))
                self._watch = asyncio.create_task(self._supervise())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.supervisor.stopping = True
                if self._watch:
                    self._watch.cancel()
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _supervise(self) -> None:
        while not self.supervisor.stopping:
            await self.supervisor.tick()
            if self.supervisor.failure:  # said by the CLI on the way out
                os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own shutdown, then serve stops the rest
                return
            await asyncio.sleep(TICK_SECONDS)


async def _read_body(receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        size += len(message.get("body", b""))
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send, status: int, content: dict, extra: list | None = None) -> None:
    await _answer_raw(send, status, orjson.dumps(content), [(b"content-type", b"application/json"), *(extra or [])])


async def _answer_raw(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Doorman:
    """``serve``'s own answers on the public port while the transformer cannot take them: 503 with the reason,
    ``connection: close`` (the next try reaches whoever accepts then). It accepts on a duplicate of the listening
    socket, so closing it leaves the socket to the transformer."""

    def __init__(self, listener: socket.socket, supervisor: Supervisor, transformer: Child):
        self.listener, self.supervisor, self.transformer = listener, supervisor, transformer
        self.server: asyncio.AbstractServer | None = None

    async def follow(self) -> None:
        """Accept while the transformer is not ready, not while it is."""
        if not self.transformer.ready and self.server is None:
            self.server = await asyncio.start_server(self._answer, sock=self.listener.dup(), limit=2**16)
        elif self.transformer.ready and self.server is not None:
            await self.close()

    async def close(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            server.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            if await self._transformer_answers():
                # the transformer became ready since the last tick and accepts on the socket too: this connection
                # reached us in the overlap, so it is relayed to the transformer's own port instead of refused
                return await self._relay(head, reader, writer)
            length = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
                           if line.lower().startswith(b"content-length:")), b"0")
            if length.isdigit() and 0 < int(length) <= MAX_BODY_BYTES:
                await asyncio.wait_for(reader.readexactly(int(length)), 5.0)  # read, so closing sends no RST
            self.supervisor.reap()
            body = orjson.dumps({"error": f"{self.transformer.reason()}; retry shortly",
                                 "reason": "transformer_unavailable"})
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                         b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _transformer_answers(self) -> bool:
        """Is the transformer ready now (it may be, before the next tick says so)?"""
        self.supervisor.reap()
        proc = self.transformer.proc
        if proc is None or proc.poll() is not None or self.transformer.restart_at is not None:
            return False
        return self.transformer.ready or await self.supervisor._answers(self.transformer.ready_url)

    async def _relay(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pipe this connection (its head already read) to the transformer's own port, both ways, until closed."""
        target = urlsplit(self.transformer.ready_url)
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(2**16):
                    sink.write(data)
                    await sink.drain()
                if sink.can_write_eof():
                    sink.write_eof()
            except (ConnectionError, OSError):
                pass

        try:
            up_writer.write(head)
            await up_writer.drain()
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            up_writer.close()


async def _watch(supervisor: Supervisor, doorman: Doorman) -> None:
    try:
        while not supervisor.stopping and not supervisor.failure:
            await supervisor.tick()
            await doorman.follow()
            await asyncio.sleep(TICK_SECONDS)
    finally:
        await doorman.close()
        if supervisor._client is not None:
            await supervisor._client.aclose()


def serve_supervised(model_dir: str | Path, port: int, predictor_port: int, transformer_port: int,
                     env: dict[str, str], model_name: str, hop: str = "handoff", batching: bool = True,
                     online_row_cache: bool = True) -> None:
    """Both children and the public ``port`` (handed to the transformer, or ``hop="proxy"``: a reverse proxy in
    front of it), until a signal or a child that fails to start."""
    import uvicorn

    listener = socket.socket()  # bound first: a port in use stops serve before any child starts
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(2048)  # connections wait in the backlog until someone accepts, rather than being refused
    except OSError as err:
        raise SmartEnergyError(f"cannot listen on 127.0.0.1:{port}: {err.strerror}") from None
    common = ["--model_dir", str(model_dir), "--model_name", model_name]
    env = {**env, "SE_PREDICTOR_HOST": f"127.0.0.1:{predictor_port}"}
    handoff = hop == "handoff"
    predictor = Child("predictor", "smart_energy.serving.predictor", [*common, "--http_port", str(predictor_port)],
                      f"http://127.0.0.1:{predictor_port}/v2/health/ready", env)
    transformer = Child("transformer", "smart_energy.serving.transformer",
                        [*common, "--http_port", str(transformer_port),
                         "--predictor_host", f"127.0.0.1:{predictor_port}",
                         "--predictor_batching", "on" if batching else "off",
                         "--online_row_cache", "on" if online_row_cache else "off",
                         *(["--listen_fd", str(listener.fileno())] if handoff else [])],
                        f"http://127.0.0.1:{transformer_port}/v2/health/ready", env,
                        pass_fds=(listener.fileno(),) if handoff else ())
    supervisor = Supervisor([predictor, transformer], announce=(
        f"serving {model_name} from {model_dir} on http://127.0.0.1:{port} (V1 /v1/models/{model_name}:predict, "
        f"V2 /v2/models/{model_name}/infer); predictor 127.0.0.1:{predictor_port}, transformer "
        f"127.0.0.1:{transformer_port}; Ctrl-C stops"))
    try:
        supervisor.start()
        if handoff:
            asyncio.run(_watch(supervisor, Doorman(listener, supervisor, transformer)))
        else:
            server = uvicorn.Server(uvicorn.Config(Proxy(supervisor, transformer,
                                                         f"http://127.0.0.1:{transformer_port}"),
                                                   log_level="warning", lifespan="on"))
            server.run(sockets=[listener])
    except (KeyboardInterrupt, SystemExit):  # a signal, after uvicorn's own shutdown
        pass
    finally:
        supervisor.stop()
        listener.close()
    if supervisor.failure:
        raise SmartEnergyError(supervisor.failure)
