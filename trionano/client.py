"""A Trio client for trionano and nano servers: for tests, bots and load generators.

::

    async with open_client("127.0.0.1", port) as client:
        answer = await client.request("room.join", {})
        await client.notify("room.message", {"name": "bot", "content": "hi"})
        news = await client.receive_push("onMessage")

Resource handling: :func:`open_client` owns a reader task and a heartbeat task; leaving the
block closes the connection. Error handling: a Kick raises :class:`~trionano.Kicked` (with the
server's reason) from every pending and later call; a closed or silent connection (no packet
for :data:`~trionano.wire.TIMEOUT_INTERVALS` heartbeat intervals) raises
``trio.BrokenResourceError``; a refused handshake raises
:class:`~trionano.HandshakeRejected` with the server's code.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import betterproto
import trio
import trio_websocket

from . import wire
from ._errors import HandshakeRejected, Kicked, ResponseError
from ._util import open_nursery_around
from ._websocket import WebSocketStream

__all__ = ["Client", "open_client", "open_stream_client", "open_websocket_client"]

_logger = logging.getLogger("trionano.client")
_HEARTBEAT: Final = wire.Heartbeat()
Decoder = Callable[[bytes], Any]


def encode_body(value: object) -> bytes:
    """bytes as they are, betterproto messages as protobuf, anything else (attrs classes and
    dataclasses included, enums as their values) as compact JSON. Raises TypeError for a value
    JSON cannot hold."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, betterproto.Message):
        return bytes(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_record).encode()


