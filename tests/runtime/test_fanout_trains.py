"""Broadcasts to the same members one after another go through the fan-out as a train: each
member gets all of them before its writer runs, and its writer joins them into one write.

A burst to 1,000 real loopback clients is written once per member (one broadcast at a time, a
bucket per step, it was once per member and broadcast past the first bucket: 46,864 writes for
50,000 deliveries). The order tests check each member's Pushes against the order they were
issued, whatever mix of broadcasts to several groups, direct Pushes, Kicks, joins and leaves
came between, and with a backlog bound small enough to refuse some. No assertion on speed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime.test_fanout import Recorder, idle, members, seen
from trionano import Component, Components, Config, Group, Server, Session, TCPEndpoint, wire
from trionano._fanout import BUCKET_SIZE, MAX_BEHIND, MAX_TRAIN, train_width

MEMBERS = 1_000
BURST = 50  # broadcasts issued back to back, without a checkpoint between (a game tick's)
DEADLINE = 120.0  # seconds, for the whole scenario: a hang fails, nothing is timed


class Room(Component):
    def __init__(self) -> None:
        self.group = Group("room")

    def join(self, session: Session, msg: bytes) -> None:
        self.group.add(session)


async def receive_pushes(stream: trio.SocketStream, count: int) -> list[bytes]:
    """Read pomelo packets (type: 1 byte, length: 3 bytes) until ``count`` Data packets came;
    returns their payloads (the handshake's response is skipped)."""
    buffer = b""
    pushes: list[bytes] = []
    while len(pushes) < count:
        data = await stream.receive_some()
        assert data, "the server closed the connection"
        buffer += data
        while len(buffer) >= 4:
            size = int.from_bytes(buffer[1:4], "big")
            if len(buffer) < 4 + size:
                break
            if buffer[0] == wire.PacketType.DATA:
                pushes.append(buffer[4 : 4 + size])
            buffer = buffer[4 + size :]
    assert not buffer
    return pushes


async def test_a_burst_to_a_large_group_is_written_once_per_member() -> None:
    # members that do not read until the burst is queued (the kernel takes what is written):
    # whatever the order the writers run in, a member's packets are all queued before its
    # writer runs, so the count is exact
    room = Room()
    components = Components()
    components.register(room, name="room")
    server = Server(components, Config(heartbeat=0, rate_limit=None, max_handshaking_per_host=None))
    hello = (
        wire.encode_packet(wire.PacketType.HANDSHAKE)
        + wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
        + wire.MessageCodec().notify_packet("room.join", b"")
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(server.serve, TCPEndpoint("127.0.0.1", 0))
            clients: list[trio.SocketStream] = []
            try:
                for _ in range(MEMBERS):
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    clients.append(stream)
                    await stream.send_all(hello)
                while room.group.count() < MEMBERS:  # noqa: ASYNC110 - polling the joins
                    await trio.sleep(0.01)
                await idle()
                before = server.statistics()
                for n in range(BURST):
                    assert room.group.broadcast("onTick", {"n": n}) == MEMBERS
                await idle()  # every writer has written what it was given, and waits again
                after = server.statistics()
                assert after.pushes_out - before.pushes_out == BURST * MEMBERS
                # once per member: the first bucket's in the caller, the others' in trains
                # (one broadcast at a time, it was BUCKET_SIZE + (MEMBERS - BUCKET_SIZE) * BURST)
                assert after.writes - before.writes == MEMBERS
                expected = [room.group.sessions()[0].serializer.marshal({"n": n}) for n in range(BURST)]
                for stream in clients:  # and each client got every Push, in order
                    pushes = await receive_pushes(stream, BURST)
                    assert [wire.decode_message(push).body for push in pushes] == expected
            finally:
                for stream in clients:
                    await stream.aclose()
                server.shutdown()


async def test_a_train_visits_a_few_members_a_step_with_every_broadcast() -> None:
    n = 3 * BUCKET_SIZE + 5
    async with members(n) as (_, sessions, log):
        group = Group("big")
        for session in sessions:
            group.add(session)
        progress: list[int] = []

        async def watch() -> None:  # an unrelated task: it runs between the steps
            while len(log) < n * BURST:
                progress.append(len(log))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for i in range(BURST):
                group.broadcast(f"on{i}", {})
            assert len(log) == BUCKET_SIZE * BURST  # the callers queued the first bucket of each
            nursery.start_soon(watch)
        width = train_width(BURST)
        assert 1 < width < BUCKET_SIZE
        steps = sorted(set(progress))
        assert len(steps) >= 2, steps  # the watcher ran in between
        # every step: the train's broadcasts, in order, to the same few members
        assert all((count - BUCKET_SIZE * BURST) % (width * BURST) == 0 for count in steps if count < n * BURST)
        rest = log[BUCKET_SIZE * BURST :]
        for start in range(0, len(rest), width * BURST):
            step = rest[start : start + width * BURST]
            reached = sorted({member for member, _ in step})
            assert reached == list(range(reached[0], reached[0] + len(reached)))
            assert [what for _, what in step] == [f"on{i}" for i in range(BURST) for _ in reached]
        for session in sessions:
            assert seen(session) == [f"on{i}" for i in range(BURST)]


async def test_a_train_never_carries_a_delivery_past_a_members_own_push() -> None:
    n = 3 * BUCKET_SIZE
    async with members(n) as (_, sessions, _log):
        group = Group("big")
        for session in sessions:
            group.add(session)
        group.broadcast("onA", {})
        group.broadcast("onB", {})
        last = sessions[-1]
        last.push("onDirect", {})  # behind onB: a job of its own, between the two trains
        group.broadcast("onC", {})
        group.broadcast("onD", {})
        sessions[-2].kick("bye")  # after onD
        group.broadcast("onE", {})  # the kicked member does not get it
        await idle()
        assert seen(last) == ["onA", "onB", "onDirect", "onC", "onD", "onE"]
        assert seen(sessions[-2]) == ["onA", "onB", "onC", "onD", "kick bye"]
        for session in sessions[:-2]:
            assert seen(session) == ["onA", "onB", "onC", "onD", "onE"]


async def test_a_train_holds_at_most_max_train_broadcasts() -> None:
    n = BUCKET_SIZE + 3 * train_width(MAX_TRAIN)
    count = 2 * MAX_TRAIN + 5
    async with members(n) as (_, sessions, log):
        group = Group("big")
        for session in sessions:
            group.add(session)
        for i in range(count):
            group.broadcast(f"on{i}", {})
        await idle()
        # past the first bucket: three trains, each to every member before the next starts, a
        # step at a time: the train's broadcasts, in order, to train_width(length) members
        rest = log[BUCKET_SIZE * count :]
        first = 0
        for length in (MAX_TRAIN, MAX_TRAIN, 5):
            width = train_width(length)
            part, rest = rest[: length * (n - BUCKET_SIZE)], rest[length * (n - BUCKET_SIZE) :]
            routes = [f"on{i}" for i in range(first, first + length)]
            at = BUCKET_SIZE
            while part:
                reached = range(at, min(n, at + width))
                step, part = part[: length * len(reached)], part[length * len(reached) :]
                assert step == [(member, route) for route in routes for member in reached]
                at = reached.stop
            assert at == n
            first += length
        assert rest == []
        assert all(seen(session) == [f"on{i}" for i in range(count)] for session in sessions)


# -- order, whatever comes between ------------------------------------------------------------

GROUPS = 3  # "all" (every member), "most" (the first 3/4), "few" (the last 8): two take the fan-out
N = 2 * BUCKET_SIZE + 40


@dataclass
class Model:
    """What each member should have seen, from what was issued and what it returned."""

    groups: list[list[int]]
    expected: list[list[str]] = field(default_factory=lambda: [[] for _ in range(N)])
    kicked: set[int] = field(default_factory=set)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("burst"), st.integers(0, GROUPS - 1), st.integers(1, 6)),
        st.tuples(st.just("push"), st.integers(0, N - 1)),
        st.tuples(st.just("kick"), st.integers(0, N - 1)),
        st.tuples(st.just("close"), st.integers(0, N - 1)),
        st.tuples(st.just("join"), st.integers(0, GROUPS - 1), st.integers(0, N - 1)),
        st.tuples(st.just("leave"), st.integers(0, GROUPS - 1), st.integers(0, N - 1)),
        st.tuples(st.just("yield"), st.integers(1, 4)),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from([MAX_BEHIND, 3 * N]))
