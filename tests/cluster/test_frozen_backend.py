"""A backend process frozen (SIGSTOP) for less than the master's eviction time, on both paths
(the stream, and nano's unary calls): the notifies a client sends meanwhile are all delivered,
in order, once it runs again (t1c of attack3: the unary path used to drop those its member had
not taken within ``rpc_timeout``); every Request is answered by its deadline while it is frozen,
a burst past the client's ``max_pending_requests`` included (t13), and one queued behind a
notify that waits for the frozen member (the unary path) too. The gate (the master too) runs in
this process, the backend in its own (``tests.cluster._seq_backend``)."""

from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from trionano import Components, Config, TCPEndpoint
from trionano.client import open_client
from trionano.cluster import Bridge, ClusterConfig, Node, run

from ._harness import ROOT, free_address

RPC_TIMEOUT = 1.0
HEARTBEAT = 3.0  # the master evicts after 4 silent intervals: 12 s
FREEZE = 6.0  # well past the deadline, well under the eviction


@pytest.mark.parametrize("fast", [True, False], ids=["stream", "unary"])
def test_a_frozen_backend_gets_every_notify_and_requests_are_answered_meanwhile(tmp_path: Path, fast: bool) -> None:
    gate_address, backend_address = free_address(), free_address()
    gate = Node(
        Components(),
        ClusterConfig(
            service_address=gate_address, is_master=True, heartbeat=HEARTBEAT, rpc_timeout=RPC_TIMEOUT, fast_path=fast
        ),
        Config(heartbeat=0),
    )
    log = tmp_path / "backend.log"
    command = [sys.executable, "-m", "tests.cluster._seq_backend", "--listen", backend_address]
    command += ["--master", gate_address, "--heartbeat", str(HEARTBEAT), "--rpc-timeout", str(RPC_TIMEOUT)]
    command += [] if fast else ["--nofast"]
    seen: dict[str, Any] = {"frozen": False}
    processes: list[trio.Process] = []

    async def main(bridge: Bridge) -> None:
        try:
            with trio.fail_after(90):  # a wrong expectation fails, never hangs
                await scenario(bridge)
        finally:
            with trio.CancelScope(shield=True):
                for process in processes:
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                    await process.wait()

    async def scenario(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            with log.open("wb") as out:
                processes.append(await trio.lowlevel.open_process(command, cwd=ROOT, stdout=out, stderr=out))
            while "Seq" not in gate.remote_services:  # noqa: ASYNC110
                await trio.sleep(0.05)
            backend = processes[0]
            async with open_client("127.0.0.1", port) as client, open_client("127.0.0.1", port) as burst:
                assert await client.request("Seq.echo", {"warm": 1}) == {"echo": {"warm": 1}}
                assert await burst.request("Seq.echo", {"warm": 2}) == {"echo": {"warm": 2}}
                sent = 0
                stop = trio.Event()

                async def notes() -> None:
                    nonlocal sent
                    while not stop.is_set():
                        sent += 1
                        await client.notify("Seq.note", {"i": sent})
                        await trio.sleep(0.02)

                async def behind_a_notify() -> None:
                    """A Request of the notifying session: on the unary path it waits in the
                    queue behind a notify the frozen member has not taken."""
                    await trio.sleep(0.5)
                    seen["behind"] = await client.request("Seq.echo", {"behind": 1})
                    seen["behind_while_frozen"] = seen["frozen"]

                async def one(i: int, answers: list[Any]) -> None:
                    answer = await burst.request("Seq.echo", {"i": i})
                    answers.append((answer, seen["frozen"]))

                nursery.start_soon(notes)
                await trio.sleep(0.3)
                backend.send_signal(signal.SIGSTOP)
                seen["frozen"] = True
                try:
                    answers: list[Any] = []
                    async with trio.open_nursery() as requests:
                        requests.start_soon(behind_a_notify)
                        for i in range(200):  # past max_pending_requests (128)
                            requests.start_soon(one, i, answers)
                        with trio.move_on_after(FREEZE):
                            while len(answers) < 200 or "behind" not in seen:  # noqa: ASYNC110
                                await trio.sleep(0.05)
                        await trio.sleep(1)  # notifies keep coming meanwhile
                        backend.send_signal(signal.SIGCONT)
                        seen["frozen"] = False
                finally:
                    backend.send_signal(signal.SIGCONT)
                seen["answers"] = answers
                await trio.sleep(1)
                stop.set()
                await trio.sleep(0.1)
                with trio.fail_after(30):
                    while True:  # every notify, once the backend has caught up
                        check = await client.request("Seq.check", {})
                        # a backend still catching up on the notifies may answer past the
                        # forwarding deadline (RPC_TIMEOUT): that is a 503, asked again
                        if "notes" not in check:
                            assert check["code"] == 503, check
                        elif len(notes_seen := check["notes"]) >= sent:
                            break
                        await trio.sleep(0.2)
                seen["notes"] = notes_seen
                seen["sent"] = sent
                seen["after"] = await burst.request("Seq.echo", {"after": 1})
                seen["connected"] = client.error is None and burst.error is None
            seen["gate"] = gate.statistics()
            gate.server.shutdown()

    run(main)
    assert seen["notes"] == list(range(1, seen["sent"] + 1)), log.read_text()  # all, in order
    assert seen["sent"] > 100
    assert seen["behind"]["code"] == 503
    assert seen["behind_while_frozen"]  # at its deadline, not once the backend ran again
    answers = seen["answers"]
    assert len(answers) == 200
    assert all(answer["code"] == 503 and frozen for answer, frozen in answers)  # each by its deadline
    assert seen["after"] == {"echo": {"after": 1}}
    assert seen["connected"]
    assert "evicted" not in log.read_text()
    assert seen["gate"].forward_errors >= 201


def test_a_notify_waiting_on_a_member_that_leaves_the_cluster_is_dropped_and_counted(tmp_path: Path) -> None:
    """The unary path: a notify's call waits for the frozen member only while it is in the
    cluster; once the master evicts it the call ends (dropped, counted, logged) and the
    session's later messages go on: a Request for the service no member hosts now is answered
    404 at once, not held behind the notify. A Request the member took and has not answered is
    answered 503 as it leaves, before its deadline (as a stream's are when it dies)."""
    gate_address, backend_address = free_address(), free_address()
    heartbeat = 0.5  # evicted after 2 s of silence
    gate = Node(
        Components(),
        ClusterConfig(
            service_address=gate_address, is_master=True, heartbeat=heartbeat, rpc_timeout=30, fast_path=False
        ),
        Config(heartbeat=0),
    )
    log = tmp_path / "backend.log"
    command = [sys.executable, "-m", "tests.cluster._seq_backend", "--listen", backend_address, "--nofast"]
    command += ["--master", gate_address, "--heartbeat", str(heartbeat), "--rpc-timeout", str(RPC_TIMEOUT)]
    seen: dict[str, Any] = {}
    processes: list[trio.Process] = []

    async def main(bridge: Bridge) -> None:
        try:
            with trio.fail_after(60):  # a wrong expectation fails, never hangs
                await scenario(bridge)
        finally:
            with trio.CancelScope(shield=True):
                for process in processes:
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                    await process.wait()

    async def scenario(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            with log.open("wb") as out:
                processes.append(await trio.lowlevel.open_process(command, cwd=ROOT, stdout=out, stderr=out))
            while "Seq" not in gate.remote_services:  # noqa: ASYNC110
                await trio.sleep(0.05)
            async with open_client("127.0.0.1", port) as client:
                assert await client.request("Seq.echo", {"warm": 1}) == {"echo": {"warm": 1}}

                async def hold() -> None:
                    seen["hold"] = await client.request("Seq.hold", {})

                nursery.start_soon(hold)
                while gate.statistics().forwarded < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)  # the member took it
                processes[0].send_signal(signal.SIGSTOP)
                await client.notify("Seq.note", {"i": 1})  # its call waits for the frozen member
                while "Seq" in gate.remote_services:  # noqa: ASYNC110
                    await trio.sleep(0.05)  # evicted
                seen["after"] = await client.request("Seq.echo", {"after": 1})
                while "hold" not in seen:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                seen["connected"] = client.error is None
            seen["gate"] = gate.statistics()
            gate.server.shutdown()

    run(main)
    assert seen["after"]["code"] == 404
    assert seen["hold"] == {"code": 503, "message": f"Seq unavailable: {backend_address} has left the cluster"}
    assert seen["connected"]
    assert seen["gate"].forward_errors == 2  # the hold answered 503, the notify dropped
