"""A member's keepalive (trionano.cluster._keepalive), on real grpclib in one process: the end
of its stream to the master makes it heartbeat the master again at once and with a bounded
backoff while it is away, so a restarted master learns it long before its next keepalive; a
master without the stream service (as a Go nano master) gets nano's keepalive only."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import grpclib.client
import pytest
import trio

from trionano import Components, Config
from trionano.cluster import Bridge, ClusterConfig, Node, run
from trionano.cluster._generated import clusterpb as pb
from trionano.cluster._keepalive import Backoff
from trionano.cluster._peers import split_address

from ._harness import free_address

KEEPALIVE = 300.0  # never within the tests' deadlines: only the stream's end can bring a member back


def calls(node: Node, method: str) -> tuple[int, int]:
    """(calls, failures) of ``method`` made by ``node``."""
    stats = [s for (name, _), s in node.rpc_stats.snapshot().items() if name == method]
    return sum(s.calls for s in stats), sum(s.failures for s in stats)


async def until(predicate: Callable[[], bool], seconds: float = 30) -> None:
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


def master_node(address: str, *, fast_path: bool = True) -> Node:
    config = ClusterConfig(service_address=address, is_master=True, heartbeat=KEEPALIVE, fast_path=fast_path)
    return Node(Components(), config, Config(heartbeat=0))


def member_node(master: str, *, heartbeat: float = KEEPALIVE) -> Node:
    config = ClusterConfig(service_address=free_address(), master_address=master, heartbeat=heartbeat)
    return Node(Components(), config, Config(heartbeat=0))


def test_backoff_doubles_to_its_bound_with_jitter_and_starts_over_on_reset() -> None:
    backoff = Backoff(0.05, 1.0)
    pauses = [backoff.next() for _ in range(8)]
    steps = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for pause, step in zip(pauses, steps, strict=True):
        assert step / 2 <= pause <= step
    backoff.reset()
    assert backoff.next() <= 0.05
    with pytest.raises(ValueError, match="0 < first <= longest"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="0 < first <= longest"):
        Backoff(2, 1)


def test_a_restarted_master_learns_a_member_from_the_end_of_its_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trionano.cluster")
    address = free_address()
    first, again = master_node(address), master_node(address)
    member = member_node(address)
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as masters:
                await masters.start(functools.partial(first.run, bridge))
                await nursery.start(functools.partial(member.run, bridge))
                assert member.address in first.membership
                await until(lambda: "stream from " + member.address in caplog.text)  # the member watches
                first.server.shutdown()  # the master goes away: the stream ends
            await until(lambda: calls(member, "Heartbeat")[1] >= 1)  # the member noticed, tries it
            away = trio.current_time()
            await trio.sleep(3)  # the master stays away for a while
            seen["tries while away"] = calls(member, "Heartbeat")[0]
            seen["away"] = trio.current_time() - away
            await nursery.start(functools.partial(again.run, bridge))
            await until(lambda: member.address in again.membership)  # the new master learnt it
            seen["services"] = again.remote_services
            await until(lambda: "heartbeat to the master answered again" in caplog.text)
            again.server.shutdown()
            member.server.shutdown()

    run(main)
    assert seen["services"] == []  # the member hosts nothing; it is listed all the same
    assert "the stream to the master " + address + " ended" in caplog.text
    assert "re-appeared through its heartbeat" in caplog.text  # the new master's side
    # a backoff, never a busy loop: pauses doubling from 25-50 ms to 0.5-1 s
    assert seen["tries while away"] <= 8 + 2 * seen["away"]


def test_a_member_the_master_dropped_while_alive_comes_back_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """The master drops a member that is still running (here an Unregister for it from
    outside; an eviction does the same): it ends the stream to it, the member heartbeats at
    once, and the master, which does not know it any more, takes it back."""
    caplog.set_level(logging.INFO, logger="trionano.cluster")
    address = free_address()
    master = master_node(address)
    member = member_node(address)

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(master.run, bridge))
            await nursery.start(functools.partial(member.run, bridge))
            await until(lambda: "stream from " + member.address in caplog.text)
            host, port = split_address(address)
            channel = grpclib.client.Channel(host, port)
            request = pb.UnregisterRequest(service_addr=member.address)
            await bridge.to_asyncio(lambda: pb.MasterStub(channel).unregister(request, timeout=10))
            channel.close()
            assert member.address not in master.membership
            await until(lambda: member.address in master.membership)
            member.server.shutdown()
            master.server.shutdown()

    run(main)
    assert f"member {member.address} unregistered" in caplog.text
    assert f"member {member.address} re-appeared through its heartbeat" in caplog.text


def test_a_member_of_a_master_without_streams_keeps_nanos_keepalive(caplog: pytest.LogCaptureFixture) -> None:
    """A master that answers the stream UNIMPLEMENTED (a Go nano master; here ``fast_path``
    off) is asked once; the member heartbeats it every interval and calls nothing else."""
    caplog.set_level(logging.INFO, logger="trionano.cluster")
    address = free_address()
    master = master_node(address, fast_path=False)
    member = member_node(address, heartbeat=0.2)

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(master.run, bridge))
            await nursery.start(functools.partial(member.run, bridge))
            await until(lambda: calls(member, "Heartbeat")[0] >= 5)
            member.server.shutdown()
            master.server.shutdown()

    run(main)
    assert caplog.text.count(f"{address} has no stream service") == 1
    assert calls(member, "Heartbeat")[1] == 0
    assert {name for name, _ in member.rpc_stats.snapshot()} == {"Register", "Heartbeat", "Unregister"}
    assert "ended: heartbeating it" not in caplog.text