def test_each_member_gets_its_pushes_in_the_order_they_were_issued(script: list[Any], bound: int) -> None:
    async def main() -> None:
        async with members(N, Config(max_fanout_backlog=bound)) as (_, sessions, _log):
            model = Model(groups=[list(range(N)), list(range(3 * N // 4)), list(range(N - 8, N))])
            groups = [Group(f"g{g}") for g in range(GROUPS)]
            for group, joined in zip(groups, model.groups, strict=True):
                for i in joined:
                    group.add(sessions[i])
            for step, op in enumerate(script):
                kind = op[0]
                if kind == "burst":
                    _, g, times = op
                    for k in range(times):
                        route = f"b{step}.{k}"
                        if groups[g].broadcast(route, {}):  # 0: refused whole (the backlog's bound)
                            for i in model.groups[g]:
                                if i not in model.kicked:
                                    model.expected[i].append(route)
                elif kind in ("push", "kick", "close"):
                    i = op[1]
                    if i in model.kicked:
                        continue  # closed, or closing once what was before reaches it
                    if kind == "push":
                        if sessions[i].push(f"p{step}", {}):  # False: refused (the backlog's bound)
                            model.expected[i].append(f"p{step}")
                    elif kind == "kick":
                        sessions[i].kick("bye")
                        model.expected[i].append("kick bye")
                        model.kicked.add(i)
                    else:
                        sessions[i].close()
                        model.kicked.add(i)
                elif kind == "join":
                    _, g, i = op
                    if i not in model.groups[g] and i not in model.kicked:
                        groups[g].add(sessions[i])
                        model.groups[g].append(i)
                elif kind == "leave":
                    _, g, i = op
                    groups[g].leave(sessions[i])
                    if i in model.groups[g]:
                        model.groups[g].remove(i)
                else:
                    for _ in range(op[1]):
                        await trio.lowlevel.checkpoint()  # the fan-out may run a step or so
            await idle()
            for i, session in enumerate(sessions):
                assert seen(session) == model.expected[i], i
                entity = session.entity
                assert isinstance(entity, Recorder)
                assert entity.closed == (i in model.kicked)

    trio.run(main)
