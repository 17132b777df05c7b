"""Sessions: one per client, the handle handlers use to answer, push and store.

A :class:`Session` is given what it needs and nothing more: its network entity (where its
messages go: a local connection's agent, or, in a cluster, the gate that holds the client),
the server's serializer, and, in a cluster, the remote router behind ``session.rpc``. It never
sees the server.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Generic, NoReturn, Protocol, TypeVar, overload

import trio

from ._errors import ERROR_CODES, MessageTooLarge, SerializeError, SessionError
from ._fanout import FanOut
from ._serializer import Serializer

__all__ = [
    "Broadcast",
    "Call",
    "DeferredResponse",
    "NetworkEntity",
    "RemoteCaller",
    "Session",
    "SessionKey",
    "UidIndex",
    "current_call",
]

T = TypeVar("T")
D = TypeVar("D")


class Call:
    """The handler call in progress: the route, which request it answers (``mid``, 0 for a
    Notify) and whether it has answered or promised to answer later. Set per call in a context
    variable, so ``session.response()`` answers the right request even after the handler
    awaited (nano answers whichever request came last)."""

    __slots__ = ("answered", "deferred", "mid", "on_dropped", "promises", "route")

    def __init__(self, route: str, mid: int, on_dropped: OnDropped | None = None) -> None:
        self.route = route
        self.mid = mid
        self.answered = False
        self.deferred = False
        #: called (from Trio's run loop, never from a finalizer) when every DeferredResponse
        #: of this call was dropped unanswered: the router answers 500 and logs
        self.on_dropped = on_dropped
        self.promises = 0  # DeferredResponse objects of this call alive


#: What a :class:`Call`'s owner does when its deferred answers were all dropped unanswered.
OnDropped = Callable[["Session", Call], None]


current_call: Final[contextvars.ContextVar[Call | None]] = contextvars.ContextVar("trionano_call", default=None)


class SessionKey(Generic[T]):
    """A typed key for per-session data: ``ROOM = SessionKey[Room]("room")``;
    ``session[ROOM] = room`` and ``session[ROOM]`` are checked by mypy."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name: Final = name

    def __repr__(self) -> str:
        return f"SessionKey({self.name!r})"


class Broadcast:
    """One Push for many sessions: serialized once by its sender, encoded into a packet by the
    first entity that sends it and reused by every other entity sharing that encoder.
    ``merge_window``: the seconds each member's connection may hold it to merge it with what
    follows (see ``Config.merge_window``); None: the server's window."""

    __slots__ = ("body", "encoder", "merge_window", "packet", "route")

    def __init__(self, route: str, body: bytes, merge_window: float | None = None) -> None:
        self.route: Final = route
        self.body: Final = body
        self.merge_window: Final = merge_window
        self.encoder: object = None  # whatever encoded ``packet`` (a server's codec)
        self.packet = b""


class NetworkEntity(Protocol):
    """Where a session's messages go: a local connection's agent, or a cluster's gate.

    ``send_*`` return whether the message was queued (False: dropped and counted by the
    entity: a slow consumer, a refusing pipeline, a session not yet working). They raise
    ``trio.BrokenResourceError`` once the entity is closed and
    :class:`~trionano.MessageTooLarge` for a body over the packet limit.
    """

    @property
    def closed(self) -> bool: ...

    @property
    def remote_address(self) -> str: ...

    def send_push(self, session: Session, route: str, body: bytes) -> bool: ...

    def send_broadcast(self, session: Session, broadcast: Broadcast) -> bool: ...

    def send_response(self, session: Session, mid: int, body: bytes) -> bool: ...

    def kick(self, reason: str) -> None: ...

    def close(self) -> None: ...


class RemoteCaller(Protocol):
    """A cluster node's half of ``session.rpc``: send a Notify to whichever member hosts the
    route, without waiting."""

    def rpc(self, session: Session, route: str, body: bytes) -> None: ...


