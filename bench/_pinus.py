"""pinus 1.7.4 (NetEase pomelo's TypeScript successor, on Node) as an optional benchmark peer.

bench/pinus holds a tiny app: a master and one connector (``hybridconnector``: TCP and
WebSocket on one port) with an echo handler at :data:`ROUTE`. Its packages install on demand
(``npm ci`` into bench/pinus/node_modules, gitignored); where npm is missing or the install
fails, :func:`available` is false and :func:`unavailable_reason` says why, and the benchmarks
skip the peer. Every socket pinus opens binds 127.0.0.1 (``distinctHost`` for the connector,
bench/pinus/loopback.js preloaded for the master's and the RPC ports).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Final

__all__ = ["ROUTE", "available", "serve", "unavailable_reason"]

APP: Final = Path(__file__).resolve().parent / "pinus"
#: The echo handler's route (pomelo routes are serverType.handler.method).
ROUTE: Final = "connector.benchHandler.echo"
_START_TIMEOUT: Final = 30.0


@cache
def _install() -> str | None:
    """Install the app's packages unless they are there; None, or why pinus is unavailable."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node or npm is not installed"
    if (APP / "node_modules" / "pinus" / "package.json").exists():
        return None
    command = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        subprocess.run(command, cwd=APP, check=True, capture_output=True, text=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        return f"npm ci failed: {exc.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired:
        return "npm ci took over 10 minutes"
    return None


def available() -> bool:
    """Whether pinus can run here (installing its packages on first call)."""
    return _install() is None


def unavailable_reason() -> str:
    return _install() or "available"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _write_config(base: Path, master_port: int, rpc_port: int, client_port: int) -> None:
    config = base / "config"
    config.mkdir()
    env = "production"
    master = {"id": "master-server-1", "host": "127.0.0.1", "port": master_port}
    connector = {
        "id": "connector-server-1",
        "host": "127.0.0.1",
        "port": rpc_port,
        "clientHost": "127.0.0.1",
        "clientPort": client_port,
        "frontend": True,
    }
    (config / "master.json").write_text(json.dumps({env: master}))
    (config / "servers.json").write_text(json.dumps({env: {"connector": [connector]}}))
    handlers = base / "app" / "servers" / "connector" / "handler"
    handlers.mkdir(parents=True)
    shutil.copy(APP / "benchHandler.js", handlers / "benchHandler.js")


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pinus exited with {proc.returncode} before it listened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"pinus did not listen on port {port} within {_START_TIMEOUT:g} s")


@contextmanager
def serve(core: int | None = None) -> Iterator[tuple[int, list[int]]]:
    """Run the pinus app (master and connector, on ``core`` if given) until the block ends.
    Yields (the connector's client port, [master pid, connector pid]). Raises RuntimeError
    when it is unavailable or does not start (three tries: a free port may be taken before
    pinus binds it)."""
    reason = _install()
    if reason is not None:
        raise RuntimeError(f"pinus is unavailable: {reason}")
    for attempt in range(3):
        with tempfile.TemporaryDirectory(prefix="trionano-pinus-") as tmp:
            base = Path(tmp)
            client_port = _free_port()
            _write_config(base, _free_port(), _free_port(), client_port)
            env = {
                **os.environ,
                "TRIONANO_PINUS_BASE": str(base),
                "NODE_OPTIONS": f"--require {APP / 'loopback.js'}",
                "NODE_ENV": "production",
            }
            log_path = base / "pinus.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    ["node", str(APP / "app.js"), "env=production"],
                    cwd=APP,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    if core is not None and (os.cpu_count() or 1) > 1:
                        os.sched_setaffinity(proc.pid, {core})  # the connector it spawns inherits it
                    try:
                        _wait_listening(client_port, proc)
                    except RuntimeError as exc:
                        if attempt == 2:
                            tail = log_path.read_text(errors="replace")[-600:]
                            raise RuntimeError(f"{exc}; its log ends:\n{tail}") from None
                        continue
                    pids = [proc.pid, *_children(proc.pid)]
                    if len(pids) < 2:
                        raise RuntimeError("pinus's connector process was not found")
                    yield client_port, pids
                    return
                finally:
                    _stop(proc)
    raise AssertionError("unreachable")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for pid in reversed([proc.pid, *_children(proc.pid)]):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
