"""Admission: the connections that have not completed their handshake, and who must make room.

A connection costs a file descriptor and a slot of ``Config.max_connections`` from the moment
it is accepted, but only a handshake makes it a session. Without a bound of their own, one peer
opening ``max_connections`` sockets and never handshaking locks every other client out until
the handshake deadline (nano has no bound at all, and never reaps a silent WebSocket). So:

- a peer (a host; an IPv6 /64) may hold at most ``max_handshaking_per_host`` of them;
- all peers together at most ``max_handshaking``;
- and when the server is full, the oldest of them makes room before a newcomer is refused.

At a bound, the oldest connection still handshaking (of that peer, or of all) is *evicted*
(kicked ``"handshake evicted"``) if it has been at it for :data:`HANDSHAKE_GRACE` seconds;
otherwise the newcomer is refused (``"server busy"``, or ``"server full"`` when the server is
full). A client completes a handshake in one round trip, so silent sockets are what is evicted,
and a login storm is never turned into a livelock of evictions: while every pending handshake
is younger than the grace, newcomers are refused and retry.

Pure and synchronous, as :mod:`trionano._ratelimit`: every call takes ``now`` (seconds, any
monotonic clock); the keys are the server's connections, opaque here.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final, Generic, TypeVar

import attrs

__all__ = ["HANDSHAKE_GRACE", "Handshaking", "Room"]

#: Seconds a connection may spend in its handshake before a newcomer may evict it at a bound:
#: longer than any client's round trip, shorter than any deadline worth locking others out for.
HANDSHAKE_GRACE: Final = 1.0

K = TypeVar("K", bound=Hashable)


@attrs.frozen
class Room(Generic[K]):
    """What a newcomer needs done: ``evict`` these connections (kick ``"handshake evicted"``),
    or, if ``refuse`` is a reason, refuse the newcomer with it (and evict nothing)."""

    evict: tuple[K, ...] = ()
    refuse: str | None = None


class Handshaking(Generic[K]):
    """The connections still in their handshake, oldest first, overall and by peer host.

    ``limit`` bounds them all, ``per_host`` those of one host (None: no bound). A connection
    whose host is None (unknown) counts only against ``limit``. Owned by one server and called
    from its tasks; not thread-safe.
    """

    __slots__ = ("_by_host", "_hosts", "_since", "limit", "per_host")

    def __init__(self, limit: int, per_host: int | None) -> None:
        self.limit: Final = limit
        self.per_host: Final = per_host
        self._since: dict[K, float] = {}  # insertion order: oldest first
        self._hosts: dict[K, str | None] = {}
        self._by_host: dict[str, dict[K, float]] = {}

    def __len__(self) -> int:
        return len(self._since)

    def __contains__(self, key: object) -> bool:
        return key in self._since

    def count(self, host: str) -> int:
        """How many connections of ``host`` are handshaking."""
        return len(self._by_host.get(host, ()))

    def make_room(self, host: str | None, now: float, *, connections: int, max_connections: int) -> Room[K]:
        """What a new connection from ``host`` at ``now`` needs, with ``connections`` open of
        ``max_connections``: the connections to evict (already forgotten here: the caller
        kicks them and no longer counts them) or the reason to refuse it (nothing changes)."""
        victims: list[K] = []

        def oldest(among: dict[K, float]) -> K | None:
            """The oldest of ``among`` not yet a victim, if it is past the grace."""
            for key, since in among.items():
                if key not in victims:
                    return key if now - since >= HANDSHAKE_GRACE else None
            return None

        if host is not None and self.per_host is not None and self.count(host) >= self.per_host:
            victim = oldest(self._by_host[host])
            if victim is None:
                return Room(refuse="server busy")
            victims.append(victim)
        if len(self._since) - len(victims) >= self.limit:
            victim = oldest(self._since)
            if victim is None:
                return Room(refuse="server busy")
            victims.append(victim)
        if connections - len(victims) >= max_connections:
            victim = oldest(self._since)
            if victim is None:
                return Room(refuse="server full")
            victims.append(victim)
        for victim in victims:
            self.remove(victim)
        return Room(evict=tuple(victims))

    def add(self, key: K, host: str | None, now: float) -> None:
        """``key`` from ``host`` starts its handshake at ``now``."""
        self._since[key] = now
        self._hosts[key] = host
        if host is not None:
            self._by_host.setdefault(host, {})[key] = now

    def remove(self, key: K) -> None:
        """``key`` completed its handshake, closed, or was evicted. Idempotent."""
        if self._since.pop(key, None) is None:
            return
        host = self._hosts.pop(key, None)
        if host is not None:
            of_host = self._by_host.get(host)
            if of_host is not None:
                of_host.pop(key, None)
                if not of_host:
                    del self._by_host[host]
