"""Model-server processes for the API tests: `multirobust serve` on a free port of 127.0.0.1.

The server picks its own port (``--port 0``) and prints its URL; a reader thread drains its
output so the pipe never blocks it, and :func:`start` waits until ``/v2/health/ready`` answers.
"""

import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import multirobust

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
SRC = Path(multirobust.__file__).resolve().parents[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str = ""
    name: str = ""
    ledger: Path = Path()
    lines: list = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.lines)


def launch(*args: str, ledger: Path, checkpoint: Path = ZOO / "standard.pt") -> Server:
    """Start `multirobust serve` (not waiting for it); :func:`wait` finishes the start."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "multirobust", "serve", "--checkpoint", str(checkpoint)]
    cmd += ["--host", "127.0.0.1", "--port", "0", "--ledger", str(ledger), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    server = Server(proc=proc, ledger=ledger)
    lines: queue.Queue = queue.Queue()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.lines.append(line)
            lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
    server._queue = lines  # type: ignore[attr-defined]
    return server


def wait(server: Server, timeout: float = 180.0) -> Server:
    """Block until the server has announced its URL and answers ready."""
    deadline = time.monotonic() + timeout
    while not server.url:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            line = server._queue.get(timeout=0.5)  # type: ignore[attr-defined]
        except queue.Empty:
            line = ""
        found = re.search(r"serving (\S+) .* at (http://[0-9.]+:\d+)", line)
        if found:
            server.name, server.url = found.group(1), found.group(2)
        if time.monotonic() > deadline:
            raise RuntimeError(f"server did not start in {timeout} s:\n{server.log()}")
    while True:
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready in {timeout} s:\n{server.log()}")
        time.sleep(0.2)


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=20)


def infer_body(images, request_id=None) -> dict:
    from multirobust.api import infer_request

    return infer_request(images.numpy() if hasattr(images, "numpy") else images, request_id)


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}
