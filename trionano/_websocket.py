"""WebSocket transport (trio-websocket), sharing its port with static files as nano does.

Each accepted connection's HTTP request head is read here (h11): an ``Upgrade: websocket``
request to the configured path becomes a trio-websocket connection (the bytes already read
are replayed to it), then an agent; a plain ``GET`` is answered from the static directory, if
any. Inbound, binary and text messages both feed the packet stream (a packet may span
messages; a message may hold several). Outbound, the agent's writer hands over whole packets
only, and each ``send_all`` is one message: JS clients cannot reassemble a split packet.
"""

from __future__ import annotations

import logging
import mimetypes
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import h11
import trio
import trio_websocket

from ._listen import ConnectionHandler, accept_forever, open_listeners

__all__ = ["BROWSER_CLIENT", "OriginCheck", "WebSocketEndpoint", "WebSocketStream"]

#: trionano's browser client (an ES module), for serving beside a page: see examples/chat.
BROWSER_CLIENT: Final = Path(__file__).resolve().parent / "js" / "trionano.js"

_logger = logging.getLogger("trionano.websocket")
_MAX_HEAD: Final = 16 * 1024
OriginCheck = Callable[[str | None], bool]


class ReplayStream(trio.abc.Stream):
    """A stream that first gives back ``prefix`` (bytes already read from ``stream``), then
    steps aside: its methods become the underlying stream's own (one layer less per call)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self.send_all = stream.send_all  # type: ignore[method-assign]
        self.wait_send_all_might_not_block = stream.wait_send_all_might_not_block  # type: ignore[method-assign]
        self.aclose = stream.aclose  # type: ignore[method-assign]
        if not prefix:
            self.receive_some = stream.receive_some  # type: ignore[method-assign]

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        n = len(self._prefix) if max_bytes is None else max_bytes
        data, self._prefix = self._prefix[:n], self._prefix[n:]
        if not self._prefix:
            self.receive_some = self._stream.receive_some  # type: ignore[method-assign]
        await trio.lowlevel.checkpoint()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


class WebSocketStream(trio.abc.Stream):
    """A trio-websocket connection as a byte stream: what an agent (or the client) reads
    and writes. Text messages are taken as their UTF-8 bytes. ``aclose`` sends a close frame
    with code 1000 (normal closure) and waits for the peer's; trio-websocket itself closes
    with 1007 for invalid UTF-8 text and 1009 for a message over ``max_message_size``."""

    def __init__(self, connection: trio_websocket.WebSocketConnection) -> None:
        self.connection = connection

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            message = await self.connection.get_message()
        except trio_websocket.ConnectionClosed:
            return b""
        return message.encode() if isinstance(message, str) else message

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.connection.send_message(bytes(data))
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError("the WebSocket is closed") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self.connection.aclose()


async def _read_head(stream: trio.abc.Stream) -> tuple[h11.Request | None, bytes]:
    """The request head and every byte read so far (None: not HTTP, or closed early)."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    raw = bytearray()
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            return None, bytes(raw)
        if isinstance(event, h11.Request):
            return event, bytes(raw)
        if event is not h11.NEED_DATA:
            return None, bytes(raw)
        data = await stream.receive_some(_MAX_HEAD)
        if not data:
            return None, bytes(raw)
        raw += data
        parser.receive_data(bytes(data))


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _respond(stream: trio.abc.Stream, status: int, body: bytes, content_type: str, head_only: bool) -> None:
    conn = h11.Connection(h11.SERVER)
    # h11 writes a response to a request it has seen (HEAD: headers only)
    conn.receive_data(b"%s / HTTP/1.1\r\nHost: x\r\n\r\n" % (b"HEAD" if head_only else b"GET"))
    conn.next_event()
    headers = [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("connection", "close"),
        ("cache-control", "no-cache"),
    ]
    data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    if not head_only:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


