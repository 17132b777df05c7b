"""A server's counters: mutated in place by the runtime, read as an immutable snapshot.

:class:`Counters` is owned by one server and handed to the parts that count (router, agents);
users read :meth:`trionano.Server.statistics`, a frozen :class:`Statistics`, as Trio's
``MemoryChannelStatistics`` is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

__all__ = ["Counters", "Statistics"]


@attrs.frozen(kw_only=True)
class Statistics:
    """One server's counters at one moment. Every count is since the server was built.

    - ``connections_accepted``, ``connections_refused`` (over ``max_connections``);
    - ``sessions_open`` (now), ``sessions_opened`` (handshake acked), ``sessions_closed``;
    - ``encoded``: Data packets encoded (a broadcast counts one per server);
    - ``dropped_slow``: messages dropped because a client did not read its outbox;
    - ``dropped_closed``: messages for sessions already closing or not yet working;
    - ``dropped_pipeline``: messages a pipeline function refused;
    - ``dropped_rate``: messages refused by the per-connection rate limit;
    - ``kicks``: sessions kicked, by reason (``"slow consumer"``, ``"rate limit"``, ...);
    - ``protocol_errors``, ``handler_errors``, ``unknown_routes``;
    - ``error_responses``: error Responses sent, by code (400, 404, 413, 429, 500, ...).
    """

    connections_accepted: int
    connections_refused: int
    sessions_open: int
    sessions_opened: int
    sessions_closed: int
    encoded: int
    dropped_slow: int
    dropped_closed: int
    dropped_pipeline: int
    dropped_rate: int
    protocol_errors: int
    handler_errors: int
    unknown_routes: int
    kicks: Mapping[str, int]
    error_responses: Mapping[int, int]

    @property
    def slow_kicks(self) -> int:
        """Sessions kicked as slow consumers."""
        return self.kicks.get("slow consumer", 0)


class Counters:
    """The mutable counts behind :class:`Statistics` (one per server; not for users)."""

    __slots__ = (
        "connections_accepted",
        "connections_refused",
        "dropped_closed",
        "dropped_pipeline",
        "dropped_rate",
        "dropped_slow",
        "encoded",
        "error_responses",
        "handler_errors",
        "kicks",
        "protocol_errors",
        "sessions_closed",
        "sessions_opened",
        "unknown_routes",
    )

    def __init__(self) -> None:
        self.connections_accepted = 0
        self.connections_refused = 0
        self.sessions_opened = 0
        self.sessions_closed = 0
        self.encoded = 0
        self.dropped_slow = 0
        self.dropped_closed = 0
        self.dropped_pipeline = 0
        self.dropped_rate = 0
        self.protocol_errors = 0
        self.handler_errors = 0
        self.unknown_routes = 0
        self.kicks: Final[dict[str, int]] = {}
        self.error_responses: Final[dict[int, int]] = {}

    def kicked(self, reason: str) -> None:
        """Count a kick; ``reason`` is one of the server's own fixed reasons."""
        self.kicks[reason] = self.kicks.get(reason, 0) + 1

    def answered_error(self, code: int) -> None:
        self.error_responses[code] = self.error_responses.get(code, 0) + 1

    def snapshot(self, sessions_open: int) -> Statistics:
        return Statistics(
            connections_accepted=self.connections_accepted,
            connections_refused=self.connections_refused,
            sessions_open=sessions_open,
            sessions_opened=self.sessions_opened,
            sessions_closed=self.sessions_closed,
            encoded=self.encoded,
            dropped_slow=self.dropped_slow,
            dropped_closed=self.dropped_closed,
            dropped_pipeline=self.dropped_pipeline,
            dropped_rate=self.dropped_rate,
            protocol_errors=self.protocol_errors,
            handler_errors=self.handler_errors,
            unknown_routes=self.unknown_routes,
            kicks=MappingProxyType(dict(self.kicks)),
            error_responses=MappingProxyType(dict(self.error_responses)),
        )
