"""Prometheus metrics for a server (or a cluster node): ``pip install 'trionano[metrics]'``.

::

    async with trio.open_nursery() as nursery:
        metrics_port = await nursery.start(serve_metrics, server, 9100)   # GET /metrics
        await server.serve(TCPEndpoint(port=3250))
        nursery.cancel_scope.cancel()

Everything is read from the server's own counters when Prometheus scrapes (the runtime only
increments counters, and times each handler call: no metric objects on the hot path), by a
collector that belongs to one server: :func:`metrics_collector` for a registry of your own,
:func:`serve_metrics` to serve a registry of its own over HTTP. Two servers in one process
share nothing.

The metrics (counters end in ``_total``; durations are histograms in seconds):

- ``trionano_sessions_open`` (gauge): sessions now (handshake acknowledged);
  ``trionano_sessions_opened_total``, ``trionano_sessions_closed_total``;
- ``trionano_connections_open`` (gauge): connections now, those still in their handshake
  included; ``trionano_connections_handshaking`` (gauge): those still in their handshake;
  ``trionano_rate_limited_peers`` (gauge): peers whose spent rate-limit budget is remembered;
- ``trionano_connections_accepted_total``; ``trionano_connections_refused_total`` (server
  full, server busy with handshakes, or stopping); ``trionano_connections_cut_total``
  (closed without their goodbye when a graceful shutdown's ``shutdown_timeout`` passed);
- ``trionano_messages_in_total{route, type}``: Requests and Notifies received (``type``
  "request" or "notify"), counted before the body is decoded;
- ``trionano_messages_out_total{type}``: Pushes and Responses queued to clients (``type``
  "push" or "response"; error Responses included);
- ``trionano_handler_seconds{route}``: handler duration, from the call to its return, its
  answer serialized and queued; awaits included, the wait in its lane not. Buckets 100 us to
  10 s (:data:`trionano._stats.LATENCY_BOUNDS`);
- ``trionano_error_responses_total{code}``: error Responses by code (400, 404, 429, 500...);
  ``trionano_handler_errors_total``; ``trionano_protocol_errors_total`` (connections kicked
  for bytes out of protocol); ``trionano_unknown_routes_total``;
- ``trionano_dropped_messages_total{reason}``: "slow" (a client not reading, policy drop),
  "closed" (for a session closing or not yet working), "pipeline" (refused by a pipeline
  function), "rate" (over the connection's rate limit), "backlog" (a broadcast refused because
  the fan-out had ``Config.max_fanout_backlog`` deliveries waiting: one per member);
- ``trionano_kicks_total{reason}``: sessions kicked, by the server's own reasons ("slow
  consumer", "rate limit", "heartbeat timeout", "handshake timeout", "handshake evicted", "shutdown", and
  "application" for ``session.kick``);
- ``trionano_encoded_packets_total``: Data packets encoded (a broadcast once per server);
- ``trionano_outbox_messages`` (gauge): packets queued in every outbox now;
  ``trionano_outbox_max_messages`` (gauge): in the fullest one;
- ``trionano_fanout_waiting`` (gauge): deliveries of large broadcasts waiting in the server's
  fan-out (a value near ``Config.max_fanout_backlog`` means broadcasts outrun the server).

``route`` is a hosted route, ``"unknown"`` (no handler; a client's text is never a label) or, on
a cluster gate, ``"forwarded"`` (sent to another node, where its handler is timed). A cluster
node (pass the :class:`~trionano.cluster.Node` instead of its server) adds:

- ``trionano_cluster_members`` (gauge): the other nodes it knows;
- ``trionano_cluster_rpc_seconds{method, peer}``: the gRPC calls it made, by method
  ("HandleRequest", "Register", ...) and peer (the node's service address);
  ``trionano_cluster_rpc_failures_total{method, peer}``: those that failed or were cancelled;
- ``trionano_cluster_dropped_total``: messages for other gates' clients not delivered;
  ``trionano_cluster_unknown_routes_total``: client messages for services no member hosts;
- ``trionano_cluster_pushes_total{outcome}``: cluster-wide pushes (:meth:`Node.push
  <trionano.cluster.Node.push>`), by outcome, as :class:`~trionano.cluster.PushStatistics`
  counts them: ``pushes`` made here, ``queued``/``dropped``/``failed`` per other gate,
  ``received`` from other nodes, ``delivered`` to sessions here, ``refused`` as malformed,
  ``shed`` received on a stream while this gate's backlog was full;
  ``trionano_cluster_not_gates`` (gauge): nodes found to take no pushes (Go nano nodes);
  ``trionano_cluster_pushes_held`` and ``trionano_cluster_push_bytes_held`` (gauges): pushes
  held for other gates now, queued or on their way (each gate's at most ``max_pending_pushes``
  and ``max_pending_push_bytes``: a high value names a slow or stopped gate);
  ``trionano_cluster_groups`` (gauge): the node's parts of cluster-wide groups held now
  (:class:`~trionano.cluster.ClusterGroup`: they follow the groups alive, not the names used);
- ``trionano_push_api_requests_total{answer}``: requests to the HTTP push API served for the
  node, by answer: ``accepted`` (202), ``refused`` (4xx, 500), ``unreached`` (503), ``gone``
  (the client went away before its body came: not answered), ``broken`` (a connection
  Hypercorn failed on, closed).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

import h11
import trio

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import Collector
except ImportError as exc:  # the extra is optional
    raise ImportError(
        "trionano.metrics needs prometheus-client: install the extra, pip install 'trionano[metrics]'"
    ) from exc

from ._server import Server
from ._stats import LATENCY_BOUNDS, ROUTE_FORWARDED, ROUTE_UNKNOWN

if TYPE_CHECKING:
    from .cluster import Node

__all__ = ["metrics_collector", "serve_metrics"]

_LE: Final = (*(str(bound) for bound in LATENCY_BOUNDS), "+Inf")
#: Statistics attribute -> the ``reason`` label of trionano_dropped_messages_total
_DROPS: Final = (
    ("dropped_slow", "slow"),
    ("dropped_closed", "closed"),
    ("dropped_pipeline", "pipeline"),
    ("dropped_rate", "rate"),
    ("dropped_backlog", "backlog"),
)
#: how long an HTTP client may take to send a request (and an idle keep-alive may last)
_HTTP_TIMEOUT: Final = 30.0


def _buckets(counts: Sequence[int]) -> list[tuple[str, float]]:
    cumulative, total = [], 0
    for le, count in zip(_LE, counts, strict=True):
        total += count
        cumulative.append((le, float(total)))
    return cumulative


class _Collector(Collector):
    """One server's (and node's) metrics, read at each scrape."""

    def __init__(self, server: Server, node: Node | None) -> None:
        self._server = server
        self._node = node

    def describe(self) -> Iterator[Metric]:
        # the real names, so that a registry refuses a second server's collector
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        stats = self._server.statistics()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"trionano_{name}", doc, value=value)

        yield GaugeMetricFamily("trionano_sessions_open", "Sessions open now", value=stats.sessions_open)
        yield counter("sessions_opened", "Sessions opened (handshake acknowledged)", stats.sessions_opened)
        yield counter("sessions_closed", "Sessions closed", stats.sessions_closed)
        yield GaugeMetricFamily("trionano_connections_open", "Connections open now", value=stats.connections_open)
        yield GaugeMetricFamily(
            "trionano_connections_handshaking",
            "Connections still in their handshake now",
            value=stats.connections_handshaking,
        )
        yield GaugeMetricFamily(
            "trionano_rate_limited_peers",
            "Peers whose spent rate-limit budget is remembered across reconnects",
            value=stats.rate_limited_peers,
        )
        yield counter("connections_accepted", "Connections accepted", stats.connections_accepted)
        yield counter(
            "connections_refused", "Connections refused (server full or busy, or stopping)", stats.connections_refused
        )
        yield counter(
            "connections_cut", "Connections closed without their goodbye at a shutdown deadline", stats.connections_cut
        )

        messages_in = CounterMetricFamily(
            "trionano_messages_in", "Requests and Notifies received, by route", labels=["route", "type"]
        )
        latency = HistogramMetricFamily(
            "trionano_handler_seconds", "Handler call duration by route, in seconds", labels=["route"]
        )
        for route, route_stats in sorted(stats.routes.items()):
            messages_in.add_metric([route, "request"], route_stats.requests)
            messages_in.add_metric([route, "notify"], route_stats.notifies)
            if route not in (ROUTE_UNKNOWN, ROUTE_FORWARDED):
                latency.add_metric([route], _buckets(route_stats.latency_buckets), route_stats.latency_seconds)
        yield messages_in
        yield latency

        messages_out = CounterMetricFamily("trionano_messages_out", "Messages queued to clients", labels=["type"])
        messages_out.add_metric(["push"], stats.pushes_out)
        messages_out.add_metric(["response"], stats.responses_out)
        yield messages_out

        errors = CounterMetricFamily("trionano_error_responses", "Error Responses sent, by code", labels=["code"])
        for code, count in sorted(stats.error_responses.items()):
            errors.add_metric([str(code)], count)
        yield errors
        yield counter("handler_errors", "Handler calls that failed", stats.handler_errors)
        yield counter("protocol_errors", "Connections kicked for a protocol error", stats.protocol_errors)
        yield counter("unknown_routes", "Messages to routes no handler serves", stats.unknown_routes)

        dropped = CounterMetricFamily("trionano_dropped_messages", "Messages dropped, by reason", labels=["reason"])
        for attribute, reason in _DROPS:
            dropped.add_metric([reason], getattr(stats, attribute))
        yield dropped
        kicks = CounterMetricFamily("trionano_kicks", "Sessions kicked, by reason", labels=["reason"])
        for reason, count in sorted(stats.kicks.items()):
            kicks.add_metric([reason], count)
        yield kicks
        yield counter("encoded_packets", "Data packets encoded (a broadcast once per server)", stats.encoded)
        yield counter("writes", "Writes to clients' connections (a send, or a WebSocket message)", stats.writes)

        yield GaugeMetricFamily("trionano_outbox_messages", "Packets queued in all outboxes", value=stats.outbox_queued)
        yield GaugeMetricFamily("trionano_outbox_max_messages", "Packets in the fullest outbox", value=stats.outbox_max)
        yield GaugeMetricFamily(
            "trionano_fanout_waiting", "Deliveries waiting in the fan-out", value=stats.fanout_waiting
        )

        if self._node is not None:
            yield from self._collect_node(self._node)

    @staticmethod
    def _collect_node(node: Node) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "trionano_cluster_members", "Other cluster nodes known", value=len(node.membership.addresses)
        )
        latency = HistogramMetricFamily(
            "trionano_cluster_rpc_seconds", "Cluster gRPC call duration, in seconds", labels=["method", "peer"]
        )
        failures = CounterMetricFamily(
            "trionano_cluster_rpc_failures", "Cluster gRPC calls failed or cancelled", labels=["method", "peer"]
        )
        for (method, peer), rpc in sorted(node.rpc_stats.snapshot().items()):
            latency.add_metric([method, peer], _buckets(rpc.latency_buckets), rpc.latency_seconds)
            failures.add_metric([method, peer], rpc.failures)
        yield latency
        yield failures
        yield CounterMetricFamily(
            "trionano_cluster_dropped",
            "Messages for other gates' clients not delivered",
            value=node.statistics().dropped_outbound,
        )
        yield CounterMetricFamily(
            "trionano_cluster_unknown_routes",
            "Client messages for routes no member hosts",
            value=node.statistics().unknown_routes,
        )
        push = node.push_statistics()
        pushes = CounterMetricFamily("trionano_cluster_pushes", "Cluster-wide pushes, by outcome", labels=["outcome"])
        for outcome in ("pushes", "queued", "dropped", "failed", "received", "delivered", "refused", "shed"):
            pushes.add_metric([outcome], getattr(push, outcome))
        yield pushes
        api = CounterMetricFamily(
            "trionano_push_api_requests",
            "Requests to the HTTP push API, by answer (gone: the client left before its body came, not answered;"
            " broken: a connection Hypercorn failed on, closed)",
            labels=["answer"],
        )
        for answer in ("accepted", "refused", "unreached", "gone", "broken"):
            api.add_metric([answer], getattr(push, f"api_{answer}"))
        yield api
        yield GaugeMetricFamily(
            "trionano_cluster_not_gates", "Nodes found to take no cluster pushes", value=push.not_gates
        )
        yield GaugeMetricFamily(
            "trionano_cluster_pushes_held", "Cluster pushes held for other gates, not yet written", value=push.held
        )
        yield GaugeMetricFamily(
            "trionano_cluster_push_bytes_held", "Bytes of cluster pushes held for other gates", value=push.held_bytes
        )
        yield GaugeMetricFamily(
            "trionano_cluster_groups", "This node's parts of cluster-wide groups held now", value=push.groups
        )


def metrics_collector(source: Server | Node) -> Collector:
    """A collector of ``source``'s metrics (a server's; a cluster node's adds its cluster
    metrics), for a registry of your own: ``registry.register(metrics_collector(server))``.
    Reads the counters when the registry is collected; owns nothing. A registry refuses a
    second server's collector (the names are the same): give each server its own registry."""
    if isinstance(source, Server):
        return _Collector(source, None)
    return _Collector(source.server, source)


