"""Large broadcasts go bucket by bucket through the server's fan-out task, and each member still
gets its Pushes in the order they were issued: a second broadcast, a small group's broadcast, a
direct push, a Kick issued while a broadcast is on its way all land behind it.

Members here are sessions of a running Server (``server.make_session``, as a cluster gate makes
its stand-ins) whose entity records what it is given, so thousands of members cost no sockets;
what the fan-out does over real sockets is in test_merge.py and the benchmarks."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.apps import echo_components
from trionano import Component, Components, Config, Group, Server, Session, wire
from trionano._fanout import BUCKET_SIZE, MAX_BEHIND, SWEEP_EVERY, FanOut
from trionano._log import RateLimitedLog
from trionano._session import Broadcast
from trionano._stats import Counters
from trionano.metrics import metrics_collector

N = 5 * BUCKET_SIZE + 17


class Recorder:
    """A NetworkEntity that records the routes it is given (and kicks, closes)."""

    def __init__(self, log: list[tuple[int, str]], n: int) -> None:
        self.seen: list[str] = []
        self.closed = False
        self.log = log  # every delivery, across members, in the order they happened
        self.n = n

    @property
    def remote_address(self) -> str:
        return f"recorder#{self.n}"

    def _record(self, what: str) -> bool:
        if self.closed:
            raise trio.BrokenResourceError("closed")
        self.seen.append(what)
        self.log.append((self.n, what))
        return True

    def send_push(self, session: Session, route: str, body: bytes) -> bool:
        return self._record(route)

    def send_broadcast(self, session: Session, broadcast: Broadcast) -> bool:
        return self._record(broadcast.route)

    def send_response(self, session: Session, mid: int, body: bytes) -> bool:
        return self._record(f"response {mid}")

    def kick(self, reason: str) -> None:
        self._record(f"kick {reason}")
        self.closed = True

    def close(self) -> None:
        self.closed = True


@asynccontextmanager
async def members(
    n: int, config: Config | None = None
) -> AsyncIterator[tuple[Server, list[Session], list[tuple[int, str]]]]:
    server = Server(echo_components(), config)
    log: list[tuple[int, str]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        sessions = [server.make_session(Recorder(log, i)) for i in range(n)]
        try:
            yield server, sessions, log
        finally:
            server.shutdown()


def seen(session: Session) -> list[str]:
    entity = session.entity
    assert isinstance(entity, Recorder)
    return entity.seen


async def idle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_a_large_broadcast_goes_bucket_by_bucket_and_lets_others_run() -> None:
    async with members(N) as (_, sessions, log):
        group = Group("big")
        for session in sessions:
            group.add(session)
        progress: list[int] = []

        async def watch() -> None:  # an unrelated task: it runs between the buckets
            while len(log) < N:
                progress.append(len(log))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            assert group.broadcast("onBig", {}) == N  # queued at once, or handed over
            assert len(log) == BUCKET_SIZE  # the caller queued the first bucket only
            nursery.start_soon(watch)
        steps = sorted(set(progress))
        # the watcher ran in between: with one bucket per batch of Trio's run loop it sees at least
        # every other step, whichever order Trio picks for the two tasks in each batch (it shuffles)
        assert len([step for step in steps if BUCKET_SIZE <= step < N]) >= 2, steps
        assert all(count % BUCKET_SIZE == 0 for count in steps), steps  # whole buckets per step
        assert [what for _, what in log] == ["onBig"] * N
        assert [n for n, _ in log] == list(range(N))  # in joining order


async def test_a_second_broadcast_and_direct_pushes_wait_behind_the_first() -> None:
    async with members(N) as (_, sessions, _log):
        group = Group("big")
        small = Group("small")  # the last two members, in a small group of their own too
        for session in sessions:
            group.add(session)
        for session in sessions[-2:]:
            small.add(session)
        group.broadcast("onA", {})
        await trio.lowlevel.checkpoint()  # the fan-out may have run a bucket or so: not all of it
        sessions[0].push("onFirst", {})  # reached already: at once
        assert seen(sessions[0]) == ["onA", "onFirst"]
        sessions[-1].push("onDirect", {})  # not reached yet: behind onA
        small.broadcast("onSmall", {})
        group.broadcast("onB", {})
        sessions[-2].kick("bye")  # a Kick too waits for what is on its way
        assert seen(sessions[-1]) == []
        await idle()
        assert seen(sessions[0]) == ["onA", "onFirst", "onB"]
        for session in sessions[1:-2]:
            assert seen(session) == ["onA", "onB"]
        assert seen(sessions[-1]) == ["onA", "onDirect", "onSmall", "onB"]
        assert seen(sessions[-2]) == ["onA", "onSmall", "onB", "kick bye"]


async def test_a_broadcast_that_yielded_midway_keeps_everyones_order() -> None:
    async with members(N) as (_, sessions, log):
        group = Group("big")
        for session in sessions:
            group.add(session)
        group.broadcast("onA", {})
        while len(log) < 2 * BUCKET_SIZE:  # the fan-out has run at least one step
            await trio.lowlevel.checkpoint()
        assert len(log) < N
        for i, session in enumerate(sessions):
            session.push("onP", {"i": i})
        group.broadcast("onB", {})
        await idle()
        for session in sessions:
            assert seen(session) == ["onA", "onP", "onB"]


async def test_a_small_group_is_not_held_by_a_large_broadcast_it_does_not_share() -> None:
    async with members(N) as (_, sessions, _log):
        group = Group("big")
        for session in sessions[:-1]:
            group.add(session)
        outsider = sessions[-1]
        room = Group("room")
        room.add(outsider)
        group.broadcast("onA", {})
        assert room.broadcast("onRoom", {}) == 1
        assert seen(outsider) == ["onRoom"]  # at once: nothing on its way to it
        outsider.push("onDirect", {})
        assert seen(outsider) == ["onRoom", "onDirect"]


async def test_broadcast_and_wait_returns_once_every_member_has_it() -> None:
    async with members(N) as (_, sessions, log):
        group = Group("big", merge_window=0.05)
        for session in sessions:
            group.add(session)
        sessions[5].close()  # closed members are skipped and leave the group
        assert await group.broadcast_and_wait("onA", {}) == N - 1
        assert len(log) == N - 1
        assert group.count() == N - 1
        assert await group.broadcast_and_wait("onB", {}, lambda s: s.id % 2 == 0) == len(
            [s for s in sessions if s.id % 2 == 0 and not s.closed]
        )


async def test_the_first_bucket_raises_in_the_caller() -> None:
    async with members(N) as (_, sessions, log):
        group = Group("big")
        for session in sessions:
            group.add(session)
        with pytest.raises(Exception, match="serializ"):
            group.broadcast("onBad", {"x": {1, 2}})  # a set is not JSON
        assert log == []


class Person:
    def __init__(self, id: int) -> None:
        self.id = id


async def test_a_broadcast_past_the_backlog_is_refused_whole_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.fanout")
    counters = Counters()
    log = RateLimitedLog(logging.getLogger("test.fanout"), per_window=1, window=3600)
    fanout = FanOut(counters, log, max_behind=2 * BUCKET_SIZE)
    delivered: list[tuple[int, str]] = []
    people = [Person(i) for i in range(2 * BUCKET_SIZE)]

    def record(what: str) -> Callable[[Person], bool]:
        def deliver(member: Person) -> bool:
            delivered.append((member.id, what))
            return True

        return deliver

    async with trio.open_nursery() as nursery:
        await nursery.start(fanout.run)
        assert fanout.send(people, record("a")) == (BUCKET_SIZE, fanout._jobs[-1])
        assert fanout.send(people, record("b"))[1] is not None
        assert fanout.waiting == 2 * BUCKET_SIZE  # at the bound
        # past it: refused whole, nothing made in the caller, counted per member, logged once
        assert fanout.send(people, record("c")) == (0, None)
        assert fanout.send(people[-10:], record("d")) == (0, None)  # members behind: refused too
        assert fanout.send([Person(-1)], record("e")) == (1, None)  # nothing waiting for it: made now
        assert counters.dropped_backlog == len(people) + 10
        assert not fanout.after(people[-1], record("push"))  # a Push behind: refused as well
        assert fanout.after(people[-1], record("kick"), droppable=False)  # a Kick never is
        assert counters.dropped_backlog == len(people) + 11
        assert fanout.waiting == 2 * BUCKET_SIZE + 1
        assert delivered[2 * BUCKET_SIZE :] == [(-1, "e")]
        records = [r.getMessage() for r in caplog.records if r.name == "test.fanout"]
        assert len(records) == 1, records
        assert "refused" in records[0]
        await idle()
        assert fanout.waiting == 0
        assert [what for n, what in delivered if n == len(people) - 1] == ["a", "b", "kick"]
        for what in "ab":
            assert [n for n, seen in delivered if seen == what] == list(range(len(people)))
        # the backlog drained: the next broadcast is taken, and one larger than the bound too
        # when nothing waits (a group larger than the bound is never refused outright)
        many = [Person(i) for i in range(5 * BUCKET_SIZE)]
        assert fanout.send(many, record("f"))[1] is not None
        await idle()
        assert [n for n, seen in delivered if seen == "f"] == list(range(len(many)))
        fanout.stop()


@pytest.mark.parametrize("bound", [0, -1, 1.5, "many"])
def test_the_backlog_bound_is_validated(bound: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        Config(max_fanout_backlog=bound)  # type: ignore[arg-type]
    assert Config().max_fanout_backlog == MAX_BEHIND
    assert Config(max_fanout_backlog=1).max_fanout_backlog == 1


async def test_a_group_broadcast_refused_by_the_backlog_returns_0_everywhere() -> None:
    # a real server's fan-out with a small bound: broadcast, broadcast_and_wait and a cluster
    # push (_fan_out) all report the refusal, and the members' streams keep the same gaps
    from trionano.cluster._push import _fan_out

    config = Config(max_fanout_backlog=N - BUCKET_SIZE)  # onA takes it all
    async with members(N, config) as (server, sessions, _log):
        group = Group("big")
        for session in sessions:
            group.add(session)
        assert group.broadcast("onA", {}) == N  # N - BUCKET_SIZE wait
        assert group.broadcast("onB", {}) == 0  # past the bound: refused whole
        with pytest.raises(Exception, match="serializ"):  # refused or not, a bad value raises
            group.broadcast("onBad", {"x": {1, 2}})
        assert server.statistics().dropped_backlog == N
        assert _fan_out(sessions, "onC", b"{}") == 0
        assert sessions[-1].push("onDirect", {}) is False  # behind onA, the backlog at its bound
        stats = server.statistics()
        assert stats.dropped_backlog == 2 * N + 1
        assert stats.fanout_waiting == N - BUCKET_SIZE
        registry = CollectorRegistry(auto_describe=True)
        registry.register(metrics_collector(server))
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples
        }
        assert samples["trionano_dropped_messages_total", (("reason", "backlog"),)] == 2 * N + 1
        assert samples["trionano_fanout_waiting", ()] == N - BUCKET_SIZE
        assert await group.broadcast_and_wait("onD", {}) == 0  # refused before it waits
        assert server.statistics().dropped_backlog == 3 * N + 1
        await idle()
        assert server.statistics().fanout_waiting == 0
        assert await group.broadcast_and_wait("onE", {}) == N  # taken once the backlog drained
        for session in sessions:
            assert seen(session) == ["onA", "onE"]


async def test_a_stopped_fan_out_drops_and_counts_what_was_waiting() -> None:
    counters = Counters()
    fanout = FanOut(counters, RateLimitedLog(logging.getLogger("test")))

    class Member:
        def __init__(self, id: int) -> None:
            self.id = id

    people = [Member(i) for i in range(3 * BUCKET_SIZE)]
    async with trio.open_nursery() as nursery:
        await nursery.start(fanout.run)
        _, job = fanout.send(people, lambda m: True)
        assert job is not None
        fanout.stop()
    assert job.done.is_set()
    assert job.queued + counters.dropped_closed == 2 * BUCKET_SIZE
    assert counters.dropped_closed > 0  # stopped before it could run every step
    assert fanout.waiting == 0


async def test_drained_waits_for_what_was_handed_over_before_not_for_what_keeps_coming() -> None:
    # a stopping server waits here (for up to half its shutdown_timeout): under a steady push
    # load the fan-out is never empty, and it waited all of that time
    counters = Counters()
    fanout = FanOut(counters, RateLimitedLog(logging.getLogger("test")))

    class Member:
        def __init__(self, id: int) -> None:
            self.id = id

    people = [Member(i) for i in range(3 * BUCKET_SIZE)]

    async def keep_coming() -> None:
        while True:
            fanout.send(people, lambda m: True)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        await nursery.start(fanout.run)
        before = [fanout.send(people, lambda m: True)[1] for _ in range(3)]
        nursery.start_soon(keep_coming)
        await trio.lowlevel.checkpoint()
        with trio.fail_after(10):
            await fanout.drained()
        assert all(job is not None and job.done.is_set() for job in before)
        assert fanout.waiting > 0  # what came meanwhile: not waited for
        nursery.cancel_scope.cancel()


async def test_a_cluster_push_to_every_session_goes_through_the_fan_out() -> None:
    # the gate side of a cluster-wide push to uids or to everyone (trionano.cluster's push
    # hub): no Group, yet bucket by bucket and in order with the sessions' other Pushes
    from trionano.cluster._push import _fan_out

    async with members(N) as (_, sessions, log):
        assert _fan_out(sessions, "onAll", b"{}") == N  # queued at once, or handed over
        assert len(log) == BUCKET_SIZE  # the first bucket only, in the caller
        sessions[-1].push("onDirect", {})  # not reached yet: behind onAll
        gone = sessions[-2].entity
        assert isinstance(gone, Recorder)
        gone.closed = True  # its connection breaks before the fan-out reaches it: skipped
        await idle()
        assert [n for n, what in log if what == "onAll"] == [n for n in range(N) if n != N - 2]
        assert seen(sessions[-1]) == ["onAll", "onDirect"]
        assert _fan_out([], "onNone", b"{}") == 0


# -- the cyclic garbage collector -------------------------------------------------------------


@contextmanager
def collector(enabled: bool, thresholds: tuple[int, int, int]) -> Iterator[list[int]]:
    """The collector on or off with ``thresholds``; yields the generation of every collection
    that starts meanwhile. Restores what it changed."""
    started: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    was_enabled, was = gc.isenabled(), gc.get_threshold()
    gc.collect()
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()
    gc.callbacks.append(note)
    try:
        yield started
    finally:
        gc.callbacks.remove(note)
        gc.set_threshold(*was)
        (gc.enable if was_enabled else gc.disable)()


async def test_the_fan_out_collects_the_young_and_middle_generations_between_buckets() -> None:
    # thresholds no allocation here reaches: every collection is the fan-out's
    many = 5 * SWEEP_EVERY + BUCKET_SIZE + 17  # the fan-out visits 5 * SWEEP_EVERY + 17
    async with members(many) as (_, sessions, _log):
        group = Group("big")
        for session in sessions:
            group.add(session)
        with collector(True, (10**9, 10**9, 10**9)) as started:
            assert await group.broadcast_and_wait("onFirst", {}) == many
        # one per SWEEP_EVERY members visited, not per bucket: the young and middle
        # generations together; full collections are CPython's own
        assert started == [1] * 5, started
        with collector(False, (10**9, 10**9, 10**9)) as started:
            assert await group.broadcast_and_wait("onSecond", {}) == many
        assert started == []  # gc.disable() turns it off
        assert all(seen(session) == ["onFirst", "onSecond"] for session in sessions)


class Sink(trio.abc.Stream):
    """A client that sends ``hello`` (handshake, ack, a Notify joining the group), then only
    reads, and whatever is written to it is counted."""

    def __init__(self, hello: bytes) -> None:
        self.hello = hello
        self.written = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.hello:
            hello, self.hello = self.hello, b""
            return hello
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.written += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_parked_writer_leaves_few_objects_for_the_collector() -> None:
    # every delivery wakes the member's writer, which parks again: what a parked writer keeps
    # alive is new, and what the young and middle collections walk. The outbox is a memory
    # channel (the required shape); parked in its receive, a writer kept 9 (trio 0.35: the
    # receive's coroutine, its abort closure and cells, the wait's coroutine and trap); parked
    # in wait_task_rescheduled with the agent's own abort function, 4 (the wait's coroutine,
    # its generator, the trap and its __dict__); awaiting inside an ``except WouldBlock``
    # clause kept the WouldBlock, its tracebacks and a frame alive too (13, then 8).
    count = 300
    group = Group("room")
    components = Components()
    joined = trio.Event()

    class Room(Component):
        def join(self, session: Session, msg: bytes) -> None:
            group.add(session)
            if group.count() == count:
                joined.set()

    components.register(Room(), name="room")
    server = Server(components, Config(heartbeat=0, rate_limit=None))
    hello = (
        wire.encode_packet(wire.PacketType.HANDSHAKE)
        + wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
        + wire.MessageCodec().notify_packet("room.join", b"")
    )
    sinks = [Sink(hello) for _ in range(count)]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        for i, sink in enumerate(sinks):
            nursery.start_soon(server.serve_connection, sink, f"sink#{i}")
        with trio.fail_after(60):
            await joined.wait()
        await group.broadcast_and_wait("onWarm", {})
        await idle()
        written = [sink.written for sink in sinks]
        with collector(False, gc.get_threshold()):
            gc.freeze()  # what is alive now is not counted
            try:
                await group.broadcast_and_wait("onCounted", {})
                await idle()
                young = len(gc.get_objects(generation=0))
            finally:
                gc.unfreeze()
        assert all(sink.written > before for sink, before in zip(sinks, written, strict=True))  # every writer wrote
        assert young <= 5 * count, young / count  # 4.1 measured
        server.shutdown()
