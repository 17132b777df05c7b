"""Groups: named sets of sessions that are pushed to together (nano's ``Group``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._errors import GroupError

if TYPE_CHECKING:
    from ._server import Server
    from ._session import Session

__all__ = ["Group", "SessionFilter"]

SessionFilter = Callable[["Session"], bool]
_logger = logging.getLogger("trionano.group")

ERR_CLOSED_GROUP = "group closed"
ERR_CLOSE_CLOSED_GROUP = "close closed group"
ERR_MEMBER_NOT_FOUND = "member not found in the group"
ERR_SESSION_DUPLICATION = "session has existed in the current group"


class Group:
    """A set of sessions keyed by session id. Owned by the application; a closed session stays
    until it leaves (do it from a close hook, as nano's demos do).

    A broadcast serializes its value once, encodes the packet once, and queues the same bytes
    for every member without waiting for any of them: a member whose outbox is full is handled
    by its server's slow-consumer policy (dropped and counted, or kicked).

    Error handling: GroupError with nano's texts; see each method.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._members: dict[int, Session] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<Group {self.name!r} members={len(self._members)}{' closed' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise GroupError(ERR_CLOSED_GROUP)

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, session: Session) -> None:
        """Raises GroupError when closed or when the session is already a member."""
        self._check_open()
        if session.id in self._members:
            raise GroupError(ERR_SESSION_DUPLICATION)
        self._members[session.id] = session

    def leave(self, session: Session) -> None:
        """Remove ``session`` (not being a member is fine). Raises GroupError when closed."""
        self._check_open()
        self._members.pop(session.id, None)

    def leave_all(self) -> None:
        self._check_open()
        self._members.clear()

    def member(self, uid: int) -> Session:
        """The member bound to ``uid``. Raises GroupError (``member not found in the group``)."""
        for session in self._members.values():
            if session.uid == uid:
                return session
        raise GroupError(ERR_MEMBER_NOT_FOUND)

    def find_member(self, predicate: SessionFilter) -> Session:
        """The first member (in joining order) for which ``predicate`` is true."""
        for session in self._members.values():
            if predicate(session):
                return session
        raise GroupError(ERR_MEMBER_NOT_FOUND)

    def members(self) -> list[int]:
        """The members' uids, in joining order (nano returns uids too)."""
        return [session.uid for session in self._members.values()]

    def sessions(self) -> list[Session]:
        return list(self._members.values())

    def contains(self, uid: int) -> bool:
        return any(session.uid == uid for session in self._members.values())

    def __contains__(self, session: object) -> bool:
        return getattr(session, "id", None) in self._members and self._members[session.id] is session  # type: ignore[attr-defined]

    def count(self) -> int:
        return len(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def broadcast(self, route: str, value: object) -> int:
        """Push to every member. Returns how many members it was queued for (closed members
        and slow consumers' drops are skipped and counted). Raises GroupError when closed,
        SerializeError when ``value`` cannot be serialized."""
        return self._push(route, value, None)

    def multicast(self, route: str, value: object, predicate: SessionFilter) -> int:
        """Push to the members for which ``predicate`` is true; as :meth:`broadcast`."""
        return self._push(route, value, predicate)

    def _push(self, route: str, value: object, predicate: SessionFilter | None) -> int:
        self._check_open()
        members = list(self._members.values())
        if predicate is not None:
            members = [session for session in members if predicate(session)]
        queued = 0
        server: Server | None = None
        body = packet = b""
        for session in members:
            if session._server is not server:  # encode once per server (almost always one)
                server = session._server
                body, packet = server._encode_push(route, value)
            try:
                queued += session._entity.send_push(session, route, body, packet)
            except trio.BrokenResourceError:
                server.stats.dropped_closed += 1
        return queued

    def close(self) -> None:
        """Drop every member and refuse further changes. Raises GroupError the second time."""
        if self._closed:
            raise GroupError(ERR_CLOSE_CLOSED_GROUP)
        self._closed = True
        self._members.clear()