def _record(value: object) -> object:
    if attrs.has(type(value)):
        return attrs.asdict(value, value_serializer=lambda _, __, v: v.value if isinstance(v, enum.Enum) else v)  # type: ignore[arg-type]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def decode_json(body: bytes) -> Any:
    """JSON, or the raw bytes when the body is not JSON or nests too deeply for Python to
    read (an empty body is None)."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return body


class _Pending:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: bytes | BaseException = b""


def _raise_error_response(body: bytes) -> None:
    if not body.startswith(b'{"code":'):
        return
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return
    if isinstance(value, dict) and value.keys() == {"code", "message"}:
        code, message = value["code"], value["message"]
        if type(code) is int and code != 0 and isinstance(message, str):
            raise ResponseError(code, message)


class Client:
    """A connected, handshaken client. Made by :func:`open_client`. ``check`` is the
    default of :meth:`request`'s (raise error Responses as ResponseError); set it any time."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        decode: Decoder = decode_json,
        push_backlog: int = 10_000,
        max_body: int = wire.MAX_BODY_SIZE,
        check: bool = False,
    ) -> None:
        self._stream = stream
        self.check = check
        self.conn = wire.Connection(wire.Role.CLIENT, max_body=max_body, now=trio.current_time())
        self._decode = decode
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._sending: set[trio.CancelScope] = set()  # the writes under way (_send)
        self._pushes: dict[str, deque[bytes]] = {}
        self._push_arrived = trio.Event()
        self._push_backlog = push_backlog
        self._callbacks: dict[str, list[Callable[[Any], None]]] = {}
        self._any_callbacks: list[Callable[[str, Any], None]] = []
        self._send_lock = trio.StrictFIFOLock()
        self._handshake_done = trio.Event()
        self.handshake: wire.HandshakeResponse | None = None
        self.error: BaseException | None = None  # why the connection ended
        self.dropped_pushes = 0
        self.heartbeats_received = 0

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        """Write ``data`` (one caller at a time). Once the connection is over (a Kick, a lost
        connection), a write waiting for the lock or for the server to read is given up at
        once (:meth:`_fail` cancels it) and raises why it ended; a write that went through
        returns, even if the connection ended meanwhile (the next call says why)."""
        self._raise_if_closed()
        with trio.CancelScope() as scope:
            self._sending.add(scope)
            try:
                async with self._send_lock:
                    self._raise_if_closed()
                    try:
                        await self._stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        self._fail(trio.BrokenResourceError(f"connection lost: {exc}"))
                        raise self.error from None  # type: ignore[misc]
            finally:
                self._sending.discard(scope)
        if scope.cancelled_caught:  # by _fail: the write was given up
            self._raise_if_closed()
        # written: a Kick read meanwhile is for the next call (the server had this message)

    def _raise_if_closed(self) -> None:
        if self.error is not None:
            raise self.error

    async def request(
        self,
        route: str,
        body: object = None,
        *,
        raw: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request deadline, as pitaya-cli and pomelo clients offer
        check: bool | None = None,
    ) -> Any:
        """Send a Request and wait for its Response: decoded (JSON by default), or its bytes
        with ``raw``. ``timeout`` (seconds; None waits as long as the connection lives) bounds
        the wait. With ``check`` (default: the client's ``check``), an error Response, a JSON
        object of exactly ``{"code": <int, not 0>, "message": <str>}`` as trionano answers
        errors, raises :class:`~trionano.ResponseError` instead of being returned. Raises
        Kicked, trio.BrokenResourceError, TimeoutError (no answer in time: a late answer is
        then discarded), ResponseError."""
        self._raise_if_closed()  # Kicked, not the wire's refusal to send on a closed connection
        mid = next(self._ids)
        pending = self._pending[mid] = _Pending()
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                await self._send(self.conn.send(wire.Request(mid, route, encode_body({} if body is None else body))))
                await pending.done.wait()
            if scope.cancelled_caught:
                raise TimeoutError(f"no answer to {route} (request {mid}) within {timeout} s")
        finally:
            self._pending.pop(mid, None)
        if isinstance(pending.result, BaseException):
            raise pending.result
        if self.check if check is None else check:
            _raise_error_response(pending.result)
        return pending.result if raw else self._decode(pending.result)

    async def notify(self, route: str, body: object = None) -> None:
        """Send a Notify. Raises Kicked, trio.BrokenResourceError."""
        self._raise_if_closed()
        await self._send(self.conn.send(wire.Notify(route, encode_body({} if body is None else body))))

    # -- pushes -----------------------------------------------------------------------------

    def on(self, route: str, callback: Callable[[Any], None]) -> None:
        """Call ``callback(decoded body)`` from the reader for every Push on ``route`` (such
        pushes are not queued for :meth:`receive_push`)."""
        self._callbacks.setdefault(route, []).append(callback)

    def on_any(self, callback: Callable[[str, Any], None]) -> None:
        """Call ``callback(route, decoded body)`` from the reader for every Push that no
        :meth:`on` callback takes (such pushes are not queued for :meth:`receive_push`)."""
        self._any_callbacks.append(callback)

    async def receive_push(self, route: str, *, raw: bool = False) -> Any:
        """The next Push on ``route`` (queued since connecting), decoded unless ``raw``.
        Raises Kicked, trio.BrokenResourceError once the connection is over and none is left."""
        while True:
            queue = self._pushes.get(route)
            if queue:
                body = queue.popleft()
                return body if raw else self._decode(body)
            self._raise_if_closed()
            await self._push_arrived.wait()

    def pending_pushes(self, route: str) -> int:
        """How many Pushes on ``route`` are queued for :meth:`receive_push`."""
        return len(self._pushes.get(route, ()))

    # -- receiving --------------------------------------------------------------------------

    async def _reader(self) -> None:
        conn = self.conn
        try:
            while True:
                data = await self._stream.receive_some(65536)
                if not data:
                    raise trio.BrokenResourceError("the server closed the connection")
                conn.receive_data(data, trio.current_time())
                while (event := conn.next_event()) is not None:
                    self._on_event(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError, wire.RemoteProtocolError) as exc:
            self._fail(exc if isinstance(exc, trio.BrokenResourceError) else trio.BrokenResourceError(str(exc)))

    def _on_event(self, event: wire.Event) -> None:
        if isinstance(event, wire.Response):
            pending = self._pending.get(event.id)
            if pending is None:
                _logger.warning("response to unknown request id %d dropped", event.id)
                return
            pending.result = event.body
            pending.done.set()
        elif isinstance(event, wire.Push):
            callbacks = self._callbacks.get(event.route)
            if callbacks:
                try:
                    value = self._decode(event.body)
                except (ValueError, TypeError, RecursionError) as exc:  # a bad body must not end the reader
                    _logger.warning("push on %s not decodable, dropped: %s", event.route, exc)
                    return
                for callback in callbacks:
                    callback(value)
                return
            if self._any_callbacks:
                value = self._decode(event.body)
                for any_callback in self._any_callbacks:
                    any_callback(event.route, value)
                return
            queue = self._pushes.setdefault(event.route, deque())
            if len(queue) >= self._push_backlog:
                self.dropped_pushes += 1
                _logger.warning("push backlog of %r full: dropped one (%d so far)", event.route, self.dropped_pushes)
                return
            queue.append(event.body)
            self._push_arrived.set()
            self._push_arrived = trio.Event()
        elif isinstance(event, wire.Heartbeat):
            self.heartbeats_received += 1
        elif isinstance(event, wire.HandshakeResponse):
            self.handshake = event
            self._handshake_done.set()
        elif isinstance(event, wire.Kick):
            self._fail(Kicked(event.reason))

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        for pending in self._pending.values():
            pending.result = self.error
            pending.done.set()
        for scope in self._sending:  # writes waiting on the lock or on a server that stopped reading
            scope.cancel()
        self._push_arrived.set()
        self._handshake_done.set()

    def _ended_by(self, exc: BaseException) -> bool:
        """``exc`` is why the connection ended (what :meth:`_send` raises once it is over)."""
        return exc is self.error

    async def _heartbeats(self) -> None:
        """Heartbeat every interval (libpomelo2's way: pomelo and nano servers accept both);
        give up after TIMEOUT_INTERVALS (2.5) intervals without a packet."""
        conn = self.conn
        while self.error is None:
            now = trio.current_time()
            if now >= conn.timeout_deadline:
                self._fail(trio.BrokenResourceError("heartbeat timeout"))
                return
            if now >= conn.heartbeat_deadline:
                try:
                    await self._send(conn.send(_HEARTBEAT, now))
                except Exception as exc:
                    if not self._ended_by(exc):
                        raise
                    return  # the connection is over: the callers get why from their calls
                continue
            await trio.sleep_until(min(conn.heartbeat_deadline, conn.timeout_deadline))

    async def _handshake(self, user: object) -> None:
        await self._send(self.conn.send(wire.Handshake(type="python-trio", version="trionano", user=user)))
        await self._handshake_done.wait()
        response = self.handshake
        if response is not None and not response.accepted:
            # the refusal and the server's close may arrive together: the refusal is the news
            error = HandshakeRejected(f"handshake refused with code {response.code}", code=response.code)
            self._fail(error)
            raise error
        self._raise_if_closed()
        await self._send(self.conn.send(wire.HandshakeAck()))


