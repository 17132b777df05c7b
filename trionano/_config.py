"""Server configuration: one frozen, validated value per server (nano's process globals)."""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._fanout import MAX_BEHIND
from ._pipeline import Pipeline
from ._ratelimit import DEFAULT_BURST, DEFAULT_KICK_AFTER, DEFAULT_PEERS, DEFAULT_RATE
from ._serializer import JSONSerializer, Serializer
from .wire import EMPTY_ROUTES, MAX_BODY_SIZE, MAX_HEARTBEAT, MIN_HEARTBEAT, Handshake, RouteDict, check_heartbeat

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["MAX_MERGE_WINDOW", "Config", "HandshakeValidator", "RateLimit", "SlowConsumerPolicy"]

#: The longest merge window (seconds): a window is a latency budget, and one past a second
#: would be noticed by players long before it saved anything.
MAX_MERGE_WINDOW: Final = 1.0

HandshakeValidator = Callable[["Session", Handshake], Awaitable[None] | None]


class SlowConsumerPolicy(enum.Enum):
    """What happens to a message for a session whose outbox is full. Either way the server
    never waits for that session, and the drop is counted (:meth:`~trionano.Server.statistics`) and logged."""

    DROP = "drop"  # drop the message (nano's ErrBufferExceed)
    KICK = "kick"  # kick the session with reason "slow consumer"


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value < math.inf:
        raise ValueError(f"{attribute.name} must be positive and finite, not {value!r}")


