"""Ingest shows progress on a terminal, and nothing of it when its output is not a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios


def _run(args, tty: bool) -> str:
    if not tty:
        return subprocess.run(args, capture_output=True, text=True, check=True).stderr
    leader, follower = pty.openpty()
    # a terminal 100 columns wide (a fresh pty has none, and tqdm sizes its bar to the terminal)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_ingest_progress_bar_only_on_a_terminal(shared_data, tmp_path):
    args = [sys.executable, "-m", "smart_energy.cli", "ingest", str(shared_data), "--out", str(tmp_path / "o")]
    on_tty = _run(args, tty=True)
    assert f"ingest {shared_data.name}" in on_tty and "B/s" in on_tty  # tqdm's bar: name, bytes per second
    piped = _run(args, tty=False)
    assert f"ingest {shared_data.name}" not in piped and "read 106,952 rows" in piped
