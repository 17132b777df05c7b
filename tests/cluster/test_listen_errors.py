"""A node that cannot listen (its gRPC address or its clients' port is taken) says so in one
line, naming its role and the address, and exits with status 1 (attack3 t15: a nested
ExceptionGroup traceback of some 80 lines)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import trio

from ._harness import ROOT, cluster, free_address


async def _run_example(*args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "examples.cluster", *args]
    with trio.fail_after(60):
        return await trio.run_process(command, cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False)


async def test_a_taken_grpc_address_is_one_line_and_status_1(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("master", "master", c.master)
        done = await _run_example("gate", "--listen", c.master, "--master", c.master, "--gate-address", free_address())
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "ERROR" in line]
    assert len(lines) == 1, output
    assert f"gate {c.master}: cannot serve gRPC on {c.master}: Address already in use" in lines[0]


async def test_a_taken_client_port_is_one_line_and_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with cluster(tmp_path) as c:
            await c.start("master", "master", c.master)
            listen = free_address()
            done = await _run_example(
                "gate", "--listen", listen, "--master", c.master, "--gate-address", f"127.0.0.1:{port}"
            )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "ERROR" in line]
    assert len(lines) == 1, output
    assert f"gate {listen}: cannot listen on 127.0.0.1:{port}: Address already in use" in lines[0]


async def test_the_live_rooms_nodes_say_a_taken_port_in_one_line(tmp_path: Path) -> None:
    """attack7: the live room's per-node commands printed a 50-95-line traceback when a port
    was taken (its WebSocket port, its push API's port after it had joined the cluster, its
    gRPC address), where ``examples.cluster`` logs one line: they run in the same guard now."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        logic, gate = free_address(), free_address()
        cases = {
            # the push API's port, once the logic node is up
            f"logic {logic}: cannot listen on 127.0.0.1:{port} (push API): Address already in use": [
                "logic", "--listen", logic, "--push-port", str(port), "--heartbeat", "0.5",
            ],
            # the viewers' WebSocket port (no logic node: the gate is the master of none)
            f"gate {gate}: cannot listen on 127.0.0.1:{port}: Address already in use": [
                "gate", "--listen", gate, "--master", gate, "--ws-port", str(port),
            ],
            # the gRPC address
            f"gate 127.0.0.1:{port}: cannot serve gRPC on 127.0.0.1:{port}: Address already in use": [
                "gate", "--listen", f"127.0.0.1:{port}", "--master", logic, "--ws-port", "0",
            ],
        }  # fmt: skip
        for expected, args in cases.items():
            command = [sys.executable, "-m", "examples.liveroom", *args]
            with trio.fail_after(60):
                done = await trio.run_process(command, cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False)
            output = (done.stdout + done.stderr).decode()
            assert done.returncode == 1, output
            assert "Traceback" not in output, output
            lines = [line for line in output.splitlines() if "ERROR" in line]
            assert len(lines) == 1, output
            assert expected in lines[0], output
