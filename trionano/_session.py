"""Sessions: one per client connection, the handle handlers use to answer, push and store."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Generic, NoReturn, Protocol, TypeVar, overload

import trio

from ._errors import SessionError

if TYPE_CHECKING:
    from ._server import Server

__all__ = ["NetworkEntity", "Session", "SessionKey"]

T = TypeVar("T")
D = TypeVar("D")


class Call:
    """The handler call in progress: which request it answers (``mid``, 0 for a Notify) and
    whether it has answered yet. Set per call in a context variable, so ``session.response()``
    answers the right request even after the handler awaited (nano answers whichever request
    came last), and a client may reuse an id once its answer arrived."""

    __slots__ = ("answered", "mid")

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.answered = False


current_call: contextvars.ContextVar[Call | None] = contextvars.ContextVar("trionano_current_call", default=None)


class SessionKey(Generic[T]):
    """A typed key for per-session data: ``ROOM = SessionKey[Room]("room")``;
    ``session[ROOM] = room`` and ``session[ROOM]`` are checked by mypy."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name: Final = name

    def __repr__(self) -> str:
        return f"SessionKey({self.name!r})"


class NetworkEntity(Protocol):
    """Where a session's messages go: a local connection's agent (or, in a cluster, a gate)."""

    @property
    def closed(self) -> bool: ...

    @property
    def remote_address(self) -> str: ...

    def send_push(self, session: Session, route: str, body: bytes, packet: bytes | None = None) -> bool: ...

    def send_response(self, session: Session, mid: int, body: bytes) -> bool: ...

    def kick(self, reason: str) -> None: ...

    def close(self) -> None: ...


class _NoPublicConstructor(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no public constructor")

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


class Session(metaclass=_NoPublicConstructor):
    """A client's session. Made by the server when a connection opens; dropped everywhere when
    it closes (nano leaks them, #118). Not safe to share across servers.

    Error handling: ``push``/``response`` on a closed session raise ``trio.BrokenResourceError``
    (nano's ``broken low-level pipe``); a full outbox never raises or waits: the server's
    slow-consumer policy applies, and the drop is counted and logged.
    """

    __slots__ = ("__weakref__", "_data", "_entity", "_server", "id", "uid")

    def __init__(self, server: Server, entity: NetworkEntity, id: int) -> None:
        self.id: Final = id  # unique per server, < 2^53 so JS reads it exactly
        self.uid = 0
        self._server = server
        self._entity = entity
        self._data: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Session id={self.id} uid={self.uid} {self.remote_address}>"

    # -- identity ---------------------------------------------------------------------------

    def bind(self, uid: int) -> None:
        """Bind a user id. Raises SessionError (``illegal uid``) for uid < 1."""
        if uid < 1:
            raise SessionError("illegal uid")
        self.uid = uid

    @property
    def remote_address(self) -> str:
        return self._entity.remote_address

    @property
    def closed(self) -> bool:
        return self._entity.closed

    @property
    def server(self) -> Server:
        return self._server

    @property
    def last_mid(self) -> int:
        """The id of the Request being handled (0 in a Notify handler or outside handlers)."""
        call = current_call.get()
        return call.mid if call is not None else 0

    # -- messaging --------------------------------------------------------------------------

    def push(self, route: str, value: object) -> bool:
        """Serialize ``value`` and queue it as a Push. Returns False if it was dropped (slow
        consumer). Raises trio.BrokenResourceError if closed, SerializeError."""
        if self._entity.closed:
            raise trio.BrokenResourceError("broken low-level pipe")
        return self._entity.send_push(self, route, self._server.serializer.marshal(value))

    def response(self, value: object, *, mid: int | None = None) -> bool:
        """Answer the Request being handled, or the one whose id is ``mid`` (capture
        ``session.last_mid`` to answer later). Raises SessionError (``current session working
        on notify mode``) when there is no request to answer, trio.BrokenResourceError if
        closed, SerializeError."""
        call = current_call.get()
        if mid is None:
            mid = call.mid if call is not None else 0
        if mid <= 0:
            raise SessionError("current session working on notify mode")
        if self._entity.closed:
            raise trio.BrokenResourceError("broken low-level pipe")
        if call is not None and call.mid == mid:
            call.answered = True
        return self._entity.send_response(self, mid, self._server.serializer.marshal(value))

    def rpc(self, route: str, value: object) -> None:
        """Call ``route`` on the cluster member that hosts its service, without waiting (nano's
        ``session.RPC``); that member's pushes and responses reach this session's client.
        Raises RuntimeError outside a cluster, LookupError when no member hosts the service,
        SerializeError."""
        remote = self._server._remote
        if remote is None:
            raise RuntimeError("session.rpc needs a cluster node (trionano.cluster)")
        remote.rpc(self, route, self._server.serializer.marshal(value))

    def kick(self, reason: str = "") -> None:
        """Send a Kick with ``reason`` (pomelo's ``{"reason": ...}``), then close. Idempotent."""
        self._entity.kick(reason)

    def close(self) -> None:
        """Close the connection without a Kick. Idempotent; close hooks run once."""
        self._entity.close()

    # -- data -------------------------------------------------------------------------------

    @overload
    def __getitem__(self, key: SessionKey[T]) -> T: ...
    @overload
    def __getitem__(self, key: str) -> Any: ...
    def __getitem__(self, key: SessionKey[Any] | str) -> Any:
        return self._data[key if isinstance(key, str) else key.name]

    def __setitem__(self, key: SessionKey[T] | str, value: T) -> None:
        self._data[key if isinstance(key, str) else key.name] = value

    def __delitem__(self, key: SessionKey[Any] | str) -> None:
        del self._data[key if isinstance(key, str) else key.name]

    def __contains__(self, key: SessionKey[Any] | str) -> bool:
        return (key if isinstance(key, str) else key.name) in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    @overload
    def get(self, key: SessionKey[T]) -> T | None: ...
    @overload
    def get(self, key: SessionKey[T], default: D) -> T | D: ...
    @overload
    def get(self, key: str, default: Any = None) -> Any: ...
    def get(self, key: SessionKey[Any] | str, default: Any = None) -> Any:
        return self._data.get(key if isinstance(key, str) else key.name, default)

    # nano's names
    def set(self, key: str, value: object) -> None:
        self._data[key] = value

    def remove(self, key: str) -> None:
        self._data.pop(key, None)

    def has_key(self, key: str) -> bool:
        return key in self._data

    def value(self, key: str) -> Any:
        return self._data.get(key)

    def _typed(self, key: str, kind: type[T], zero: T) -> T:
        # nano's typed getters: the zero value when missing or of another type (no conversion)
        value = self._data.get(key)
        return value if type(value) is kind else zero

    def get_int(self, key: str) -> int:
        return self._typed(key, int, 0)

    def get_float(self, key: str) -> float:
        return self._typed(key, float, 0.0)

    def get_str(self, key: str) -> str:
        return self._typed(key, str, "")

    def get_bool(self, key: str) -> bool:
        return self._typed(key, bool, False)

    def get_bytes(self, key: str) -> bytes:
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