@attrs.define(eq=False)
class WebSocketEndpoint:
    """WebSocket on ``path`` (nano's default ``/``); WSS with ``ssl_context``.

    ``check_origin(origin)`` may refuse a browser's ``Origin`` (403, the handshake fails); by
    default every origin is accepted, as nano's. ``static_dir`` serves plain GETs for files
    under it on the same port (``/`` is ``index.html``); ``static_files`` maps extra URL paths
    to files. ``handshake_timeout`` bounds how long a connection may take to say what it
    wants (nano never reaps a silent WebSocket).
    """

    host: str | None = None
    port: int = 0
    path: str = "/"
    ssl_context: ssl.SSLContext | None = None
    check_origin: OriginCheck | None = None
    static_dir: Path | None = None
    static_files: dict[str, Path] = attrs.field(factory=dict)
    handshake_timeout: float = 10.0

    max_message_size: int = 4 * 64 * 1024 + 64
    _listeners: list[trio.abc.Listener[Any]] = attrs.field(factory=list, init=False)

    async def start(self, handle: ConnectionHandler, nursery: trio.Nursery) -> int:
        self._listeners, port = await open_listeners(self.host, self.port, self.ssl_context)

        async def serve(stream: trio.abc.Stream, address: str) -> None:
            await self._serve(stream, address, handle)

        for listener in self._listeners:
            nursery.start_soon(accept_forever, listener, serve, nursery)
        return port

    async def aclose(self) -> None:
        for listener in self._listeners:
            await listener.aclose()

    async def _serve(self, stream: trio.abc.Stream, address: str, handle: ConnectionHandler) -> None:
        async with stream:
            try:
                upgrade = None
                with trio.move_on_after(self.handshake_timeout):  # too slow to say what it wants: closed
                    upgrade = await self._route(stream)
                if upgrade is not None:
                    raw, origin = upgrade
                    await self._websocket(stream, raw, address, handle, origin)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _route(self, stream: trio.abc.Stream) -> tuple[bytes, str | None] | None:
        """Answer what is not a WebSocket upgrade to our path; for an upgrade, return the bytes
        read so far and the Origin header."""
        request, raw = await _read_head(stream)
        if request is None:
            return None
        if (_header(request, b"upgrade") or "").lower() != "websocket":
            await self._static(stream, request)
            return None
        if request.target.decode("latin-1").split("?", 1)[0] != self.path:
            await _respond(stream, 404, b"no WebSocket here\n", "text/plain", False)
            return None
        return raw, _header(request, b"origin")

    async def _websocket(
        self, stream: trio.abc.Stream, raw: bytes, address: str, handle: ConnectionHandler, origin: str | None
    ) -> None:
        async with trio.open_nursery() as ws_nursery:
            request = await trio_websocket.wrap_server_stream(
                ws_nursery,
                ReplayStream(stream, raw),
                message_queue_size=64,  # its reader parses ahead; the agent takes messages in batches
                max_message_size=self.max_message_size,
                receive_buffer_size=65536,
            )
            if self.check_origin is not None and not self.check_origin(origin):
                _logger.info("WebSocket from origin %r refused", origin)
                await request.reject(403, body=b"origin not allowed\n")
                ws_nursery.cancel_scope.cancel()
                return
            connection = await request.accept()
            await handle(WebSocketStream(connection), address)
            ws_nursery.cancel_scope.cancel()

    async def _static(self, stream: trio.abc.Stream, request: h11.Request) -> None:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("latin-1").split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            await _respond(stream, 405, b"method not allowed\n", "text/plain", False)
            return
        path = self._resolve(target)
        if path is None:
            await _respond(stream, 404, b"not found\n", "text/plain", method == "HEAD")
            return
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix in (".js", ".mjs"):
            content_type = "text/javascript"
        body = await trio.Path(path).read_bytes()
        await _respond(stream, 200, body, content_type, method == "HEAD")

    def _resolve(self, target: str) -> Path | None:
        if target in self.static_files:
            return self.static_files[target]
        if self.static_dir is None:
            return None
        root = self.static_dir.resolve()
        relative = target.lstrip("/") or "index.html"
        candidate = (root / relative).resolve()
        if candidate.is_dir():
            candidate = candidate / "index.html"
        if root not in candidate.parents or not candidate.is_file():  # no escaping the root
            return None
        return candidate
