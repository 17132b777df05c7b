"""Session ids unique across a cluster with no configuration (nano uses snowflake ids).

An id is ``tick << 20 | node``, always below 2**53 (JavaScript reads it exactly):

- ``node`` (20 bits) is drawn at random once per process (or fixed with ``node``);
- ``tick`` (33 bits) is a per-process logical clock in seconds since 2025-01-01 UTC: each id
  takes the next tick, ``max(last + 1, now)``, so it is a sequence and a clock at once. Under
  more than one new session a second it runs ahead of the wall clock; that costs nothing.

53 bits cannot hold snowflake's 41-bit millisecond time, 10-bit *assigned* node and 12-bit
sequence; with an unassigned node part, uniqueness rests on its random bits, so they get 20.

Collision bound: one process never repeats an id (its ticks strictly increase). Two processes
running at once can only collide if they drew the same node part: for ``k`` nodes that is at
most ``k * (k - 1) / 2 / 2**20`` (4e-5 for 10 gates, 5e-3 for 100), whatever their load. A
restarted process repeats its predecessor's ids only if it also drew its node part (2**-20)
and the predecessor's clock had run ahead of the wall clock. Ticks last until 2297 (or
8.5e9 ids in one process's life), after which the source raises.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Final

__all__ = ["EPOCH", "NODE_BITS", "TICK_BITS", "SessionIds"]

EPOCH: Final = 1_735_689_600  # 2025-01-01T00:00:00Z, in Unix seconds
NODE_BITS: Final = 20
TICK_BITS: Final = 33


class SessionIds(Iterator[int]):
    """An iterator of cluster-unique ids (see the module's docstring); one per node.
    ``clock`` (Unix seconds) is for tests."""

    def __init__(self, node: int | None = None, *, clock: Callable[[], float] = time.time) -> None:
        if node is None:
            node = secrets.randbits(NODE_BITS)
        if not 0 <= node < 1 << NODE_BITS:
            raise ValueError(f"the node part must be in [0, 2**{NODE_BITS}), not {node}")
        self.node: Final = node
        self._clock = clock
        self._tick = 0

    def __next__(self) -> int:
        tick = max(self._tick + 1, int(self._clock()) - EPOCH)
        if tick >= 1 << TICK_BITS:
            raise RuntimeError("session ids are exhausted (year 2297, or 8.5e9 ids in one process)")
        self._tick = tick
        return tick << NODE_BITS | self.node