@asynccontextmanager
async def open_stream_client(
    stream: trio.abc.Stream,
    *,
    user: object = None,
    handshake_timeout: float = 10.0,
    decode: Decoder = decode_json,
    push_backlog: int = 10_000,
    max_body: int = wire.MAX_BODY_SIZE,
) -> AsyncIterator[Client]:
    """A client over an already-connected stream (any transport); handshakes before yielding.
    ``max_body`` is the largest packet body accepted (a server's ``max_packet_size``).
    Raises HandshakeRejected, trio.TooSlowError (no handshake answer in time),
    trio.BrokenResourceError."""
    client = Client(stream, decode=decode, push_backlog=push_backlog, max_body=max_body)

    def stop(nursery: trio.Nursery) -> None:
        client._fail(trio.ClosedResourceError("the client was closed"))
        nursery.cancel_scope.cancel()

    async with stream, open_nursery_around(stop) as nursery:
        nursery.start_soon(client._reader, name="trionano client reader")
        with trio.fail_after(handshake_timeout):
            await client._handshake(user)
        nursery.start_soon(client._heartbeats, name="trionano client heartbeats")
        yield client


@asynccontextmanager
async def open_client(
    host: str,
    port: int,
    *,
    user: object = None,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = 10.0,
    decode: Decoder = decode_json,
    push_backlog: int = 10_000,
    max_body: int = wire.MAX_BODY_SIZE,
) -> AsyncIterator[Client]:
    """Connect over TCP (TLS with ``ssl_context``), handshake (with ``user`` data), ack, and
    yield the client; heartbeats run while the block does."""
    if ssl_context is not None:
        stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=ssl_context)
    else:
        stream = await trio.open_tcp_stream(host, port)
    async with open_stream_client(
        stream,
        user=user,
        handshake_timeout=handshake_timeout,
        decode=decode,
        push_backlog=push_backlog,
        max_body=max_body,
    ) as client:
        yield client


@asynccontextmanager
async def open_websocket_client(
    url: str,
    *,
    user: object = None,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = 10.0,
    decode: Decoder = decode_json,
    push_backlog: int = 10_000,
    max_body: int = wire.MAX_BODY_SIZE,
) -> AsyncIterator[Client]:
    """Connect to ``ws://host:port/path`` (``wss://`` with ``ssl_context``), handshake, ack,
    and yield the client. Every packet it sends is one WebSocket message. Raises
    trio_websocket.HandshakeError (e.g. ConnectionRejected for a refused origin) as well."""
    async with trio_websocket.open_websocket_url(
        url, ssl_context=ssl_context, max_message_size=4 * max(max_body, wire.MAX_BODY_SIZE) + 64
    ) as connection:
        stream = WebSocketStream(connection)
        async with open_stream_client(
            stream,
            user=user,
            handshake_timeout=handshake_timeout,
            decode=decode,
            push_backlog=push_backlog,
            max_body=max_body,
        ) as client:
            yield client
