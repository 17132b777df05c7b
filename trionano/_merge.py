"""The merge windows' clock: one task per server ends the merge windows that are due (and,
under the kick policy, judges the writes that have waited ``slow_consumer_after`` on a client
that does not read: the agent's ``flush_due`` does both).

An agent holding Pushes for a merge window (``Config.merge_window``) keeps them off its outbox
and registers the window's deadline here instead of arming a cancel scope or a timer of its
own: at 1,000 connections and a 50 ms window that is 20,000 deadlines a second, and each
cancel scope that fires raises and unwinds a ``Cancelled``. This clock calls every agent due
(``flush_due``: the held Pushes go to the writer as one item), a millisecond tick at a time
(as goim's push rounds do): a window may end up to a tick early, never late but for the steps
below.

Steps: ending a window wakes that connection's writer into the next scheduler batch, as a
fan-out delivery does (:mod:`trionano._fanout`). A broadcast to 10,000 members opens 10,000
windows that come due within a few ticks, and ending them all in one step held the loop and
made one scheduler batch of 10,000 writers, which every other client's request waited behind
(an unrelated client's ping p99 was about 1 s with a 50 ms window, 0.1-0.2 s without one,
broadcasts at 2/s to 10,000 TCP members on a 2-core machine). So the clock ends
at most :data:`FLUSHES_PER_STEP` windows per step, earliest deadline first, and lets every
other task run (``trio.lowlevel.checkpoint``) before the next: a window ends late by at most
the steps ahead of it. Only the windows still open count; a deadline whose window has already
ended (a Response ended it) costs a heap pop, and at most :data:`VISITS_PER_STEP` of those are
made per step. What must not wait does not depend on the clock: a Response, heartbeat or
Kick ends its connection's window at once, in the caller. Order within a connection is the
writer's (its outbox), which the clock never reorders.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Final, Protocol

import trio

from ._fanout import BUCKET_SIZE

__all__ = ["FLUSHES_PER_STEP", "TICK", "VISITS_PER_STEP", "MergeClock", "Waiter"]

#: The clock's resolution (seconds): a window ends within a tick before its deadline.
TICK: Final = 0.001
#: Windows ended between two checkpoints of the clock: each wakes a writer into the next
#: scheduler batch, as a fan-out delivery does, so the fan-out's bucket size.
FLUSHES_PER_STEP: Final = BUCKET_SIZE
#: Deadlines taken off the heap between two checkpoints, windows already ended included.
VISITS_PER_STEP: Final = 4 * FLUSHES_PER_STEP


class Waiter(Protocol):
    """What holds a merge window (an agent)."""

    def flush_due(self, now: float) -> bool:
        """Write now if the window asked for has ended by ``now`` (and it still holds);
        returns whether it wrote (ended a window)."""


class MergeClock:
    """Owned by a server, run in its nursery (:meth:`run`); agents register their deadlines with
    :meth:`wake_at`. Never raises for a waiter. ``flushes_per_step``, ``visits_per_step``: see
    :data:`FLUSHES_PER_STEP`, :data:`VISITS_PER_STEP`."""

    def __init__(self, *, flushes_per_step: int = FLUSHES_PER_STEP, visits_per_step: int = VISITS_PER_STEP) -> None:
        if flushes_per_step < 1 or visits_per_step < flushes_per_step:
            raise ValueError("need 1 <= flushes_per_step <= visits_per_step")
        self._flushes_per_step = flushes_per_step
        self._visits_per_step = visits_per_step
        self._heap: list[tuple[float, int, Waiter]] = []
        self._order = itertools.count()  # ties: first come, first woken
        self._wake = trio.Event()
        self.running = False
        #: the steps that ended at least one window (a statistic: how the work was spread)
        self.steps = 0

    @property
    def waiting(self) -> int:
        """Deadlines registered and not yet come (windows already ended included)."""
        return len(self._heap)

    def wake_at(self, deadline: float, waiter: Waiter) -> None:
        """Call ``waiter.flush_due(now)`` once ``deadline`` has come (within a tick)."""
        heap = self._heap
        if not heap or deadline < heap[0][0]:
            self._wake.set()  # sooner than what the clock sleeps until
        heapq.heappush(heap, (deadline, next(self._order), waiter))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake the waiters as their deadlines come, a bounded step at a time (see the module
        docstring), until cancelled."""
        heap = self._heap
        flushes_per_step = self._flushes_per_step
        visits_per_step = self._visits_per_step
        self.running = True
        task_status.started()
        try:
            while True:
                self._wake = trio.Event()
                if not heap:
                    await self._wake.wait()
                    continue
                now = trio.current_time()
                if heap[0][0] > now + TICK:
                    with trio.move_on_at(math.floor(heap[0][0] / TICK) * TICK):
                        await self._wake.wait()
                    continue
                horizon = now + TICK
                flushes = flushes_per_step
                visits = visits_per_step
                while heap and heap[0][0] <= horizon:
                    _, _, waiter = heapq.heappop(heap)
                    visits -= 1
                    if waiter.flush_due(horizon):
                        flushes -= 1
                        if not flushes:
                            break
                    if not visits:
                        break
                if flushes < flushes_per_step:
                    self.steps += 1
                await trio.lowlevel.checkpoint()
        finally:
            self.running = False
            heap.clear()
