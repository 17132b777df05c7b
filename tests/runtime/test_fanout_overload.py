"""An overloaded fan-out refuses broadcasts instead of stalling the server: real server, real
loopback clients, broadcasts issued faster than the fan-out reaches their members.

The room's flood handler broadcasts to every member back to back on a lane of its own, with only
a checkpoint between two broadcasts: each hands the fan-out more deliveries than the fan-out
makes in a step, so its backlog climbs to ``Config.max_fanout_backlog`` and stays there. The
server must go on answering a bystander (from the main lane) meanwhile, never make more than a
few buckets' worth of deliveries between two steps of an unrelated task (the old policy made every
waiting delivery in the caller at once), count and log the refused broadcasts, and every member
must get the broadcasts that were taken in order, once each, with the same gaps as every other
member. No assertion on speed: the deadlines are there so that a hang fails rather than waits."""

from __future__ import annotations

import functools
import itertools
import logging
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from trionano import Component, Components, Config, Group, Server, Session, TCPEndpoint
from trionano._fanout import BUCKET_SIZE, train_width
from trionano.client import open_client

# each broadcast hands the fan-out 336 deliveries; it makes 64 a step, or 114 (a train of the two
# broadcasts that fit under BOUND, to 57 members each: trionano._fanout.train_width)
MEMBERS = 400
BOUND = 1_000  # Config.max_fanout_backlog: what waits may not pass it
MIN_FLOOD = 300  # broadcasts the flood issues at least (enough refused to see the log rate-limited)
MAX_FLOOD = 1_000  # and at most (it stops once the bystander was answered enough, and MIN_FLOOD)
AT_BOUND_ANSWERS = 5  # bystander requests to see answered while the backlog is at its bound
DEADLINE = 60.0  # seconds, for the whole scenario: a hang fails, nothing is timed


def note(mine: list[int], body: Any) -> None:
    mine.append(body["s"])


class Room(Component):
    def __init__(self) -> None:
        self.group = Group("room")

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}


class Flood(Component):
    """On a lane of its own: broadcasts back to back until told to stop (or MAX_FLOOD)."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.returned: list[int] = []  # per broadcast, by sequence number: what broadcast() returned
        self.stop = False

    async def run(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        while not self.stop and len(self.returned) < MAX_FLOOD:
            self.returned.append(self.room.group.broadcast("onSeq", {"s": len(self.returned)}))
            await trio.lowlevel.checkpoint()  # only this: faster than the fan-out's steps
        return {"broadcasts": len(self.returned)}


class Bystander(Component):
    """An unrelated request: answered from the main lane; notes the backlog it was served at."""

    def __init__(self) -> None:
        self.waiting: list[int] = []  # fanout_waiting when each request was handled

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.waiting.append(self.server.statistics().fanout_waiting)
        return msg


async def test_an_overloaded_fan_out_refuses_broadcasts_and_never_stalls_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trionano.fanout")
    room, bystander = Room(), Bystander()
    flood = Flood(room)
    components = Components()
    components.register(room, name="room")
    components.register(flood, name="flood", lane="flood")
    components.register(bystander, name="by")
    # outboxes that never drop: every gap a member sees is a refused broadcast
    config = Config(max_fanout_backlog=BOUND, heartbeat=0, outbox_size=1 << 16, max_outbox_bytes=64 << 20)
    server = Server(components, config)
    got: list[list[int]] = [[] for _ in range(MEMBERS)]
    most_per_step = 0  # the most Pushes queued between two steps of an unrelated task
    at_bound = 0  # bystander answers served while the backlog was at its bound
    started = trio.current_time()

    async def watch(done: trio.Event) -> None:
        nonlocal most_per_step
        last = server.statistics().pushes_out
        while not done.is_set():
            await trio.lowlevel.checkpoint()
            now = server.statistics().pushes_out
            most_per_step = max(most_per_step, now - last)
            last = now

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(server.serve, TCPEndpoint("127.0.0.1", 0))
            async with AsyncExitStack() as stack:
                for i in range(MEMBERS):
                    client = await stack.enter_async_context(open_client("127.0.0.1", port))
                    client.on("onSeq", functools.partial(note, got[i]))
                    await client.request("room.join", {})
                driver = await stack.enter_async_context(open_client("127.0.0.1", port))
                asker = await stack.enter_async_context(open_client("127.0.0.1", port))
                assert room.group.count() == MEMBERS
                done = trio.Event()
                async with trio.open_nursery() as running:
                    running.start_soon(watch, done)

                    async def ask() -> None:
                        nonlocal at_bound
                        for n in itertools.count():
                            answer = await asker.request("by.echo", {"n": n}, timeout=10)
                            assert answer == {"n": n}
                            # served while the next broadcast would be refused: the backlog at its bound
                            if bystander.waiting[-1] + (MEMBERS - BUCKET_SIZE) > BOUND:
                                at_bound += 1
                            if done.is_set() or (at_bound >= AT_BOUND_ANSWERS and len(flood.returned) >= MIN_FLOOD):
                                flood.stop = True
                                return

                    running.start_soon(ask)
                    result = await driver.request("flood.run", {}, timeout=DEADLINE)
                    flood.stop = True
                    done.set()
                assert result == {"broadcasts": len(flood.returned)}
                # the backlog drains to nothing, and every member gets what was taken
                while server.statistics().fanout_waiting:  # noqa: ASYNC110 - polling a statistic
                    await trio.sleep(0.01)
                taken = [seq for seq, count in enumerate(flood.returned) if count]
                refused = [seq for seq, count in enumerate(flood.returned) if not count]
                while any(len(mine) < len(taken) for mine in got):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                stats = server.statistics()
            server.shutdown()

    # never a catch-up: between two steps of the watcher, Trio ran each other task at most twice
    # (the flood queues at most a bucket in its caller, the fan-out a bucket a step, or a train's
    # range: the broadcasts waiting, at most BOUND // (MEMBERS - BUCKET_SIZE), each to a few
    # members); the old policy made every delivery waiting (up to BOUND) in the caller at once
    most_step = max(jobs * train_width(jobs) for jobs in range(1, BOUND // (MEMBERS - BUCKET_SIZE) + 1))
    assert most_step < (MEMBERS - BUCKET_SIZE) // 2  # the flood outruns the fan-out
    assert most_per_step <= 2 * (most_step + BUCKET_SIZE), (most_per_step, most_step)
    assert at_bound >= AT_BOUND_ANSWERS, (at_bound, bystander.waiting[-10:])  # answered at the bound
    assert refused, "the flood never reached the bound"
    assert all(count == MEMBERS for count in flood.returned if count)  # taken whole, or refused whole
    for mine in got:  # in order, once each, the same gaps for everyone: exactly the refused ones
        assert mine == taken
    assert stats.dropped_backlog == len(refused) * MEMBERS
    assert (stats.dropped_slow, stats.dropped_closed, stats.fanout_waiting) == (0, 0, 0)
    # logged, rate-limited: at most 10 records per 10 s window (the server's RateLimitedLog)
    records = [r for r in caplog.records if r.name == "trionano.fanout" and "refused" in r.getMessage()]
    windows = 1 + int((trio.current_time() - started) // 10)
    assert 1 <= len(records) <= 10 * windows < len(refused), (len(records), len(refused))
