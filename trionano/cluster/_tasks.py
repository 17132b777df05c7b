"""The node's background tasks: each role starts its tasks here, and they all end with the
node (no fire-and-forget)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVarTuple, Unpack

import trio

__all__ = ["TIME_SLICE", "Tasks"]

#: seconds (of the clock, ``time.perf_counter``) a node's task that drains a queue of cheap
#: work (a stream's received batches, a gate's received pushes) spends at most before it lets
#: the other tasks run: one item per checkpoint would drain it at one item per scheduling
#: round, which thousands of runnable tasks (a gate's writers during a broadcast) make tens of
#: milliseconds long
TIME_SLICE: Final = 0.002

Ts = TypeVarTuple("Ts")


class Tasks:
    """Starts tasks in the node's nursery while it runs. Owned by the node, which opens the
    nursery (:meth:`open`) and closes it when it stops."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    def open(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def close(self) -> None:
        self._nursery = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def start(self, fn: Callable[[Unpack[Ts]], Awaitable[object]], *args: *Ts) -> bool:
        """Start ``fn(*args)``; False (nothing started) once the node is stopping."""
        if self._nursery is None:
            return False
        try:
            self._nursery.start_soon(fn, *args)
        except RuntimeError:  # the nursery is closing
            return False
        return True
