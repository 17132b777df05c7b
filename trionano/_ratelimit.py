"""Per-connection rate limiting: a token bucket, and the policy that turns a persistent flood into a kick.

Pure and synchronous: no trio, no clock of its own. Every call takes ``now``, a time in seconds from any monotonic
clock (``trio.current_time()``, ``time.monotonic()``), so the same objects run under ``trio.testing.MockClock`` and in
plain unit tests. Neither class is thread-safe: each is owned by one connection and called from its reader task.

The defaults (:data:`DEFAULT_RATE`, :data:`DEFAULT_BURST`, :data:`DEFAULT_KICK_AFTER`, also
:class:`trionano.RateLimit`'s) are generous on purpose: a game client sends a few messages a second, and a login
that writes 2,000 requests at once is accepted in full; a client that keeps sending over twice the rate is kicked
(a 20,000 msgs/s flood within about 0.2 s).
"""

from __future__ import annotations

import collections
import enum
import math
from typing import Final

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_KICK_AFTER",
    "DEFAULT_PEERS",
    "DEFAULT_RATE",
    "PeerBudgets",
    "RateLimiter",
    "TokenBucket",
    "Verdict",
]

DEFAULT_RATE: Final = 500.0
"""Messages per second a connection may send, sustained."""
DEFAULT_BURST: Final = 2000.0
"""Messages a connection may send at once (a full bucket): a login burst of up to 2,000 requests is accepted."""
DEFAULT_KICK_AFTER: Final = 2000.0
"""Refusals, net of forgiveness at ``rate`` per second, after which a connection is kicked."""
DEFAULT_PEERS: Final = 65536
"""Peers whose spent budgets a server remembers across reconnects (:class:`PeerBudgets`)."""


_SLACK: Final = 1e-6
"""Tokens forgiven per take (float rounding of ``(now - stamp) * rate``); written out as a literal where used."""


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, not {value!r}")
    return value


class TokenBucket:
    """A token bucket: up to ``burst`` tokens, refilled at ``rate`` tokens per second, starting full.

    ``take(now, n)`` removes ``n`` tokens if the bucket holds at least ``n`` and returns True; otherwise it removes
    nothing and returns False. Over any period of ``t`` seconds it accepts at most ``burst + rate * t`` tokens, and it
    never refuses a stream that stays under ``rate`` (once the bucket holds a token). "At least ``n``" forgives
    :data:`_SLACK` (a millionth of a token) so that float rounding does not refuse a stream at exactly ``rate``
    (with a ``burst`` of 2 or more the cap absorbs rounding anyway; with 1, the slack suffices while ``rate`` times the
    float spacing at ``now`` stays small: tested up to 30,000/s at ``now`` = 1e6 s, 200/s at ``now`` = 1e8 s).

    ``now`` is seconds on any monotonic clock, the same one for every call; a ``now`` earlier than a previous one
    counts as no time passing. Calls are not validated (hot path): ``n`` must be non-negative and ``now`` finite; an
    ``n`` over ``burst`` (plus the slack) is never accepted.

    Error handling: the constructor raises ValueError unless ``rate`` and ``burst`` are positive and finite.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate: Final = _positive("rate", rate)
        self.burst: Final = _positive("burst", burst)
        self._tokens = self.burst
        self._stamp = -math.inf  # first take: full, whatever the clock's origin

    def take(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens at time ``now`` (seconds) if there are that many: True if taken, False if refused."""
        stamp = self._stamp
        if now > stamp:
            tokens = self._tokens + (now - stamp) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._stamp = now
        else:
            tokens = self._tokens
        if tokens >= n - 1e-6:  # _SLACK
            self._tokens = tokens - n if tokens > n else 0.0
            return True
        self._tokens = tokens
        return False

    def tokens(self, now: float) -> float:
        """The tokens the bucket would hold at ``now`` (a float in ``[0, burst]``), without taking any."""
        if now > self._stamp:
            return min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        return self._tokens

    def full_at(self, now: float) -> float:
        """When the bucket will be full again (``now`` if it is), if nothing is taken meanwhile."""
        return now + (self.burst - self.tokens(now)) / self.rate

    def resume(self, other: TokenBucket) -> None:
        """Take over ``other``'s tokens and time stamp (a bucket of the same ``rate`` and ``burst``)."""
        self._tokens = other._tokens
        self._stamp = other._stamp

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r}, tokens={self._tokens!r})"


class Verdict(enum.IntEnum):
    """What to do with one inbound message."""

    OK = 0
    """Handle it."""
    REFUSE = 1
    """Drop it (and count it): the connection is over its rate."""
    KICK = 2
    """Drop it and kick the connection (``Kick("rate limit")``): it has been over its rate persistently."""


_OK: Final = Verdict.OK
_REFUSE: Final = Verdict.REFUSE
_KICK: Final = Verdict.KICK


