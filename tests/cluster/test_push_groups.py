"""Cluster-wide groups are kept only while they are of use (issue 13, attack5's
group_names.py): a node's part of a group lives from its first member until its members have
all gone (or while the application holds it), ``node.group(name)`` and ``broadcast`` alone keep
nothing, and two handles of one name always share the same members. Before, every name a node
had ever used stayed registered (~355 bytes per name: 35 MB after 100,000 per-match groups),
closing it or not."""

from __future__ import annotations

import functools
import gc
import tracemalloc
from contextlib import AsyncExitStack
from typing import Any

import attrs
import pytest
import trio

from trionano import Component, Components, Config, GroupError, Session, TCPEndpoint
from trionano.client import Client, open_client
from trionano.cluster import Audience, Bridge, ClusterConfig, Node, run

from .test_call import address

NAMES = 20_000


def lone_node(components: Components | None = None) -> Node:
    return Node(
        components or Components(),
        ClusterConfig(service_address=address(), is_master=True, heartbeat=5),
        Config(heartbeat=0),
    )


def held_after(use: Any) -> int:
    """The bytes still allocated after ``use()`` (its garbage collected)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        use()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_group_names_used_and_closed_are_forgotten() -> None:
    """group_names.py: a logic node's per-match groups, each closed after use (the only way
    to end one then): 20,000 names held ~7 MB, and every name stayed registered."""
    node = lone_node()

    def per_match() -> None:
        for i in range(NAMES):
            node.group(f"match-{i}").local.close()

    held = held_after(per_match)
    assert held < 200_000, f"{held} bytes held after {NAMES} groups used and closed"
    assert node.push_statistics().groups == 0


def test_a_broadcast_to_a_group_keeps_nothing_for_its_name() -> None:
    """``node.group(name).broadcast(...)`` on a node without clients of its own (a logic node
    pushing to per-user groups) registered the name too."""
    node = lone_node()

    def per_user() -> None:
        for i in range(NAMES):
            assert node.group(f"user-{i}").broadcast("onNotice", {"n": i}) == 0  # no gate known yet
            assert node.push(route="onNotice", value={}, audience=Audience.of_group(f"user-{i}")) == 0
            assert node.group(f"user-{i}").count() == 0

    held = held_after(per_user)
    assert held < 200_000, f"{held} bytes held after {NAMES} names pushed to"
    assert node.push_statistics().groups == 0
    assert node.push_statistics().pushes == 2 * NAMES


@attrs.define
class Matches(Component):
    """``match.join {"uid", "match"}`` binds the uid and joins the cluster-wide group named;
    ``match.leave {"match"}`` leaves it."""

    node: Node | None = None

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        assert self.node is not None
        if not session.uid:
            session.bind(msg["uid"])
        group = self.node.group(msg["match"])
        group.add(session)
        return {"here": group.count()}

    def leave(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        assert self.node is not None
        group = self.node.group(msg["match"])
        group.leave(session)
        return {"here": group.count()}


def match_node() -> Node:
    components = Components()
    matches = Matches()
    components.register(matches, name="match")
    node = lone_node(components)
    matches.node = node
    return node


async def joined(stack: AsyncExitStack, port: int, uid: int, match: str) -> Client:
    client = await stack.enter_async_context(open_client("127.0.0.1", port))
    await client.request("match.join", {"uid": uid, "match": match})
    return client


def test_per_match_groups_come_and_go_while_a_long_lived_one_keeps_its_members() -> None:
    """300 matches, one after the other: a player joins, gets the match's start, and leaves
    (half by ``match.leave``, half by disconnecting: the part is then pruned later, when the
    parts have doubled). The node holds a bounded number of parts throughout, while a
    long-lived room's three members get every broadcast to it, before, during and after."""
    node = match_node()
    seen: dict[str, Any] = {"groups": []}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            (port,) = await nursery.start(functools.partial(node.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            room = [await joined(stack, port, uid, "room") for uid in (1, 2, 3)]
            with trio.fail_after(60):
                for i in range(300):
                    async with open_client("127.0.0.1", port) as player:
                        await player.request("match.join", {"uid": 100 + i, "match": f"match-{i}"})
                        assert node.group(f"match-{i}").broadcast("onStart", {"i": i}) == 1
                        assert await player.receive_push("onStart") == {"i": i}
                        if i % 2:
                            assert await player.request("match.leave", {"match": f"match-{i}"}) == {"here": 0}
                    seen["groups"].append(node.push_statistics().groups)
                    if i % 50 == 0:
                        assert node.group("room").broadcast("onRoom", {"i": i}) == 1
                        for client in room:
                            assert await client.receive_push("onRoom") == {"i": i}
                while any(session.uid >= 100 for session in node.server.sessions.values()):  # noqa: ASYNC110
                    await trio.sleep(0.01)  # the players' sessions have all closed
                seen["room count"] = node.group("room").count()
                assert node.push(route="onRoom", value={"i": "end"}, audience=Audience.of_group("room")) == 1
                for client in room:
                    assert await client.receive_push("onRoom") == {"i": "end"}
            node.server.shutdown()

    run(main)
    # the room, the match being played, and those left by a disconnect since the last prune:
    # at most 2 * (parts with members) + 64 of them (as a Group prunes its closed members)
    assert max(seen["groups"]) <= 2 * 2 + 64 + 1, seen["groups"]
    assert seen["groups"][-1] < 300 // 2
    assert seen["room count"] == 3


def test_two_handles_of_one_name_share_members_and_a_held_part_is_never_orphaned() -> None:
    """A ClusterGroup made earlier, or a ``local`` Group the application holds, is never left
    with members that pushes by name no longer reach: the part is looked up by name at each
    call, and one held stays the name's part while it is open. ``close()`` ends this node's
    part only (nano's Close: a Group taken before refuses changes); the name can be joined
    again."""
    node = match_node()
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            (port,) = await nursery.start(functools.partial(node.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            first = node.group("m")
            held = first.local  # the application keeps this node's part of "m"
            a, b = [await joined(stack, port, uid, "lobby") for uid in (7, 8)]
            session_a, session_b = (next(s for s in node.server.sessions.values() if s.uid == uid) for uid in (7, 8))
            first.add(session_a)
            first.leave(session_a)  # its last member left: no longer kept by the node, still held here
            for i in range(200):  # other names come and go meanwhile (prunes included)
                node.group(f"other-{i}").add(session_b)
                node.group(f"other-{i}").leave(session_b)
            held.add(session_a)  # joined through the Group held, not through the node
            later = node.group("m")
            seen["shared"] = (later.local is held, session_a in later, later.count(), first.count())
            later.add(session_b)
            with trio.fail_after(30):
                assert node.push(route="onM", value={"n": 1}, audience=Audience.of_group("m")) == 1
                for client in (a, b):
                    assert await client.receive_push("onM") == {"n": 1}
                seen["held count"] = held.count()

                first.close()  # this node's part ends
                first.close()  # idempotent
                seen["closed"] = (held.closed, later.count(), session_a in later)
                with pytest.raises(GroupError):
                    held.add(session_a)
                node.push(route="onM", value={"n": 2}, audience=Audience.of_group("m"))  # no member left here
                node.push(route="onMark", value={}, audience=Audience.all())  # behind it on each connection
                for client in (a, b):
                    await client.receive_push("onMark")
                seen["after close"] = (a.pending_pushes("onM"), b.pending_pushes("onM"))

                later.add(session_b)  # the name is joined again: a new part
                seen["new part"] = (later.local is not held, first.count(), session_b in first)
                node.push(route="onM", value={"n": 3}, audience=Audience.of_group("m"))
                assert await b.receive_push("onM") == {"n": 3}
                node.push(route="onMark", value={}, audience=Audience.all())
                await a.receive_push("onMark")
                seen["a after"] = a.pending_pushes("onM")
            node.server.shutdown()

    run(main)
    assert seen["shared"] == (True, True, 1, 1)
    assert seen["held count"] == 2
    assert seen["closed"] == (True, 0, False)
    assert seen["after close"] == (0, 0)
    assert seen["new part"] == (True, 1, True)
    assert seen["a after"] == 0
