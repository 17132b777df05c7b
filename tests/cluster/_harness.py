"""Real cluster processes on loopback for the multi-process tests: start nodes of an example
(``python -m examples.cluster ROLE ...``), wait for their log lines, signal and kill them."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from trionano.client import Client, open_websocket_client

ROOT = Path(__file__).resolve().parent.parent.parent
HEARTBEAT = 0.5  # member keepalive; the master evicts after 4 silent intervals


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_address() -> str:
    return f"127.0.0.1:{free_port()}"


class Cluster:
    """The processes of one test's cluster; each node's output goes to ``logs[name]``."""

    def __init__(self, tmp: Path, module: str = "examples.cluster", heartbeat: float = HEARTBEAT) -> None:
        self.module = module
        self.tmp = tmp
        self.heartbeat = heartbeat
        self.master = free_address()
        self.gate_client = free_address()
        self.processes: dict[str, trio.Process] = {}
        self.logs: dict[str, Path] = {}

    async def start(self, name: str, role: str, listen: str, *extra: str, ready: str = "up:") -> None:
        await self.start_command(name, ["-m", self.module, role, "--listen", listen, *extra], ready=ready)

    async def start_command(self, name: str, args: list[str], *, ready: str = "up:") -> None:
        """Start ``python ARGS --master M --heartbeat H``; wait for ``ready`` in its log."""
        log = self.logs[name] = self.tmp / f"{name}.log"
        command = [sys.executable, *args, "--master", self.master, "--heartbeat", str(self.heartbeat)]
        with log.open("ab") as out:
            self.processes[name] = await trio.lowlevel.open_process(command, cwd=ROOT, stdout=out, stderr=out)
        await self.wait_log(name, ready)

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    async def wait_log(self, name: str, text: str, *, seconds: float = 60) -> str:
        with trio.fail_after(seconds):
            while True:
                content = self.log(name)
                if text in content:
                    return content
                await trio.sleep(0.05)

    def signal(self, name: str, signum: signal.Signals) -> None:
        self.processes[name].send_signal(signum)

    async def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            for process in self.processes.values():
                await process.wait()
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()

    async def standard(self) -> None:
        """examples.cluster as nano.md §6.3 runs it: a master, a chat backend and a gate."""
        await self.start("master", "master", self.master)
        await self.start("chat", "chat", free_address())
        await self.start("gate", "gate", free_address(), "--gate-address", self.gate_client)

    def client(self, gate_client: str | None = None) -> AsyncIterator[Client]:
        return open_websocket_client(f"ws://{gate_client or self.gate_client}/nano")  # type: ignore[return-value]


@asynccontextmanager
async def cluster(
    tmp_path: Path, module: str = "examples.cluster", *, heartbeat: float = HEARTBEAT
) -> AsyncIterator[Cluster]:
    running = Cluster(tmp_path, module, heartbeat)
    try:
        # a wrong expectation fails, never hangs CI; a test's several process starts take many
        # seconds each on a loaded 2-core machine
        with trio.fail_after(180):
            yield running
    finally:
        with trio.CancelScope(shield=True):
            await running.stop_all()
