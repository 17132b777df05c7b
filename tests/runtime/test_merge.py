"""The merge window (``Config.merge_window``, ``Group(merge_window=...)``) over real sockets with
trio's MockClock frozen: what the writer holds and when it writes are read from the server's
``writes`` counter and the bytes the client gets, never from timings. Time moves only when a
test jumps the clock, so a packet that arrives without a jump was not held."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from trionano import Component, Components, Config, Group, Server, Session, SlowConsumerPolicy, wire
from trionano._merge import FLUSHES_PER_STEP, TICK, VISITS_PER_STEP, MergeClock
from trionano.testing import RawConnection, open_test_server

WINDOW = 0.05


class Room(Component):
    def __init__(self, merge_window: float | None = None) -> None:
        self.group = Group("room", merge_window=merge_window)

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return msg


async def settle(predicate: Callable[[], bool] = lambda: True) -> None:
    """Let every task run until ``predicate`` holds and nothing can run (the clock frozen)."""
    for _ in range(200):
        await trio.testing.wait_all_tasks_blocked()
        if predicate():
            return
        await trio.lowlevel.checkpoint()
    raise AssertionError("the server never got there")


@asynccontextmanager
async def room_server(
    clock: trio.testing.MockClock, config: Config, room: Room
) -> AsyncIterator[tuple[Server, list[RawConnection]]]:
    components = Components()
    components.register(room, name="room")
    server = Server(components, config)
    async with open_test_server(server) as running:
        raws: list[RawConnection] = []
        async with trio.open_nursery() as nursery:
            for _ in range(2):

                async def connect(task_status: trio.TaskStatus[RawConnection]) -> None:
                    async with running.raw() as raw:
                        await raw.handshake()
                        await raw.send(raw.codec.request_packet(1, "room.join", b"{}"))
                        await raw.receive_response()
                        task_status.started(raw)
                        await trio.sleep_forever()

                raws.append(await nursery.start(connect))
            await settle(lambda: server.statistics().writes == 2 * len(raws))  # handshakes, joins
            try:
                yield server, raws
            finally:
                clock.autojump_threshold = 0  # let the shutdown's own timeouts pass
                nursery.cancel_scope.cancel()


async def pushes(raw: RawConnection, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        message = await raw.receive_message()
        assert isinstance(message, wire.Push), message
        out.append(message.route)
    return out


async def test_pushes_in_a_window_go_out_in_one_write_per_connection(mock_clock: trio.testing.MockClock) -> None:
    room = Room()
    async with room_server(mock_clock, Config(merge_window=WINDOW, heartbeat=0), room) as (server, raws):
        before = server.statistics()
        for i in range(5):
            room.group.broadcast(f"on{i}", {"i": i})
            await settle()  # each writer has run: it holds the first, the rest queue behind
        held = server.statistics()
        assert held.writes == before.writes  # nothing written yet: time has not moved
        assert held.outbox_queued == 2 * 5  # per connection: all five held for the window, off the outbox
        mock_clock.jump(WINDOW)
        await settle(lambda: server.statistics().writes == before.writes + 2)
        for raw in raws:
            assert await pushes(raw, 5) == [f"on{i}" for i in range(5)]  # in order
        assert server.statistics().encoded == before.encoded + 5  # one encoding per broadcast
        assert server.statistics().pushes_out == before.pushes_out + 10


class WriterSteps(trio.abc.Instrument):
    """Counts the steps the connections' writer tasks take (each is a wake-up)."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith("trionano writer"):
            self.steps += 1