async def serve_metrics(
    source: Server | Node,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``source``'s metrics over HTTP at ``GET /metrics`` on ``host:port`` until
    cancelled; ``task_status.started`` gets the bound port (use port 0 in tests).

    The exporter has a registry of its own unless ``registry`` is given (for instance
    ``prometheus_client.REGISTRY``, to serve the process metrics and your own as well): then
    ``source``'s collector is in it while this runs. The Prometheus text format is served, or
    OpenMetrics when the scraper asks for it.

    Resource handling: one task per HTTP connection, in this task's nursery; a client has 30
    seconds to send each request. Error handling: a client's HTTP errors close its
    connection; OSError when the port cannot be bound.
    """
    own = registry is None
    if registry is None:
        registry = CollectorRegistry(auto_describe=True)
    collector = metrics_collector(source)
    registry.register(collector)
    try:
        handler = functools.partial(_serve_http, registry=registry)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, port, host=host))
            task_status.started(listeners[0].socket.getsockname()[1])
    finally:
        if not own:
            registry.unregister(collector)


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(bytes(await stream.receive_some(16384)))
    return event


def _answer(request: h11.Request, registry: CollectorRegistry) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """GET /metrics; 404 for any other path, 405 for any other method."""
    if request.method != b"GET":
        return 405, [(b"allow", b"GET"), (b"content-length", b"0")], b""
    if request.target.partition(b"?")[0] != b"/metrics":
        return 404, [(b"content-length", b"0")], b""
    accept = b",".join(value for name, value in request.headers if name == b"accept").decode("latin-1")
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry)
    return 200, [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))], body


async def _serve_http(stream: trio.abc.Stream, *, registry: CollectorRegistry) -> None:
    """One HTTP/1.1 connection, kept alive as long as the client wishes (h11 decides)."""
    conn = h11.Connection(h11.SERVER)
    async with stream:
        try:
            while True:
                request = event = None
                with trio.move_on_after(_HTTP_TIMEOUT):
                    request = event = await _next_event(conn, stream)
                    while isinstance(event, h11.Request | h11.Data):  # a request body is read, ignored
                        event = await _next_event(conn, stream)
                if not isinstance(request, h11.Request) or not isinstance(event, h11.EndOfMessage):
                    return  # the client closed, idled or dawdled
                status, headers, body = _answer(request, registry)
                events = (h11.Response(status_code=status, headers=headers), h11.Data(data=body), h11.EndOfMessage())
                await stream.send_all(b"".join(conn.send(event) or b"" for event in events))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return  # a broken client: close its connection