class RateLimiter(TokenBucket):
    """A connection's inbound-message limit: a :class:`TokenBucket` (itself) for the messages, and a second one, of
    ``kick_after`` tokens also refilled at ``rate`` per second, for its patience with refused ones.

    ``check(now)`` for each inbound message (``now`` as for :meth:`TokenBucket.take`) returns:

    - :attr:`Verdict.OK` if the message bucket had a token (and takes it);
    - :attr:`Verdict.REFUSE` if not, taking one token of patience;
    - :attr:`Verdict.KICK` if there was no patience left either: more than ``kick_after`` refusals net of a
      forgiveness of ``rate`` per second. The caller kicks on the first KICK (later calls may return anything).

    So a client may send ``burst`` messages at once and ``rate`` per second after that. Between ``rate`` and
    ``2 * rate`` per second, the excess is refused but patience refills as fast as it drains: never kicked. A
    sustained flood of ``f`` messages per second empties the bucket after ``burst / (f - rate)`` seconds and is
    kicked ``kick_after / (f - 2 * rate)`` seconds later: with the defaults, after 0.1 s at 20,000 msgs/s, 2.9 s at
    1,000 msgs/s. A login burst of up to ``burst``
    messages at once is accepted in full; up to ``burst + kick_after`` at once are answered without a kick.

    ``refused`` counts the messages refused (REFUSE or KICK) since construction.

    Error handling: the constructor raises ValueError unless every argument is positive and finite, and ``burst``
    is at least 1 (a smaller bucket would refuse every message).
    """

    __slots__ = ("_patience", "refused")

    def __init__(
        self, rate: float = DEFAULT_RATE, burst: float = DEFAULT_BURST, kick_after: float = DEFAULT_KICK_AFTER
    ) -> None:
        super().__init__(rate, burst)
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self._patience: Final = TokenBucket(rate, _positive("kick_after", kick_after))
        self.refused = 0

    @property
    def kick_after(self) -> float:
        return self._patience.burst

    def check(self, now: float) -> Verdict:
        """The verdict on one message arriving at time ``now`` (seconds)."""
        # TokenBucket.take(now) inlined: this runs for every inbound message.
        stamp = self._stamp
        if now > stamp:
            tokens = self._tokens + (now - stamp) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._stamp = now
        else:
            tokens = self._tokens
        if tokens >= 1.0 - 1e-6:  # _SLACK, folded into one constant by the compiler
            self._tokens = tokens - 1.0 if tokens > 1.0 else 0.0
            return _OK
        self._tokens = tokens
        self.refused += 1
        return _REFUSE if self._patience.take(now) else _KICK

    def full_at(self, now: float) -> float:
        """When both the message bucket and the patience will be full again: from then on this limiter
        is as good as a new one."""
        return max(super().full_at(now), self._patience.full_at(now))

    def resume(self, other: TokenBucket) -> None:
        """Go on from where ``other`` (a RateLimiter of the same settings) left off: its tokens and
        its patience; ``refused`` starts at 0."""
        super().resume(other)
        if isinstance(other, RateLimiter):
            self._patience.resume(other._patience)

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self.rate!r}, burst={self.burst!r}, kick_after={self.kick_after!r}, "
            f"refused={self.refused!r})"
        )


class PeerBudgets:
    """What a server remembers of its peers' rate limits across reconnects, so that a flooder
    cannot refill its budget by reconnecting.

    A connection that was refused at least once (it went over its limit) leaves its limiter
    here on :meth:`closed`, under its peer's key (a host; see ``trionano._listen.peer_host``);
    the next connection from that peer :meth:`opened` goes on from that state (its tokens, and
    the patience a kick is measured by: a peer kicked for its rate is kicked again at its first
    refusal) instead of a full bucket. A peer that stays within its limit leaves nothing: its
    reconnects start full, and so do the other users behind the same NAT address. An entry is
    forgotten once its buckets would be full again (``max(burst, kick_after) / rate`` seconds
    at most: 4 s with the defaults), and the oldest go first past ``max_peers`` entries:
    memory is bounded whatever the churn. Only reconnects are covered: connections open at
    the same time have a budget each.

    Pure and synchronous (every call takes ``now``, seconds on one monotonic clock); owned by
    one server. Error handling: the constructor raises ValueError for a negative ``max_peers``
    (0 remembers nothing).
    """

    __slots__ = ("_entries", "burst", "kick_after", "max_peers", "rate")

    def __init__(self, rate: float, burst: float, kick_after: float, max_peers: int = DEFAULT_PEERS) -> None:
        if max_peers < 0:
            raise ValueError(f"max_peers must be 0 or more, not {max_peers!r}")
        RateLimiter(rate, burst, kick_after)  # the same validation
        self.rate: Final = rate
        self.burst: Final = burst
        self.kick_after: Final = kick_after
        self.max_peers: Final = max_peers
        # key -> (forget at, state); oldest first (an OrderedDict: taking from the front of a
        # plain dict scans the slots deleted there before)
        self._entries: collections.OrderedDict[str, tuple[float, RateLimiter]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def opened(self, key: str | None, now: float) -> RateLimiter:
        """A limiter for a new connection of peer ``key`` (None: unknown, a fresh one) at ``now``."""
        limiter = RateLimiter(self.rate, self.burst, self.kick_after)
        if key is not None and self._entries:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is not None:
                limiter.resume(entry[1])
        return limiter

    def closed(self, key: str | None, limiter: RateLimiter, now: float) -> None:
        """The connection of peer ``key`` with ``limiter`` closed at ``now``: remember its state if
        it went over its limit and its buckets are not yet full again."""
        if key is None or not limiter.refused or not self.max_peers:
            return
        forget_at = limiter.full_at(now)
        self._expire(now)
        entries = self._entries
        previous = entries.pop(key, None)
        # an earlier connection of the peer that left less (refills later) is the one kept
        entry = previous if previous is not None and previous[0] > forget_at else (forget_at, limiter)
        if entry[0] <= now:
            return
        entries[key] = entry
        while len(entries) > self.max_peers:
            entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        """Forget the entries at the front (the oldest) whose buckets are full again."""
        entries = self._entries
        while entries:
            key, (forget_at, _) = next(iter(entries.items()))
            if forget_at > now:
                return
            del entries[key]