class _NoPublicConstructor(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no public constructor")

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


class DeferredResponse:
    """A promise to answer one Request later, from :meth:`Session.defer`. Answer it once with
    :meth:`respond` or :meth:`error`; answering a closed session is a no-op (returns False).

    A promise dropped unanswered (garbage-collected: the handler, timer or task holding it let
    go of every reference, and of every other promise of the same Request) is answered for
    it: a 500 error Response (``"internal error"``), logged (``trionano.router``,
    rate-limited) and counted with the handler errors, so the client never waits for an
    answer nobody can send. There is no deadline otherwise: a promise held unanswered is the
    application's to keep (a match being made may take minutes), and the client's own
    request timeout bounds its wait; a session that closes first is answered nothing. Answer
    through the promise (not ``session.response(value, mid=...)``, which it cannot see)."""

    __slots__ = ("_call", "_session", "_token")

    def __init__(self, session: Session, call: Call) -> None:
        self._session = session
        self._call = call
        call.promises += 1
        try:
            self._token: trio.lowlevel.TrioToken | None = trio.lowlevel.current_trio_token()
        except RuntimeError:  # outside Trio: nobody to answer for it when dropped
            self._token = None

    def __del__(self) -> None:
        # a finalizer runs wherever the garbage collector does (inside any code of this
        # thread, or at exit): it only counts, and hands the answer to Trio's run loop
        # (run_sync_soon is safe to call from anywhere); it never raises
        call = self._call
        call.promises -= 1
        if call.promises or call.answered or call.on_dropped is None or self._token is None:
            return
        try:
            self._token.run_sync_soon(call.on_dropped, self._session, call)
        except Exception:  # trio.RunFinishedError: the server has stopped, nobody to answer
            return

    @property
    def mid(self) -> int:
        """The id of the Request this answers."""
        return self._call.mid

    @property
    def route(self) -> str:
        """The route of the Request this answers."""
        return self._call.route

    @property
    def answered(self) -> bool:
        """Whether the Request has been answered (or its session was closed when answered)."""
        return self._call.answered

    def respond(self, value: object) -> bool:
        """Send ``value`` as the Response. Raises SessionError when already answered. A value
        that cannot be serialized (SerializeError) or is too large (MessageTooLarge) is still
        answered, with a 500 or 413 error Response, and then raised, naming the route and the
        request, for the caller's log."""
        serializer = self._session.serializer
        try:
            return self._answer(serializer.marshal(value))
        except (SerializeError, MessageTooLarge) as exc:
            code, text = (413, str(exc)) if isinstance(exc, MessageTooLarge) else (500, "internal error")
            if not self._call.answered:
                self._answer(serializer.marshal_error(code, text))
            exc.add_note(f"the deferred answer to {self.route} (request {self.mid}), answered {code}")
            raise

    def error(self, message: str, *, code: int = 500) -> bool:
        """Answer with an error Response ``{"code": code, "message": message}``. Raises
        SessionError when already answered, ValueError for a ``code`` that is not an int32."""
        if type(code) is not int or code not in ERROR_CODES:
            raise ValueError(f"an error code is an int32, not {code!r}")
        return self._answer(self._session.serializer.marshal_error(code, str(message)))

    def _answer(self, body: bytes) -> bool:
        call = self._call
        if call.answered:
            raise SessionError(f"request {call.mid} ({call.route}) was already answered")
        if self._session.closed:
            call.answered = True
            return False
        sent = self._session.respond_raw(call.mid, body)
        call.answered = True
        return sent


def _key(key: SessionKey[Any] | str) -> str:
    return key if isinstance(key, str) else key.name


class UidIndex:
    """uid -> the open sessions bound to it, kept by a server for its own sessions: a session is
    in it from :meth:`add` (its handshake acknowledged) to :meth:`remove` (closed), under its
    current uid (moved on every :meth:`Session.bind` and :meth:`Session.clear`). Several
    sessions may share a uid; sessions bound to none (uid 0) are not listed. Lookups cost
    O(sessions of that uid), not O(open sessions)."""

    __slots__ = ("_by_uid",)

    def __init__(self) -> None:
        self._by_uid: dict[int, dict[int, Session]] = {}

    def __len__(self) -> int:
        """How many uids have at least one open session."""
        return len(self._by_uid)

    def sessions(self, uid: int) -> list[Session]:
        """The open sessions bound to ``uid``, oldest binding first (empty when none)."""
        bucket = self._by_uid.get(uid)
        return list(bucket.values()) if bucket else []

    def sessions_of_any(self, uids: Iterable[int]) -> list[Session]:
        """The open sessions bound to any of ``uids``, each once, uid by uid (a uid named
        twice counts once), oldest binding first within a uid."""
        found: list[Session] = []
        for bucket in filter(None, map(self._by_uid.get, dict.fromkeys(uids))):
            found.extend(bucket.values())
        return found

    def add(self, session: Session) -> None:
        session._index = self
        if session.uid:
            self._insert(session, session.uid)

    def remove(self, session: Session) -> None:
        if session._index is self:
            session._index = None
            self._discard(session, session.uid)

    def moved(self, session: Session, old: int) -> None:
        self._discard(session, old)
        if session.uid:
            self._insert(session, session.uid)

    def _insert(self, session: Session, uid: int) -> None:
        bucket = self._by_uid.get(uid)
        if bucket is None:
            bucket = self._by_uid[uid] = {}
        bucket[session.id] = session

    def _discard(self, session: Session, uid: int) -> None:
        bucket = self._by_uid.get(uid)
        if bucket is not None and bucket.get(session.id) is session:
            del bucket[session.id]
            if not bucket:
                del self._by_uid[uid]


class Session(metaclass=_NoPublicConstructor):
    """A client's session, made by the server once the client's handshake is acknowledged.
    Not safe to share across servers.

    Error handling: ``push``/``response`` on a closed session raise ``trio.BrokenResourceError``
    (nano's ``broken low-level pipe``); a full outbox never raises or waits: the server's
    slow-consumer policy applies, and the drop is counted and logged. A body over the server's
    ``max_packet_size`` raises :class:`~trionano.MessageTooLarge`.

    Data: ``session[key]`` with a :class:`SessionKey` (typed) or a string is the one way to
    store per-session data; nano's ``set``/``value``/``get_int``... are aliases.
    """

    __slots__ = ("__weakref__", "_data", "_fanout", "_index", "_remote", "_uid", "entity", "id", "serializer")

    def __init__(
        self,
        id: int,
        entity: NetworkEntity,
        serializer: Serializer,
        remote: RemoteCaller | None = None,
        fanout: FanOut | None = None,
    ) -> None:
        self.id: Final = id  # unique per server (per cluster with a cluster's id source), < 2^53
        self._uid = 0
        self._index: UidIndex | None = None  # the server's, while the session is open there
        self.serializer: Final = serializer
        #: Where this session's messages go (its agent, or a cluster gate's stand-in); fixed
        #: for the session's life (an attribute, not a property: every answer reads it).
        self.entity: Final = entity
        self._remote = remote
        self._fanout = fanout
        self._data: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Session id={self.id} uid={self.uid} {self.remote_address}>"

    # -- identity ---------------------------------------------------------------------------

    @property
    def uid(self) -> int:
        """The bound user id; 0 when none is bound."""
        return self._uid

    @uid.setter
    def uid(self, uid: int) -> None:
        old = self._uid
        self._uid = uid
        index = self._index
        if index is not None and old != uid:
            index.moved(self, old)

    def bind(self, uid: int) -> None:
        """Bind a user id (several sessions may share one; binding another replaces this
        session's). Raises SessionError (``illegal uid``) for uid < 1."""
        if uid < 1:
            raise SessionError("illegal uid")
        self.uid = uid

    @property
    def fanout(self) -> FanOut | None:
        """The server's fan-out, which runs large broadcasts bucket by bucket and keeps this
        session's Pushes in order behind them (None for a session made outside a server)."""
        return self._fanout

    @property
    def remote_address(self) -> str:
        """The client's ``"host:port"`` (over a cluster, the gate's view of it)."""
        return self.entity.remote_address

    @property
    def closed(self) -> bool:
        """Whether the connection is closing or closed: pushes and responses now raise
        trio.BrokenResourceError."""
        return self.entity.closed

    @property
    def last_mid(self) -> int:
        """The id of the Request being handled (0 in a Notify handler or outside handlers).
        Reading it in a Request handler promises to answer later with ``response(value,
        mid=...)``, as nano's handlers do (see :meth:`defer`)."""
        call = current_call.get()
        if call is None:
            return 0
        if call.mid:
            call.deferred = True
        return call.mid

    # -- messaging --------------------------------------------------------------------------

    def push(self, route: str, value: object) -> bool:
        """Serialize ``value`` and queue it as a Push. Returns False if it was dropped (slow
        consumer, refused by a pipeline). While a large broadcast is still on its way to this
        session (see :class:`~trionano.Group`), the Push is queued behind it by the server's
        fan-out and counts as queued (or, when the fan-out's backlog is at
        ``Config.max_fanout_backlog``, is dropped and counted as ``dropped_backlog``). Raises
        trio.BrokenResourceError if closed, SerializeError, MessageTooLarge."""
        if self.entity.closed:
            raise trio.BrokenResourceError("the session is closed")
        body = self.serializer.marshal(value)
        fanout = self._fanout
        if fanout is not None and fanout.behind(self):  # a broadcast is still on its way here: after it
            return fanout.after(self, lambda session: session.entity.send_push(session, route, body))
        return self.entity.send_push(self, route, body)

    def response(self, value: object, *, mid: int | None = None) -> bool:
        """Answer the Request being handled, or the one whose id is ``mid`` (see :meth:`defer`
        for answering later). A Request gets one Response: a handler that answers this way and
        then returns a value has that value dropped, and logged (``trionano.router``,
        rate-limited). Raises SessionError (``current session working on notify mode``) when
        there is no request to answer, trio.BrokenResourceError if closed, SerializeError,
        MessageTooLarge."""
        call = current_call.get()
        if mid is None:
            mid = call.mid if call is not None else 0
        if mid <= 0:
            raise SessionError("current session working on notify mode")
        body = self.serializer.marshal(value)
        sent = self.respond_raw(mid, body)
        if call is not None and call.mid == mid:
            call.answered = True
        return sent

    def respond_raw(self, mid: int, body: bytes) -> bool:
        """Queue an already serialized Response body for request ``mid``. Raises
        trio.BrokenResourceError if closed, MessageTooLarge."""
        if self.entity.closed:
            raise trio.BrokenResourceError("the session is closed")
        return self.entity.send_response(self, mid, body)

    def defer(self) -> DeferredResponse:
        """Promise to answer the Request being handled later (from a timer, another lane, a
        cluster reply): the handler may then return None without the server answering an
        error for it. Raises SessionError outside a Request handler."""
        call = current_call.get()
        if call is None or not call.mid:
            raise SessionError("defer() answers a Request: call it in a Request handler")
        call.deferred = True
        return DeferredResponse(self, call)

    def rpc(self, route: str, value: object) -> None:
        """Call ``route`` on the cluster member that hosts its service, without waiting (nano's
        ``session.RPC``); that member's pushes and responses reach this session's client.
        Raises RuntimeError outside a cluster, LookupError when no member hosts the service
        (:class:`trionano.cluster.ServiceNotFound`, which a handler that lets it out answers
        with 503), SerializeError."""
        if self._remote is None:
            raise RuntimeError("session.rpc needs a cluster node (trionano.cluster)")
        self._remote.rpc(self, route, self.serializer.marshal(value))

    def kick(self, reason: str = "") -> None:
        """Send a Kick with ``reason`` (pomelo's ``{"reason": ...}``), then close. Idempotent.
        A reason too long for one packet (over ``max_packet_size``, 64 KiB by default, once
        JSON-encoded) is cut to fit and ends with ``...``: the client is always told.
        Behind a large broadcast still on its way here, as :meth:`push` (so is :meth:`close`)."""
        fanout = self._fanout
        if fanout is not None and fanout.behind(self):  # after the broadcasts on their way here

            def kick_now(session: Session) -> bool:
                session.entity.kick(reason)
                return True

            fanout.after(self, kick_now, droppable=False)
            return
        self.entity.kick(reason)

    def close(self) -> None:
        """Close the connection without a Kick. Idempotent; close hooks run once."""
        fanout = self._fanout
        if fanout is not None and fanout.behind(self):

            def close_now(session: Session) -> bool:
                session.entity.close()
                return True

            fanout.after(self, close_now, droppable=False)
            return
        self.entity.close()

    # -- data -------------------------------------------------------------------------------

    @overload
    def __getitem__(self, key: SessionKey[T]) -> T: ...
    @overload
    def __getitem__(self, key: str) -> Any: ...
    def __getitem__(self, key: SessionKey[Any] | str) -> Any:
        return self._data[_key(key)]

    def __setitem__(self, key: SessionKey[T] | str, value: T) -> None:
        self._data[_key(key)] = value

    def __delitem__(self, key: SessionKey[Any] | str) -> None:
        del self._data[_key(key)]

    def __contains__(self, key: SessionKey[Any] | str) -> bool:
        return _key(key) in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    @overload
    def get(self, key: SessionKey[T]) -> T | None: ...
    @overload
    def get(self, key: SessionKey[T], default: D) -> T | D: ...
    @overload
    def get(self, key: str, default: Any = None) -> Any: ...
    def get(self, key: SessionKey[Any] | str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when missing."""
        return self._data.get(_key(key), default)

    def pop(self, key: SessionKey[Any] | str, default: Any = None) -> Any:
        """Remove ``key`` and return its value (``default`` when missing)."""
        return self._data.pop(_key(key), default)

    # nano's names, as aliases of the mapping above
    def set(self, key: str, value: object) -> None:
        """nano's ``Set``: ``session[key] = value``."""
        self[key] = value

    def remove(self, key: str) -> None:
        """nano's ``Remove``: drop ``key`` (missing is fine)."""
        self.pop(key)

    def has_key(self, key: str) -> bool:
        """nano's ``HasKey``: ``key in session``."""
        return key in self

    def value(self, key: str) -> Any:
        """nano's ``Value``: ``session.get(key)`` (None when missing)."""
        return self.get(key)

    def _typed(self, key: str, kind: type[T], zero: T) -> T:
        # nano's typed getters: the zero value when missing or of another type (no conversion)
        value = self._data.get(key)
        return value if type(value) is kind else zero

    def get_int(self, key: str) -> int:
        """nano's ``Int``: the value if it is exactly an int, else 0 (no conversion)."""
        return self._typed(key, int, 0)

    def get_float(self, key: str) -> float:
        """nano's ``Float64``: the value if it is exactly a float, else 0.0."""
        return self._typed(key, float, 0.0)

    def get_str(self, key: str) -> str:
        """nano's ``String``: the value if it is exactly a str, else ""."""
        return self._typed(key, str, "")

    def get_bool(self, key: str) -> bool:
        """The value if it is exactly a bool, else False (nano has no such getter)."""
        return self._typed(key, bool, False)

    def get_bytes(self, key: str) -> bytes:
        """The value if it is exactly bytes, else b""."""
        return self._typed(key, bytes, b"")

    def state(self) -> dict[str, Any]:
        """A copy of the session's data (nano returns its live map)."""
        return dict(self._data)

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the data with a copy of ``state`` (for a reconnecting client)."""
        self._data = dict(state)

    def clear(self) -> None:
        """Unbind the uid and drop all data."""
        self.uid = 0
        self._data.clear()
