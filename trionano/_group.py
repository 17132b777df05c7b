"""Groups: named sets of sessions that are pushed to together (nano's ``Group``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import trio

from ._config import MAX_MERGE_WINDOW
from ._errors import GroupError
from ._fanout import BUCKET_SIZE, FanOut, FanOutJob
from ._session import Broadcast, Session

__all__ = ["Group", "SessionFilter"]

SessionFilter = Callable[[Session], bool]

ERR_CLOSED_GROUP = "group closed"
ERR_CLOSE_CLOSED_GROUP = "close closed group"
ERR_MEMBER_NOT_FOUND = "member not found in the group"
ERR_SESSION_DUPLICATION = "session has existed in the current group"

#: A join drops the closed members once they may be as many as the open ones, plus this many.
PRUNE_SLACK: Final = 64


class Group:
    """A set of sessions keyed by session id. Owned by the application. A closed session never
    joins (``add`` raises), and one that closes while a member stops counting at once: lookups
    skip it and the next broadcast drops it (leaving from a close hook, as nano's demos do,
    is still fine). Joins drop closed members too, whenever the closed ones may be as many as
    the open ones, so however many clients come and go, a group that is never broadcast to
    holds at most twice its largest open membership plus :data:`PRUNE_SLACK` (64): it does not
    keep the sessions of clients gone long ago alive.

    A broadcast serializes its value once, encodes the packet once, and queues the same bytes
    for every member without waiting for any of them: a member whose outbox is full is handled
    by its server's slow-consumer policy (dropped and counted, or kicked).

    Large groups: a broadcast queues its first :data:`~trionano._fanout.BUCKET_SIZE` (64)
    members at once and hands the rest to its server's fan-out task, which queues them a
    bucket at a time (go-push's buckets hold 512, goim's are 32 shards) and lets every other
    task run in between, so a broadcast to 100,000 members never stalls the server's other
    clients. It goes to the members of the
    moment it is called, and each member gets its Pushes in the order they were issued: a
    member's later Pushes (broadcasts, ``session.push``), Kick or close wait behind a
    broadcast still on its way to it (Responses do not). :meth:`broadcast_and_wait` waits
    until every member has been reached. When broadcasts come faster than the server reaches
    their members, the fan-out's backlog is bounded (``Config.max_fanout_backlog``): a
    broadcast that would pass it is refused whole, for every member of that server, rather
    than stall the server (see :mod:`trionano._fanout`).

    Error handling: GroupError with nano's texts; see each method.
    """

    def __init__(self, name: str, *, merge_window: float | None = None) -> None:
        if merge_window is not None and not 0 <= merge_window <= MAX_MERGE_WINDOW:
            raise ValueError(f"merge_window must be None or 0..{MAX_MERGE_WINDOW} seconds, not {merge_window!r}")
        self.name = name
        self._merge_window = merge_window
        self._members: dict[int, Session] = {}
        self._fanouts: dict[FanOut | None, int] = {}  # members per server fan-out
        self._prune_at = PRUNE_SLACK  # a join drops the closed members when there are this many
        self._closed = False

    def __repr__(self) -> str:
        return f"<Group {self.name!r} members={len(self._members)}{' closed' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise GroupError(ERR_CLOSED_GROUP)

    @property
    def merge_window(self) -> float | None:
        """The merge window (seconds) of this group's broadcasts: each member's connection may
        hold one that long to merge it with what follows (``Config.merge_window``, which
        applies when this is None; 0: never held). A connection holds its write until the
        earliest deadline any packet queued on it asked for, so the smallest window wins."""
        return self._merge_window

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def add(self, session: Session) -> None:
        """Raises GroupError when closed or when the session is already a member,
        trio.BrokenResourceError when the session is closed."""
        self._check_open()
        if session.closed:
            raise trio.BrokenResourceError("a closed session cannot join a group")
        members = self._members
        if session.id in members:
            raise GroupError(ERR_SESSION_DUPLICATION)
        if len(members) >= self._prune_at:  # amortized: at least as many joins as members between two
            self._prune_at = 2 * len(self._live()) + PRUNE_SLACK
        members[session.id] = session
        fanout = session.fanout
        self._fanouts[fanout] = self._fanouts.get(fanout, 0) + 1

    def leave(self, session: Session) -> None:
        """Remove ``session`` (not being a member is fine). Raises GroupError when closed."""
        self._check_open()
        self._forget(session)

    def leave_all(self) -> None:
        """Remove every member. Raises GroupError when closed."""
        self._check_open()
        self._members.clear()
        self._fanouts.clear()

    def _forget(self, session: Session) -> None:
        if self._members.get(session.id) is session:
            del self._members[session.id]
            fanout = session.fanout
            left = self._fanouts[fanout] - 1
            if left:
                self._fanouts[fanout] = left
            else:
                del self._fanouts[fanout]

    def member(self, uid: int) -> Session:
        """The member bound to ``uid``. Raises GroupError (``member not found in the group``)."""
        for session in self._members.values():
            if session.uid == uid and not session.closed:
                return session
        raise GroupError(ERR_MEMBER_NOT_FOUND)

    def find_member(self, predicate: SessionFilter) -> Session:
        """The first member (in joining order) for which ``predicate`` is true."""
        for session in self._members.values():
            if not session.closed and predicate(session):
                return session
        raise GroupError(ERR_MEMBER_NOT_FOUND)

    def members(self) -> list[int]:
        """The members' uids, in joining order (nano returns uids too)."""
        return [session.uid for session in self._live()]

    def sessions(self) -> list[Session]:
        """The open members' sessions, in joining order (a new list)."""
        return self._live()

    def contains(self, uid: int) -> bool:
        """Whether an open member is bound to ``uid`` (``session in group`` asks by session)."""
        return any(session.uid == uid for session in self._live())

    def __contains__(self, session: object) -> bool:
        if not isinstance(session, Session) or session.closed:
            return False
        return self._members.get(session.id) is session

    def count(self) -> int:
        """Open members (closed ones are dropped as they are found)."""
        return len(self._live())

    def __len__(self) -> int:
        return self.count()

    def _live(self) -> list[Session]:
        """The open members in joining order; drops the closed ones."""
        members = list(self._members.values())
        live = [session for session in members if not session.closed]
        if len(live) != len(members):
            for session in members:
                if session.closed:
                    self._forget(session)
        return live

    def broadcast(self, route: str, value: object) -> int:
        """Push to every member. Returns how many members it was queued for (closed members
        and slow consumers' drops are skipped and counted); of a large broadcast, those queued
        at once plus those handed to the fan-out; 0 when the server's fan-out refused it whole,
        its backlog at ``Config.max_fanout_backlog`` (counted as ``dropped_backlog``: see
        :mod:`trionano._fanout`). Raises GroupError when closed, SerializeError when ``value``
        cannot be serialized, MessageTooLarge."""
        queued, jobs = self._push(route, value, None)
        return queued + sum(job.count for job in jobs)

    def multicast(self, route: str, value: object, predicate: SessionFilter) -> int:
        """Push to the members for which ``predicate`` is true; as :meth:`broadcast`."""
        queued, jobs = self._push(route, value, predicate)
        return queued + sum(job.count for job in jobs)

    async def broadcast_and_wait(self, route: str, value: object, predicate: SessionFilter | None = None) -> int:
        """:meth:`broadcast` (or :meth:`multicast` with ``predicate``), then wait until it has
        been queued for every member; returns for how many it was (0 when refused, as
        :meth:`broadcast`). Raises as :meth:`broadcast`."""
        queued, jobs = self._push(route, value, predicate)
        if not jobs:
            await trio.lowlevel.checkpoint()
        for job in jobs:
            await job.done.wait()
            queued += job.queued
        return queued

    def _push(self, route: str, value: object, predicate: SessionFilter | None) -> tuple[int, list[FanOutJob]]:
        self._check_open()
        count = len(self._members)
        body: bytes | None = None  # the value serialized for the first member, once
        if count > BUCKET_SIZE and predicate is None and len(self._fanouts) == 1:
            fanout = next(iter(self._fanouts))
            if fanout is not None:
                body = next(iter(self._members.values())).serializer.marshal(value)  # raises as ever
                if fanout.refuses(count):  # an overloaded server: refused before the members' snapshot
                    return 0, []
        # a large group's closed members are skipped (and dropped) as the fan-out reaches them
        members = self._live() if count <= BUCKET_SIZE else list(self._members.values())
        if predicate is not None:
            members = [session for session in members if not session.closed and predicate(session)]
        if not members:
            return 0, []
        window = self._merge_window
        first = members[0].serializer  # the serializer of body, when set: the same first member
        broadcast = Broadcast(route, first.marshal(value) if body is None else body, window)  # serialize once
        others: dict[int, Broadcast] = {}  # per other serializer (rare: members of several servers)
        forget = self._forget

        def deliver(session: Session) -> bool:
            if session.closed:
                forget(session)
                return False
            serializer = session.serializer
            if serializer is first:
                return session.entity.send_broadcast(session, broadcast)
            other = others.get(id(serializer))
            if other is None:
                other = others[id(serializer)] = Broadcast(route, serializer.marshal(value), window)
            return session.entity.send_broadcast(session, other)

        if len(self._fanouts) == 1:  # every member on one server (almost always)
            return _send(next(iter(self._fanouts)), members, deliver)
        by_fanout: dict[FanOut | None, list[Session]] = {}
        for session in members:
            by_fanout.setdefault(session.fanout, []).append(session)
        queued = 0
        jobs: list[FanOutJob] = []
        for fanout, part in by_fanout.items():
            count, more = _send(fanout, part, deliver)
            queued += count
            jobs += more
        return queued, jobs

    def close(self) -> None:
        """Drop every member and refuse further changes. Raises GroupError the second time."""
        if self._closed:
            raise GroupError(ERR_CLOSE_CLOSED_GROUP)
        self._closed = True
        self._members.clear()
        self._fanouts.clear()


def _send(
    fanout: FanOut | None, members: Sequence[Session], deliver: Callable[[Session], bool]
) -> tuple[int, list[FanOutJob]]:
    if fanout is None:  # sessions made outside a server: everything now
        return sum(deliver(session) for session in members), []
    queued, job = fanout.send(members, deliver)
    return queued, [job] if job is not None else []
