"""Run a MONAI Label server as a child process on a free loopback port (used by benchmarks and tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distinct_ports(count: int) -> list[int]:
    """``count`` different free loopback ports (servers started together must not draw the same one)."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_server(
    command: list[str],
    *,
    log_path: Path,
    port: int,
    env: dict[str, str] | None = None,
    startup_timeout: float = 180.0,
) -> Iterator[ServerProcess]:
    """Start ``command`` (which must listen on ``port``), wait until ``GET /info/`` answers, stop it on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
    server = ServerProcess(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_until_up(server, startup_timeout)
        yield server
    finally:
        _stop(process)


def slpt_serve_command(studies: Path, port: int, conf: dict[str, str] | None = None) -> list[str]:
    """``slpt serve`` for our app, run with this interpreter."""
    command = [sys.executable, "-m", "slpt", "serve", "--studies", str(studies), "--port", str(port)]
    for key, value in (conf or {}).items():
        command += ["--conf", key, value]
    return command


def _wait_until_up(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with code {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/info/", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server did not answer within {timeout:.0f} s:\n{server.log()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    # The server spawns workers (training, scoring); stop the whole process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
