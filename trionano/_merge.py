"""The merge windows' clock: one task per server ends the merge windows that are due.

An agent holding Pushes for a merge window (``Config.merge_window``) keeps them off its outbox
and registers the window's deadline here instead of arming a cancel scope or a timer of its
own: at 1,000 connections and a 50 ms window that is 20,000 deadlines a second, and each
cancel scope that fires raises and unwinds a ``Cancelled``. This clock calls every agent due
(``flush_due``: the held Pushes go to the writer as one item), a millisecond tick at a time
(as goim's push rounds do): a window may end up to a tick early, never late.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Final, Protocol

import trio

__all__ = ["TICK", "MergeClock", "Waiter"]

#: The clock's resolution (seconds): a window ends within a tick before its deadline.
TICK: Final = 0.001


class Waiter(Protocol):
    """What holds a merge window (an agent)."""

    def flush_due(self, now: float) -> None:
        """Write now if the window asked for has ended by ``now`` (and it still holds)."""


class MergeClock:
    """Owned by a server, run in its nursery (:meth:`run`); agents register their deadlines with
    :meth:`wake_at`. Never raises for a waiter."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Waiter]] = []
        self._order = itertools.count()  # ties: first come, first woken
        self._wake = trio.Event()
        self.running = False

    def wake_at(self, deadline: float, waiter: Waiter) -> None:
        """Call ``waiter.flush_due(now)`` once ``deadline`` has come (within a tick)."""
        heap = self._heap
        if not heap or deadline < heap[0][0]:
            self._wake.set()  # sooner than what the clock sleeps until
        heapq.heappush(heap, (deadline, next(self._order), waiter))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake the waiters as their deadlines come, until cancelled."""
        heap = self._heap
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
                while heap and heap[0][0] <= horizon:
                    _, _, waiter = heapq.heappop(heap)
                    waiter.flush_due(horizon)
                await trio.lowlevel.checkpoint()
        finally:
            self.running = False
            heap.clear()
