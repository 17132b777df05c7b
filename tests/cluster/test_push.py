"""Cluster-wide groups and pushes, in this process (a logic node and two gates on the asyncio
bridge, real gRPC and TCP clients on loopback): one encode per gate, the audiences, what a push
refuses, and what a gate refuses from the wire."""

from __future__ import annotations

import functools
from contextlib import AsyncExitStack
from typing import Any

import attrs
import grpclib.client
import pytest
import trio

from trionano import Component, Components, Config, MessageTooLarge, SerializeError, Session, TCPEndpoint
from trionano.client import Client, open_client
from trionano.cluster import Audience, Bridge, ClusterConfig, Node, run
from trionano.cluster._generated.trionano import push as pushpb

from .test_call import address


@attrs.define
class Room(Component):
    """On each gate: ``room.join {"uid"}`` binds the uid and joins the cluster-wide group."""

    node: Node | None = None

    def join(self, session: Session, msg: dict[str, int]) -> dict[str, int]:
        assert self.node is not None
        session.bind(msg["uid"])
        if session not in self.node.group("room"):
            self.node.group("room").add(session)
        return {"members here": self.node.group("room").count()}


def gate(master: str, node_id: int) -> Node:
    components = Components()
    room = Room()
    components.register(room, name="room")
    node = Node(
        components,
        ClusterConfig(service_address=address(), master_address=master, node_id=node_id, heartbeat=5),
        Config(heartbeat=0),
    )
    room.node = node
    return node


async def clients(port: int, uids: list[int], stack: Any) -> list[Client]:
    joined = []
    for uid in uids:
        client = await stack.enter_async_context(open_client("127.0.0.1", port))
        await client.request("room.join", {"uid": uid})
        joined.append(client)
    return joined


def test_pushes_reach_every_gate_encoded_once_per_gate() -> None:
    master_address = address()
    logic = Node(Components(), ClusterConfig(service_address=master_address, is_master=True), Config(heartbeat=0))
    gate_a, gate_b = gate(master_address, 2), gate(master_address, 3)
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            await nursery.start(functools.partial(logic.run, bridge))
            (port_a,) = await nursery.start(functools.partial(gate_a.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            (port_b,) = await nursery.start(functools.partial(gate_b.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            on_a = await clients(port_a, [1, 2, 3], stack)
            on_b = await clients(port_b, [4, 5], stack)
            encoded = [gate_a.server.statistics().encoded, gate_b.server.statistics().encoded]

            with trio.fail_after(10):
                assert logic.push("onNews", {"n": 1}, Audience.of_group("room")) == 2
                for client in on_a + on_b:
                    assert await client.receive_push("onNews") == {"n": 1}
                seen["encodes"] = [
                    gate_a.server.statistics().encoded - encoded[0],
                    gate_b.server.statistics().encoded - encoded[1],
                ]
                # a gate pushes too: to its own members now, the other gate's through its queue
                # B itself, A, and the logic node, not heard from yet (it then answers it has no clients)
                assert gate_b.group("room").broadcast("onNews", {"n": 2}) == 3
                for client in on_a + on_b:
                    assert await client.receive_push("onNews") == {"n": 2}
                assert logic.push("onNews", {"n": 3}, Audience.of_uids([2, 5, 99])) == 2
                assert logic.push("onNews", {"n": 4}, Audience.all()) == 2
                for client in (on_a[1], on_b[1]):
                    assert await client.receive_push("onNews") == {"n": 3}
                for client in on_a + on_b:
                    assert await client.receive_push("onNews") == {"n": 4}
            # a uid shared by two sessions (one user, two devices), and a rebind (uid 5 -> 6)
            (twin,) = await clients(port_a, [2], stack)
            with trio.fail_after(10):
                await on_b[1].request("room.join", {"uid": 6})
                assert logic.push("onNews", {"n": 7}, Audience.of_uids([2, 5])) == 2
                assert logic.push("onNews", {"n": 8}, Audience.of_uids([6])) == 2
                for client in (on_a[1], twin):
                    assert await client.receive_push("onNews") == {"n": 7}
                assert await on_b[1].receive_push("onNews") == {"n": 8}
                seen["uid strays"] = [client.pending_pushes("onNews") for client in [*on_a, *on_b, twin]]

            # what a push refuses, before anything is sent
            with pytest.raises(ValueError, match="route"):
                logic.push("", {}, Audience.all())
            with pytest.raises(ValueError, match="route"):
                logic.push("r" * 256, {}, Audience.all())
            with pytest.raises(SerializeError):
                logic.push("onNews", object(), Audience.all())
            with pytest.raises(MessageTooLarge):
                logic.push("onNews", "x" * 70_000, Audience.all())
            for wrong in ({}, {"group": "room", "everyone": True}, {"uids": frozenset({0})}, {"group": ""}):
                with pytest.raises(ValueError, match=r"audience|uids|name"):
                    Audience(**wrong)
            # another node's client never joins this gate's part
            (session_on_b,) = [s for s in gate_b.server.sessions.values() if s.uid == 4]
            with pytest.raises(ValueError, match="join on their gate"):
                gate_a.group("room").add(session_on_b)

            # what a gate refuses from the wire: no audience, a bad route; the rest is delivered
            host, port = gate_b.address.split(":")

            async def deliver() -> pushpb.PushResult:
                channel = grpclib.client.Channel(host, int(port))
                try:
                    batch = pushpb.PushBatch(
                        origin="test",
                        items=[
                            pushpb.PushItem(route="onNews", data=b'{"n":5}'),
                            pushpb.PushItem(route="", data=b"{}", everyone=True),
                            pushpb.PushItem(route="onNews", data=b'{"n":6}', group="room"),
                        ],
                    )
                    return await pushpb.PushStub(channel).deliver(batch, timeout=5)
                finally:
                    channel.close()

            result = await bridge.to_asyncio(deliver)
            seen["result"] = (result.gate, result.delivered)
            for client in on_b:
                assert await client.receive_push("onNews") == {"n": 6}
            seen["stats"] = {name: node.push_statistics() for name, node in (("logic", logic), ("b", gate_b))}
            for node in (gate_a, gate_b, logic):
                node.server.shutdown()

    run(main)
    assert seen["encodes"] == [1, 1]  # one encode per gate, not per member
    assert seen["uid strays"] == [0] * 6
    assert seen["result"] == (True, 2)
    logic_stats, b_stats = seen["stats"]["logic"], seen["stats"]["b"]
    assert (logic_stats.pushes, logic_stats.queued, logic_stats.dropped, logic_stats.failed) == (5, 10, 0, 0)
    assert (b_stats.received, b_stats.refused) == (5 + 3, 2)  # from the logic node, then the raw batch
    assert b_stats.delivered == 2 + 2 + 1 + 2 + 0 + 1 + 2  # n=1, n=2 (its own), n=3, n=4, n=7, n=8, n=6
