"""A server's counters: mutated in place by the runtime, read as an immutable snapshot.

:class:`Counters` is owned by one server and handed to the parts that count (router, agents);
users read :meth:`trionano.Server.statistics`, a frozen :class:`Statistics`, as Trio's
``MemoryChannelStatistics`` is read. Durations are kept as fixed-bucket histograms
(:class:`Timing`): one list increment and one float addition per observation.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

import attrs

__all__ = [
    "LATENCY_BOUNDS",
    "ROUTE_FORWARDED",
    "ROUTE_UNKNOWN",
    "Counters",
    "RouteCounters",
    "RouteStatistics",
    "RpcCounters",
    "RpcStatistics",
    "Statistics",
    "Timing",
]

#: The upper bounds (seconds) of the duration buckets; a last bucket takes what is above them.
LATENCY_BOUNDS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: The route messages for routes no handler serves are counted under (never the client's text).
ROUTE_UNKNOWN: Final = "unknown"
#: The route a cluster gate counts the messages it forwards under.
ROUTE_FORWARDED: Final = "forwarded"


class Timing:
    """Durations in fixed buckets: ``buckets[i]`` counts those <= ``LATENCY_BOUNDS[i]`` (and
    above the bound before); the last, those above every bound. ``seconds`` is their sum."""

    __slots__ = ("buckets", "seconds")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.seconds += seconds


class RouteCounters(Timing):
    """One route's messages in and its handler's durations (one per route; not for users)."""

    __slots__ = ("notifies", "requests")

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.notifies = 0


@attrs.frozen(kw_only=True)
class RouteStatistics:
    """One route's counts: ``requests`` and ``notifies`` received; its handler's durations
    (from the call to its return, the answer serialized and queued; awaits included; the wait
    in its lane not) as ``latency_buckets`` (non-cumulative counts over
    :data:`LATENCY_BOUNDS`, then one for longer) and their sum ``latency_seconds``."""

    requests: int
    notifies: int
    latency_buckets: tuple[int, ...]
    latency_seconds: float

    @property
    def handled(self) -> int:
        """Handler calls timed."""
        return sum(self.latency_buckets)


@attrs.frozen(kw_only=True)
class RpcStatistics:
    """One cluster RPC method to one peer: ``calls`` finished, ``failures`` among them (an
    error or a cancellation), their durations as in :class:`RouteStatistics`."""

    calls: int
    failures: int
    latency_buckets: tuple[int, ...]
    latency_seconds: float


class _Rpc(Timing):
    __slots__ = ("failures",)

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0


class RpcCounters:
    """A cluster node's outgoing RPCs, by (method, peer address) (one per node)."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], _Rpc] = {}

    def observe(self, method: str, peer: str, seconds: float, *, failed: bool) -> None:
        """Count one finished call of ``method`` to ``peer`` that took ``seconds``."""
        rpc = self._calls.get((method, peer))
        if rpc is None:
            rpc = self._calls[method, peer] = _Rpc()
        rpc.observe(seconds)
        rpc.failures += failed

    def snapshot(self) -> Mapping[tuple[str, str], RpcStatistics]:
        """Every (method, peer) called so far."""
        return MappingProxyType(
            {
                key: RpcStatistics(
                    calls=sum(rpc.buckets),
                    failures=rpc.failures,
                    latency_buckets=tuple(rpc.buckets),
                    latency_seconds=rpc.seconds,
                )
                for key, rpc in self._calls.items()
            }
        )


@attrs.frozen(kw_only=True)
class Statistics:
    """One server's counters at one moment. Every count is since the server was built.

    - ``connections_accepted``, ``connections_refused`` (over ``max_connections``);
    - ``connections_cut``: connections a graceful shutdown closed without their goodbye
      (their Kick not written by ``shutdown_timeout``: the client does not read; or their
      WebSocket close handshake not answered in time);
    - ``connections_open`` (now): connections accepted and not yet closed, sessions and
      connections still in their handshake alike; ``connections_handshaking`` (now): those
      still in their handshake (what ``max_handshaking`` bounds);
    - ``rate_limited_peers`` (now): peers whose spent rate-limit budget the server remembers
      across reconnects (each forgotten once its budget would be full again;
      ``RateLimit.peers`` at most);
    - ``sessions_open`` (now), ``sessions_opened`` (handshake acked), ``sessions_closed``;
    - ``encoded``: Data packets encoded (a broadcast counts one per server);
    - ``dropped_slow``: messages dropped because a client did not read its outbox;
    - ``dropped_closed``: messages for sessions already closing or not yet working;
    - ``dropped_pipeline``: messages a pipeline function refused;
    - ``dropped_rate``: messages refused by the per-connection rate limit;
    - ``dropped_backlog``: deliveries of broadcasts (and Pushes behind them) refused because the
      server's fan-out had ``Config.max_fanout_backlog`` deliveries waiting (one per member);
    - ``kicks``: sessions kicked, by reason (``"slow consumer"``, ``"rate limit"``, ...);
    - ``protocol_errors``, ``handler_errors``, ``unknown_routes``;
    - ``error_responses``: error Responses sent, by code (400, 404, 413, 429, 500, ...);
    - ``pushes_out``, ``responses_out``: Pushes and Responses queued to clients;
    - ``writes``: writes to clients' connections, each the packets joined into one ``send``
      (or one WebSocket message); what ``Config.merge_window`` saves;
    - ``outbox_queued`` (now): packets waiting in every client's outbox; ``outbox_max`` (now):
      the most in one outbox;
    - ``fanout_waiting`` (now): deliveries of large broadcasts handed to the fan-out and not yet
      made (at most ``Config.max_fanout_backlog`` plus one broadcast);
    - ``routes``: per route, messages in and handler durations (:class:`RouteStatistics`):
      every hosted route, ``"unknown"`` for messages to routes nobody serves, and on a cluster
      gate ``"forwarded"`` for those sent to other nodes.
    """

    connections_accepted: int
    connections_refused: int
    connections_cut: int
    connections_open: int
    connections_handshaking: int
    rate_limited_peers: int
    sessions_open: int
    sessions_opened: int
    sessions_closed: int
    encoded: int
    dropped_slow: int
    dropped_closed: int
    dropped_pipeline: int
    dropped_rate: int
    dropped_backlog: int
    protocol_errors: int
    handler_errors: int
    unknown_routes: int
    kicks: Mapping[str, int]
    error_responses: Mapping[int, int]
    pushes_out: int
    responses_out: int
    writes: int
    outbox_queued: int
    outbox_max: int
    fanout_waiting: int
    routes: Mapping[str, RouteStatistics]

    @property
    def slow_kicks(self) -> int:
        """Sessions kicked as slow consumers."""
        return self.kicks.get("slow consumer", 0)