def _heartbeat(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if check_heartbeat(value) is None:
        raise ValueError(f"heartbeat must be 0 (disabled) or {MIN_HEARTBEAT}..{MAX_HEARTBEAT} seconds, not {value!r}")


def _merge_window(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not 0 <= value <= MAX_MERGE_WINDOW:
        raise ValueError(
            f"{attribute.name} must be None or 0 (off) or 0 < seconds <= {MAX_MERGE_WINDOW}, not {value!r}"
        )


def _optional_count(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not value >= 1:
        raise ValueError(f"{attribute.name} must be None or at least 1, not {value!r}")


def _precision(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.001 <= value < math.inf:
        raise ValueError("time precision can not less than a Millisecond")


@attrs.frozen(kw_only=True)
class RateLimit:
    """A per-connection limit on inbound packets (every packet counts, heartbeats too): a
    token bucket of ``burst`` packets refilled at ``rate`` per second. A packet over the limit
    is refused and counted (a Request is answered 429); a client refused more than
    ``kick_after`` times, net of a forgiveness of ``rate`` per second, is kicked with reason
    ``"rate limit"`` (see :class:`trionano._ratelimit.RateLimiter`). The defaults accept a
    login burst of 2,000 requests at once and 500 a second after that; a flood of 20,000 a
    second is kicked within about 0.2 s.

    Reconnecting does not refill a budget: a connection that went over its limit leaves its
    state to the next connection from the same peer (an IPv4 address, an IPv6 /64) until its
    buckets would have refilled (at most ``max(burst, kick_after) / rate`` seconds), for up to
    ``peers`` peers at once (0: forget at once; see :class:`trionano._ratelimit.PeerBudgets`).
    Peers that stay within their limit, and so the other users behind a NAT address, are not
    affected."""

    rate: float = attrs.field(default=DEFAULT_RATE, validator=_positive)
    burst: float = attrs.field(default=DEFAULT_BURST, validator=[_positive, attrs.validators.ge(1)])
    kick_after: float = attrs.field(default=DEFAULT_KICK_AFTER, validator=_positive)
    peers: int = attrs.field(default=DEFAULT_PEERS, validator=attrs.validators.ge(0))


@attrs.frozen(kw_only=True)
class Config:
    """How a server behaves; vary with ``attrs.evolve``. Raises ValueError (or TypeError) at
    construction for a value out of range.

    - ``heartbeat``: seconds between server heartbeats, sent on schedule to every connection;
      a client silent for :data:`~trionano.wire.TIMEOUT_INTERVALS` (2.5) intervals is kicked
      "heartbeat timeout" (checked every interval/8). 0 disables both. With
      ``pomelo_handshake`` it must be whole seconds.
    - ``handshake_timeout``: seconds a connection may take to complete its handshake (and
      acknowledge it) before it is kicked, on every transport.
    - ``max_connections``: connections served at once. A connection counts from when it is
      accepted; when the server is full, a newcomer takes the place of the oldest connection
      that has been in its handshake for a second or more (kicked "handshake evicted"), and is
      kicked "server full" only when there is none: sockets that never handshake cannot lock
      clients out (see :mod:`trionano._admission`).
    - ``max_handshaking``: connections (all peers) that have not completed their handshake; at
      the bound, a newcomer evicts the oldest of them that has been at it a second, or is
      kicked "server busy". Bounds the descriptors silent sockets can hold, whatever
      ``max_connections`` and the process's file limit.
    - ``max_handshaking_per_host``: the same bound for one peer (an IPv4 address, an IPv6
      /64); None: none. Generous by default for users behind one NAT, who handshake in one
      round trip each; behind a reverse proxy every client has the proxy's address.
    - ``rate_limit``: the per-connection :class:`RateLimit` (None: unlimited).
    - ``outbox_size``, ``outbox_bytes``: messages, or bytes, a client may leave unread before
      the ``slow_consumer`` policy applies to its Pushes; it applies only once a write has
      waited ``slow_consumer_after`` seconds for the client to read (a burst the server has
      not yet had a chance to write is never judged; under the kick policy the wait is judged
      when it has lasted that long, whether or not more is queued). Responses are never
      dropped that way.
      ``outbox_bytes`` is also the high watermark of the backpressure on a client's Requests:
      while that many bytes wait to be written to it, its connection's reader takes no new
      Request (TCP's flow control then holds the client back) and resumes below half of it.
    - ``max_pending_requests``: Requests of one connection read and not yet answered (deferred
      answers included); at the bound its reader takes no new Request until one is answered.
      With the watermark above, this bounds what a pipelining client makes the server queue
      (``outbox_bytes + max_pending_requests * max_packet_size``: 9 MiB by default), so an
      honest client that reads its answers is paced, never kicked; one that stops reading is
      reaped by the heartbeat timeout (its writer made no progress) or the memory bound.
    - ``max_outbox_bytes``: the memory bound per connection, whatever the reason: past it a
      Push meets the policy at once (the session is kicked "slow consumer", or under the
      drop policy the Push is dropped); Responses, heartbeats and Kicks still queue, up to
      ``max_pending_requests`` packets more (the answers of the Requests taken: Pushes that
      filled the outbox never cost a client its answers), past which it is kicked.
    - ``max_fanout_backlog``: deliveries (one per member) a server's fan-out may have waiting,
      the large broadcasts handed to it and not yet made (see :mod:`trionano._fanout`;
      :meth:`~trionano.Server.statistics`' ``fanout_waiting``). When broadcasts come faster
      than the server reaches their members, one that would take the backlog past this is
      refused whole (no member gets it, ``broadcast`` returns 0), counted as
      ``dropped_backlog`` and logged (rate-limited); so is a Push behind a waiting broadcast
      (``session.push`` returns False). A broadcast is always taken when nothing waits.
      Default :data:`~trionano._fanout.MAX_BEHIND` (1,000,000: 20 broadcasts to 50,000 members).
    - ``expose_errors``: send a handler's exception text to the client in its 500 Response
      (default: ``"internal error"``; the text is logged either way).
    - ``merge_window``: seconds (0 < w <= 1; None or 0: off) a connection may hold a Push to merge
      it with those that follow into one write (TCP: one ``send``; WebSocket: one message
      holding several packets, which pomelo's and trionano's JS clients decode), as
      go-push and goim batch by time; None (the default) writes at once. The window starts
      when the first Push of a write is queued, so no Push waits longer than it (but for the
      server's steps when many windows end at once: 64 per step, other requests served between); the held
      Pushes do not wake the connection's writer until the window ends; a
      Response, heartbeat or Kick ends the window at once (it is written with whatever is
      queued before it, in order). A :class:`~trionano.Group` may set its own window for its
      broadcasts. Pays off when clients get several Pushes a window: one send per window
      instead of one per Push (see bench/push.py, B5).
    - ``max_packet_size``: the largest packet body accepted or sent (nano: 64 KiB).
    - ``serializer``: values to bodies (JSON by default; see :mod:`trionano._serializer`).
    - ``routes``: the route dictionary for compression, announced in the handshake.
    - ``handshake_validator``: ``(session, handshake)``, sync or async; raise
      :class:`~trionano.HandshakeRejected` (or anything) to refuse the client.
    - ``pipeline``: inbound/outbound message functions.
    - ``pomelo_handshake``: also send pomelo's dictionary fields, for libpomelo2 clients.
    - ``timer_precision``: the scheduler's timer tick in seconds (>= 1 ms).
    - ``scheduler_backlog``: tasks queued per lane before a pushing reader waits (4,096: the
      requests a thousand readers take from one wake-up fit, no reader waits for room).
    - ``read_size``: bytes asked of the transport per read.
    - ``close_timeout``: how long a closing session may take to flush its outbox.
    - ``shutdown_timeout``: the bound of a graceful shutdown, in seconds: by then every
      connection has closed (those still open are cut: closed without their goodbye), whatever
      the number of clients or the push load; the ``shutdown`` hooks may take a second more
      (:meth:`Server.shutdown <trionano.Server.shutdown>`).
    """

    heartbeat: float = attrs.field(default=30.0, validator=_heartbeat)
    outbox_size: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    outbox_bytes: int = attrs.field(default=1 << 20, validator=attrs.validators.ge(1024))
    max_outbox_bytes: int = attrs.field(default=16 << 20, validator=attrs.validators.ge(64 * 1024))
    max_pending_requests: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    slow_consumer_after: float = attrs.field(default=1.0, validator=_positive)
    max_fanout_backlog: int = attrs.field(
        default=MAX_BEHIND, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    merge_window: float | None = attrs.field(default=None, validator=_merge_window)
    max_packet_size: int = attrs.field(
        default=MAX_BODY_SIZE, validator=[attrs.validators.ge(64), attrs.validators.le((1 << 24) - 1)]
    )
    serializer: Serializer = attrs.field(factory=JSONSerializer)
    routes: RouteDict = attrs.field(default=EMPTY_ROUTES, validator=attrs.validators.instance_of(RouteDict))
    handshake_validator: HandshakeValidator | None = None
    pipeline: Pipeline = attrs.field(factory=Pipeline)
    slow_consumer: SlowConsumerPolicy = attrs.field(
        default=SlowConsumerPolicy.DROP, validator=attrs.validators.instance_of(SlowConsumerPolicy)
    )
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    max_connections: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    max_handshaking: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    max_handshaking_per_host: int | None = attrs.field(default=128, validator=_optional_count)
    rate_limit: RateLimit | None = attrs.field(factory=RateLimit)
    expose_errors: bool = False
    pomelo_handshake: bool = False
    timer_precision: float = attrs.field(default=1.0, validator=_precision)
    scheduler_backlog: int = attrs.field(default=4096, validator=attrs.validators.ge(1))
    read_size: int = attrs.field(default=65536, validator=attrs.validators.ge(1024))
    close_timeout: float = attrs.field(default=2.0, validator=_positive)
    shutdown_timeout: float = attrs.field(default=5.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.pomelo_handshake and not float(self.heartbeat).is_integer():
            raise ValueError("libpomelo2 reads whole heartbeat seconds: use a whole heartbeat with pomelo_handshake")