async def test_held_pushes_do_not_wake_the_writer_until_the_window_ends(mock_clock: trio.testing.MockClock) -> None:
    room = Room()
    async with room_server(mock_clock, Config(merge_window=WINDOW, heartbeat=0), room) as (server, raws):
        before = server.statistics().writes
        writers = WriterSteps()
        trio.lowlevel.add_instrument(writers)
        try:
            for i in range(5):
                room.group.broadcast(f"on{i}", {"i": i})
                await settle()
            assert writers.steps == 0  # five Pushes each, held off the outbox: no writer woke
            mock_clock.jump(WINDOW)
            await settle(lambda: server.statistics().writes == before + 2)
            assert writers.steps <= len(raws)  # once each, for the window's one write
        finally:
            trio.lowlevel.remove_instrument(writers)
        for raw in raws:
            assert await pushes(raw, 5) == [f"on{i}" for i in range(5)]


async def test_a_window_runs_from_its_first_push(mock_clock: trio.testing.MockClock) -> None:
    room = Room()
    async with room_server(mock_clock, Config(merge_window=WINDOW, heartbeat=0), room) as (server, raws):
        before = server.statistics().writes
        room.group.broadcast("onA", {})
        await settle()
        mock_clock.jump(WINDOW * 0.6)
        await settle()
        room.group.broadcast("onB", {})  # joins the open window: it does not start a new one
        await settle()
        assert server.statistics().writes == before
        mock_clock.jump(WINDOW * 0.4)  # onA's deadline: both go, onB after 0.4 of a window
        await settle(lambda: server.statistics().writes == before + 2)
        for raw in raws:
            assert await pushes(raw, 2) == ["onA", "onB"]


@pytest.mark.parametrize("settled", [True, False], ids=["settled", "in-one-go"])
async def test_other_traffic_inside_a_window_keeps_the_order_it_was_sent_in(
    mock_clock: trio.testing.MockClock, settled: bool
) -> None:
    """Held Pushes, a direct push, another group's broadcast that may not wait, a Response and
    a Kick, interleaved on one connection: it gets them in the order they were sent, and the
    clock never moves (nothing waits past what ended the window)."""
    room = Room()
    other = Group("other", merge_window=0)
    async with room_server(mock_clock, Config(merge_window=WINDOW, heartbeat=0), room) as (server, raws):
        session = room.group.sessions()[0]
        raw = raws[0] if next(iter(server.sessions.values())) is session else raws[1]
        other.add(session)

        async def step() -> None:
            if settled:  # each writer has run (and written) before the next send
                await settle()

        room.group.broadcast("onA", {})  # held
        await step()
        session.push("onB", {})  # held behind it (the server's window)
        await step()
        other.broadcast("onC", {})  # may not wait: ends the window after A and B
        await step()
        room.group.broadcast("onD", {})
        await step()
        session.response({"r": 1}, mid=7)  # ends the window after D
        await step()
        room.group.broadcast("onE", {})
        await step()
        session.kick("bye")  # ends it after E
        packets = await raw.receive_until_closed()
        seen = []
        for packet in packets:
            if packet.type is wire.PacketType.DATA:
                message = raw.codec.decode(packet.body)
                assert isinstance(message, wire.Push | wire.Response), message
                seen.append(message.route if isinstance(message, wire.Push) else f"response {message.id}")
            else:
                seen.append(packet.type.name)
        assert seen == ["onA", "onB", "onC", "onD", "response 7", "onE", "KICK"]
        assert trio.current_time() == 0  # the clock never moved
        mock_clock.jump(WINDOW)  # the other connection held its own
        other_raw = raws[1] if raw is raws[0] else raws[0]
        assert await pushes(other_raw, 3) == ["onA", "onD", "onE"]