class Counters:
    """The mutable counts behind :class:`Statistics` (one per server; not for users)."""

    __slots__ = (
        "connections_accepted",
        "connections_cut",
        "connections_refused",
        "dropped_backlog",
        "dropped_closed",
        "dropped_pipeline",
        "dropped_rate",
        "dropped_slow",
        "encoded",
        "error_responses",
        "handler_errors",
        "kicks",
        "protocol_errors",
        "pushes_out",
        "responses_out",
        "routes",
        "sessions_closed",
        "sessions_opened",
        "unknown_routes",
        "writes",
    )

    def __init__(self) -> None:
        self.connections_accepted = 0
        self.connections_refused = 0
        self.connections_cut = 0
        self.sessions_opened = 0
        self.sessions_closed = 0
        self.encoded = 0
        self.dropped_slow = 0
        self.dropped_closed = 0
        self.dropped_pipeline = 0
        self.dropped_rate = 0
        self.dropped_backlog = 0
        self.protocol_errors = 0
        self.handler_errors = 0
        self.unknown_routes = 0
        self.kicks: Final[dict[str, int]] = {}
        self.error_responses: Final[dict[int, int]] = {}
        self.pushes_out = 0
        self.responses_out = 0
        self.writes = 0
        self.routes: Final[dict[str, RouteCounters]] = {}

    def route(self, route: str) -> RouteCounters:
        """The counters of ``route`` (a hosted route, or one of the fixed names), made once."""
        counters = self.routes.get(route)
        if counters is None:
            counters = self.routes[route] = RouteCounters()
        return counters

    def kicked(self, reason: str) -> None:
        """Count a kick; ``reason`` is one of the server's own fixed reasons."""
        self.kicks[reason] = self.kicks.get(reason, 0) + 1

    def answered_error(self, code: int) -> None:
        self.error_responses[code] = self.error_responses.get(code, 0) + 1

    def snapshot(
        self,
        sessions_open: int,
        outbox_depths: Iterable[int] = (),
        *,
        connections_handshaking: int = 0,
        rate_limited_peers: int = 0,
        fanout_waiting: int = 0,
    ) -> Statistics:
        """The counts now; ``outbox_depths``: one per open connection (packets queued)."""
        depths = list(outbox_depths)
        return Statistics(
            connections_accepted=self.connections_accepted,
            connections_refused=self.connections_refused,
            connections_cut=self.connections_cut,
            connections_open=len(depths),
            connections_handshaking=connections_handshaking,
            rate_limited_peers=rate_limited_peers,
            sessions_open=sessions_open,
            sessions_opened=self.sessions_opened,
            sessions_closed=self.sessions_closed,
            encoded=self.encoded,
            dropped_slow=self.dropped_slow,
            dropped_closed=self.dropped_closed,
            dropped_pipeline=self.dropped_pipeline,
            dropped_rate=self.dropped_rate,
            dropped_backlog=self.dropped_backlog,
            protocol_errors=self.protocol_errors,
            handler_errors=self.handler_errors,
            unknown_routes=self.unknown_routes,
            kicks=MappingProxyType(dict(self.kicks)),
            error_responses=MappingProxyType(dict(self.error_responses)),
            pushes_out=self.pushes_out,
            responses_out=self.responses_out,
            writes=self.writes,
            outbox_queued=sum(depths),
            outbox_max=max(depths, default=0),
            fanout_waiting=fanout_waiting,
            routes=MappingProxyType(
                {
                    route: RouteStatistics(
                        requests=counters.requests,
                        notifies=counters.notifies,
                        latency_buckets=tuple(counters.buckets),
                        latency_seconds=counters.seconds,
                    )
                    for route, counters in self.routes.items()
                }
            ),
        )
