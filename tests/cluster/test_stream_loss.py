"""A stream that dies mid-flight fails the requests waiting on it at once (not at their
deadline), and the next request opens a new stream; a backend process killed and restarted."""

from __future__ import annotations

import functools
import logging
import signal
import sys
from typing import Any

import pytest
import trio

from trionano import Components, Config, TCPEndpoint
from trionano.client import open_client
from trionano.cluster import Bridge, ClusterConfig, Node, run

from ._harness import ROOT, free_address

RPC_TIMEOUT = 30.0  # far beyond what the test waits: an answer before it is the stream's loss


def test_a_lost_stream_fails_its_requests_at_once_and_the_next_call_reopens_one(
    caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    caplog.set_level(logging.INFO, logger="trionano.cluster")
    gate_address, backend_address = free_address(), free_address()
    gate = Node(
        Components(),
        ClusterConfig(service_address=gate_address, is_master=True, rpc_timeout=RPC_TIMEOUT, heartbeat=0.5),
        Config(heartbeat=0),
    )
    seen: dict[str, Any] = {}
    command = [
        sys.executable,
        "-m",
        "tests.cluster._slow_backend",
        "--listen",
        backend_address,
        "--master",
        gate_address,
        "--heartbeat",
        "0.5",
    ]

    async def start_backend() -> trio.Process:
        log = (tmp_path / "backend.log").open("ab")
        process = await trio.lowlevel.open_process(command, cwd=ROOT, stdout=log, stderr=log)
        with trio.fail_after(60):  # a process start on a loaded machine
            while "Slow" not in gate.remote_services:  # noqa: ASYNC110
                await trio.sleep(0.05)
        return process

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            backend = await start_backend()
            try:
                async with open_client("127.0.0.1", port) as client:
                    seen["first"] = await client.request("Slow.ping", {})
                    frames_before = gate.statistics().frames_out
                    async with trio.open_nursery() as requests:

                        async def wait() -> None:
                            started = trio.current_time()
                            seen["lost"] = await client.request("Slow.wait", {})
                            seen["lost_after"] = trio.current_time() - started

                        requests.start_soon(wait)
                        with trio.fail_after(10):
                            while gate.statistics().frames_out == frames_before:  # noqa: ASYNC110
                                await trio.sleep(0.01)  # Slow.wait is on the stream
                        backend.send_signal(signal.SIGKILL)
                        await backend.wait()
                    backend = await start_backend()  # the same address: registered again
                    with trio.fail_after(60):  # a process start on a loaded machine
                        while True:
                            answer = await client.request("Slow.ping", {})
                            if answer == {"pong": True}:
                                break
                            await trio.sleep(0.1)
                    seen["statistics"] = gate.statistics()
                    seen["connected"] = client.error is None
            finally:
                backend.send_signal(signal.SIGKILL)
                with trio.CancelScope(shield=True):
                    await backend.wait()
            gate.server.shutdown()

    run(main)
    assert seen["first"] == {"pong": True}
    assert seen["lost"]["code"] == 503
    assert seen["lost_after"] < RPC_TIMEOUT / 2  # when the stream died, not at the deadline
    assert seen["connected"]
    assert seen["statistics"].forward_errors >= 1
    # a new stream with the new process: at least one more (opened by either end: the backend
    # opens one to its master, the gate, as soon as it has registered). The old member's
    # registration may outlive the kill until the master evicts it (the new process then
    # registers at the same address, which ends the links to it: a stream opened in between
    # goes down and comes up again)
    streams = caplog.text.count(f"stream to {backend_address} up") + caplog.text.count(
        f"stream from {backend_address} up"
    )
    assert streams >= 2