@pytest.mark.parametrize("policy", [SlowConsumerPolicy.KICK, SlowConsumerPolicy.DROP], ids=["kick", "drop"])
async def test_held_pushes_count_against_the_memory_bound(
    mock_clock: trio.testing.MockClock, policy: SlowConsumerPolicy
) -> None:
    room = Room()
    config = Config(
        merge_window=WINDOW, heartbeat=0, outbox_bytes=32 * 1024, max_outbox_bytes=64 * 1024, slow_consumer=policy
    )
    async with room_server(mock_clock, config, room) as (server, raws):
        before = server.statistics()
        for _ in range(80):  # 80 KB each, past the 64 KiB bound, all inside one window
            room.group.broadcast("onPad", {"pad": "x" * 1000})
        after = server.statistics()
        assert after.writes == before.writes  # nothing was written: all of it was held
        queued = after.pushes_out - before.pushes_out
        if policy is SlowConsumerPolicy.KICK:
            assert after.kicks.get("slow consumer") == 2
            assert after.dropped_slow - before.dropped_slow == queued  # what was held, dropped and counted
            await settle(lambda: server.statistics().outbox_queued == 0)
        else:
            assert after.dropped_slow - before.dropped_slow == 2 * 80 - queued  # the rest, dropped
            assert queued < 2 * 70  # held up to the bound only
            mock_clock.jump(WINDOW)
            for raw in raws:
                assert len(await pushes(raw, queued // 2)) == queued // 2
            await settle(lambda: server.statistics().outbox_queued == 0)


@pytest.mark.parametrize("window", [WINDOW, None], ids=["merging", "not-merging"])
async def test_a_broadcast_counts_a_member_still_in_its_handshake_and_reaches_the_rest(
    mock_clock: trio.testing.MockClock, window: float | None
) -> None:
    """The member after the one that encoded the broadcast takes the shared packet's fast path;
    one that has not acknowledged its handshake yet is skipped and counted there too."""
    room = Room()
    pending: list[Session] = []
    config = Config(merge_window=window, heartbeat=0, handshake_validator=lambda session, _: pending.append(session))
    components = Components()
    components.register(room, name="room")
    server = Server(components, config)
    async with open_test_server(server) as running, running.raw() as working, running.raw() as waiting:
        await working.handshake()
        await working.send(working.codec.request_packet(1, "room.join", b"{}"))
        await working.receive_response()
        await waiting.send(wire.encode_packet(wire.PacketType.HANDSHAKE, b""))  # never acknowledged
        assert (await waiting.receive_packet()).type is wire.PacketType.HANDSHAKE
        (late,) = pending[1:]
        room.group.add(late)  # joined in its handshake (a validator's doing): it may not get Data yet
        before = server.statistics()
        assert room.group.broadcast("onA", {}) == 1
        after = server.statistics()
        assert after.pushes_out - before.pushes_out == 1
        assert after.dropped_closed - before.dropped_closed == 1
        mock_clock.jump(WINDOW)
        assert await pushes(working, 1) == ["onA"]


@pytest.mark.parametrize("off", [None, 0], ids=["None", "0"])
async def test_without_a_window_each_push_is_its_own_write(
    mock_clock: trio.testing.MockClock, off: float | None
) -> None:
    room = Room()
    async with room_server(mock_clock, Config(heartbeat=0, merge_window=off), room) as (server, raws):
        before = server.statistics().writes
        for i in range(5):
            room.group.broadcast(f"on{i}", {"i": i})
            await settle()
        assert server.statistics().writes == before + 10
        for raw in raws:
            assert await pushes(raw, 5) == [f"on{i}" for i in range(5)]


async def test_a_response_ends_the_window_at_once_after_what_is_queued(mock_clock: trio.testing.MockClock) -> None:
    room = Room()
    async with room_server(mock_clock, Config(merge_window=WINDOW, heartbeat=0), room) as (server, raws):
        before = server.statistics().writes
        room.group.broadcast("onA", {})
        room.group.broadcast("onB", {})
        await settle()
        raw = raws[0]
        await raw.send(raw.codec.request_packet(2, "room.echo", b'{"x":1}'))
        # the clock never moves: the Response (and the two pushes before it) were not held
        assert await pushes(raw, 2) == ["onA", "onB"]
        response = await raw.receive_response()
        assert response.id == 2
        assert server.statistics().writes == before + 1  # the other connection still holds
        mock_clock.jump(WINDOW)
        await settle(lambda: server.statistics().writes == before + 2)
        assert await pushes(raws[1], 2) == ["onA", "onB"]


async def test_a_response_queued_first_is_not_held_by_a_push_behind_it(mock_clock: trio.testing.MockClock) -> None:
    room = Room()
    async with room_server(mock_clock, Config(merge_window=WINDOW, heartbeat=0), room) as (server, raws):
        session = next(iter(server.sessions.values()))
        raw = raws[0] if room.group.sessions()[0] is session else raws[1]
        session.response({"r": 1}, mid=9)  # a deferred answer, then a push, in one go
        session.push("onAfter", {})
        await settle(lambda: server.statistics().outbox_queued == 0)
        response = await raw.receive_response()
        assert response.id == 9
        assert await pushes(raw, 1) == ["onAfter"]


async def test_a_kick_is_not_held(mock_clock: trio.testing.MockClock) -> None:
    room = Room()
    async with room_server(mock_clock, Config(merge_window=WINDOW, heartbeat=0), room) as (_server, raws):
        room.group.broadcast("onA", {})
        await settle()
        for session in room.group.sessions():
            session.kick("bye")
        for raw in raws:
            packets = await raw.receive_until_closed()  # the clock never moved
            kinds = [packet.type for packet in packets]
            assert kinds == [wire.PacketType.DATA, wire.PacketType.KICK], packets
            assert wire.Kick.parse(packets[1].body).reason == "bye"


async def test_a_heartbeat_is_not_held(mock_clock: trio.testing.MockClock) -> None:
    room = Room()
    async with room_server(mock_clock, Config(merge_window=1.0, heartbeat=1), room) as (server, raws):
        mock_clock.jump(0.9)
        await settle()
        room.group.broadcast("onA", {})  # held until 1.9
        await settle()
        before = server.statistics().writes
        while server.statistics().writes < before + 2:  # the heartbeats fall due at 1.0 (swept every 1/8 s)
            assert trio.current_time() < 1.9
            mock_clock.jump(1 / 8)
            await settle()
        for raw in raws:
            first, second = await raw.receive_packet(), await raw.receive_packet()
            assert (first.type, second.type) == (wire.PacketType.DATA, wire.PacketType.HEARTBEAT)


async def test_a_groups_own_window_and_the_smallest_wins(mock_clock: trio.testing.MockClock) -> None:
    room = Room(merge_window=WINDOW)  # the group's broadcasts: 50 ms; the server's pushes: 1 s
    async with room_server(mock_clock, Config(merge_window=1.0, heartbeat=0), room) as (server, raws):
        before = server.statistics().writes
        for session in room.group.sessions():
            session.push("onSlow", {})  # asks for 1 s
        await settle()
        room.group.broadcast("onFast", {})  # asks for 50 ms: the earlier deadline wins
        await settle()
        mock_clock.jump(WINDOW)
        await settle(lambda: server.statistics().writes == before + 2)
        for raw in raws:
            assert await pushes(raw, 2) == ["onSlow", "onFast"]


async def test_a_group_without_a_window_on_a_merging_server_is_not_held(mock_clock: trio.testing.MockClock) -> None:
    room = Room(merge_window=0)
    async with room_server(mock_clock, Config(merge_window=1.0, heartbeat=0), room) as (_server, raws):
        room.group.broadcast("onNow", {})
        for raw in raws:
            assert await pushes(raw, 1) == ["onNow"]


async def test_a_window_on_a_server_that_does_not_merge(mock_clock: trio.testing.MockClock) -> None:
    room = Room(merge_window=WINDOW)
    async with room_server(mock_clock, Config(heartbeat=0), room) as (server, raws):
        before = server.statistics().writes
        room.group.broadcast("onA", {})
        await settle()
        room.group.broadcast("onB", {})
        await settle()
        assert server.statistics().writes == before
        mock_clock.jump(WINDOW)
        for raw in raws:
            assert await pushes(raw, 2) == ["onA", "onB"]
        assert server.statistics().writes == before + 2


async def test_a_full_writes_worth_is_not_held(mock_clock: trio.testing.MockClock) -> None:
    room = Room()
    async with room_server(mock_clock, Config(merge_window=1.0, heartbeat=0), room) as (_server, raws):
        for i in range(6):  # 6 x 60 KB: past the 256 KiB a write holds
            room.group.broadcast("onPad", {"i": i, "pad": "x" * 60_000})
            await settle()
        for raw in raws:
            assert len(await pushes(raw, 4)) == 4  # written without the clock moving
        mock_clock.jump(1.0)
        for raw in raws:
            assert len(await pushes(raw, 2)) == 2


def test_the_window_is_validated() -> None:
    for bad in (-1, 1.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="merge_window"):
            Config(merge_window=bad)
        with pytest.raises(ValueError, match="merge_window"):
            Group("g", merge_window=bad)
    assert Config(merge_window=0).merge_window == 0  # off, as None: a group's 0 means the same
    assert attrs.evolve(Config(), merge_window=0.05).merge_window == 0.05
    assert Group("g", merge_window=0).merge_window == 0


async def test_the_merge_clock_wakes_each_waiter_by_its_deadline_never_a_tick_late(
    mock_clock: trio.testing.MockClock,
) -> None:
    clock = MergeClock()
    woken: list[tuple[str, float]] = []

    class Waiter:
        def __init__(self, name: str) -> None:
            self.name = name

        def flush_due(self, now: float) -> bool:
            woken.append((self.name, trio.current_time()))
            return True

    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        clock.wake_at(0.5, Waiter("late"))
        await settle()
        clock.wake_at(0.2, Waiter("soon"))  # sooner than what the clock sleeps until
        clock.wake_at(0.2, Waiter("soon too"))
        await settle()
        assert woken == []
        for _ in range(600):
            mock_clock.jump(TICK)
            await settle()
        nursery.cancel_scope.cancel()
    assert [name for name, _ in woken] == ["soon", "soon too", "late"]
    for (_, at), deadline in zip(woken, (0.2, 0.2, 0.5), strict=True):
        assert deadline - TICK <= at <= deadline + 1e-9
    assert not clock.running


class Flushing:
    """A merge window's stand-in for the clock: logs each call (its name) and says whether it
    ended a window (``holds``)."""

    def __init__(self, log: list[object], name: object, *, holds: bool = True) -> None:
        self.log = log
        self.name = name
        self.holds = holds

    def flush_due(self, now: float) -> bool:
        self.log.append(self.name)
        return self.holds


async def run_beside(log: list[object], until: Callable[[], bool]) -> None:
    """Take a step per scheduler batch (as a bystander's request does), logging ``"|"`` each
    time, until ``until()``."""
    for _ in range(10_000):
        if until():
            return
        log.append("|")
        await trio.lowlevel.checkpoint()
    raise AssertionError("the clock never got there")


def between_steps(log: list[object]) -> list[list[object]]:
    """What ``log`` holds between the bystander's steps, empty runs left out."""
    runs: list[list[object]] = [[]]
    for entry in log:
        if entry == "|":
            runs.append([])
        else:
            runs[-1].append(entry)
    return [run for run in runs if run]


async def test_the_merge_clock_ends_due_windows_a_bounded_step_at_a_time_earliest_first(
    mock_clock: trio.testing.MockClock,
) -> None:
    clock = MergeClock()
    log: list[object] = []
    count = 5 * FLUSHES_PER_STEP + 3
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        for i in range(count):  # the odd ones are due first; ties in the order they came
            clock.wake_at(0.2 if i % 2 else 0.3, Flushing(log, i))
        await settle()
        mock_clock.jump(0.3)  # every one of them is due at once
        await run_beside(log, lambda: sum(entry != "|" for entry in log) == count)
        nursery.cancel_scope.cancel()
    runs = between_steps(log)
    assert [i for run in runs for i in run] == [*range(1, count, 2), *range(0, count, 2)]
    # a step per scheduler batch, and trio may run a batch's tasks in either order: the
    # bystander ran at least once in every two steps
    assert max(map(len, runs)) <= 2 * FLUSHES_PER_STEP
    assert len(runs) >= -(-count // (2 * FLUSHES_PER_STEP))
    assert clock.steps == -(-count // FLUSHES_PER_STEP)
    assert clock.waiting == 0


async def test_the_merge_clock_bounds_its_visits_to_windows_already_ended(mock_clock: trio.testing.MockClock) -> None:
    clock = MergeClock()
    log: list[object] = []
    ended = 3 * VISITS_PER_STEP  # deadlines of windows a Response (say) has ended since
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        for i in range(ended):
            clock.wake_at(0.1, Flushing(log, f"ended {i}", holds=False))
        clock.wake_at(0.1, Flushing(log, "holds"))
        await settle()
        mock_clock.jump(0.1)
        await run_beside(log, lambda: "holds" in log)
        nursery.cancel_scope.cancel()
    runs = between_steps(log)
    assert [entry for run in runs for entry in run] == [*(f"ended {i}" for i in range(ended)), "holds"]
    assert max(map(len, runs)) <= 2 * VISITS_PER_STEP  # as above
    assert len(runs) >= -(-(ended + 1) // (2 * VISITS_PER_STEP))
    assert clock.steps == 1  # only the step that ended a window


def test_the_merge_clock_steps_are_validated() -> None:
    for flushes, visits in ((0, 1), (2, 1)):
        with pytest.raises(ValueError, match="flushes_per_step"):
            MergeClock(flushes_per_step=flushes, visits_per_step=visits)


async def test_a_request_is_answered_while_many_windows_end_at_once(mock_clock: trio.testing.MockClock) -> None:
    """Every member's window ends at the same tick; the clock ends them a step at a time, so an
    unrelated client's Request is answered before the last of them is written (ending them all
    in one step made one scheduler batch of every member's writer, and the answer waited
    behind it). Each member still gets its Pushes in order."""
    room = Room()
    components = Components()
    components.register(room, name="room")
    server = Server(components, Config(merge_window=WINDOW, heartbeat=0))
    count = 10 * FLUSHES_PER_STEP  # ten steps of the clock
    async with open_test_server(server) as running, AsyncExitStack() as stack:
        try:
            members: list[RawConnection] = []
            for _ in range(count):
                raw = await stack.enter_async_context(running.raw())
                await raw.handshake()
                await raw.send(raw.codec.request_packet(1, "room.join", b"{}"))
                members.append(raw)
            for raw in members:
                await raw.receive_response()
            bystander = await stack.enter_async_context(running.raw())  # not a member
            await bystander.handshake()
            await settle()
            before = server.statistics()
            room.group.broadcast("on0", {"i": 0})
            room.group.broadcast("on1", {"i": 1})
            await settle(lambda: server.statistics().pushes_out == before.pushes_out + 2 * count)
            assert server.statistics().writes == before.writes  # every window holds, all due at once
            mock_clock.jump(WINDOW)
            await bystander.send(bystander.codec.request_packet(2, "room.echo", b'{"x":1}'))
            response = await bystander.receive_response()
            written = server.statistics().writes - before.writes
            assert response.id == 2
            assert written < count  # answered while windows were still held (plus its own write)
            await settle(lambda: server.statistics().writes == before.writes + count + 1)
            for raw in members:
                assert await pushes(raw, 2) == ["on0", "on1"]
        finally:
            mock_clock.autojump_threshold = 0  # let the shutdown's own timeouts pass
