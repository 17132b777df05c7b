"""WebSocket transport, sharing its port with static files as nano does.

Each accepted connection's HTTP request head is read here (h11): an ``Upgrade: websocket``
request to the configured path is accepted (wsproto's handshake), and the connection becomes a
:class:`WebSocketServerStream`, then an agent; a plain ``GET`` is answered from the static
directory, if any. The server drives websockets' sans-I/O engine itself, in the agent's
reader and writer: a whole single-frame message (what clients send) is read inline, with the
engine's own C unmasking, and every other frame (control frames, fragments, a frame split
across reads, anything malformed) goes to the engine, which also writes the answers (pongs,
close frames); the server's data frames, unmasked binary FIN frames, are framed inline
(bench/websocket.py measures the path beside both engines: several times cheaper per message
than wsproto's, the engine the server drove first); trio-websocket serves the client side
(:class:`WebSocketStream`). Inbound, binary and text messages both feed the packet stream (a
packet may span messages; a message may hold several). Outbound, the agent's writer hands over
whole packets only, and each ``send_all`` (or ``send_all_parts``) is one message: JS clients
cannot reassemble a split packet.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import h11
import trio
import trio_websocket
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Protocol, Side, State
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from ._admission import Handshaking
from ._fdstream import Buffer, coalesce, parts_after
from ._listen import ConnectionHandler, accept_forever, flush_while_open, open_listeners, peer_host
from ._log import RateLimitedLog, client_text

try:  # the engine's own unmasking, in C
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

__all__ = ["BROWSER_CLIENT", "OriginCheck", "WebSocketEndpoint", "WebSocketServerStream", "WebSocketStream"]

#: trionano's browser client (an ES module), for serving beside a page: see examples/chat.
BROWSER_CLIENT: Final = Path(__file__).resolve().parent / "js" / "trionano.js"

_logger = logging.getLogger("trionano.websocket")
_MAX_HEAD: Final = 16 * 1024
_READ_SIZE: Final = 65536
#: How long ``aclose`` waits for the peer's close frame after sending its own.
_CLOSE_WAIT: Final = 1.0
#: ... or, when it cannot parse the peer's frames any more, for the peer to send nothing for.
_QUIET: Final = 0.1
#: Bytes of the peer's frames that wait parses, at most: past them (a flood), it waits for quiet.
_CLOSE_PARSE: Final = 65536
_OPEN: Final = State.OPEN
_CLOSE: Final = Opcode.CLOSE
_PING: Final = Opcode.PING
_PONG: Final = Opcode.PONG
_CONT: Final = Opcode.CONT
_TEXT: Final = Opcode.TEXT
OriginCheck = Callable[[str | None], bool]


#: A message this large or larger is written as its header followed by its payload's own
#: buffers (vectored over FdStream; in turns over TLS, small ones joined up to this): a slow
#: client's writer then holds no copy of a broadcast's shared packets; a smaller message is
#: framed into one bytes object.
_COPY_BELOW: Final = 16 * 1024

# a server's binary message as one unmasked FIN frame (RFC 6455 section 5.2): the head by length
_SHORT_HEADS: Final = tuple(bytes((0x80 | Opcode.BINARY, n)) for n in range(126))
_HEAD_16: Final = bytes((0x80 | Opcode.BINARY, 126))
_HEAD_64: Final = bytes((0x80 | Opcode.BINARY, 127))


def _binary_head(n: int) -> bytes:
    """The header of a server's binary message of ``n`` bytes (unmasked, FIN)."""
    if n < 126:
        return _SHORT_HEADS[n]
    if n < 1 << 16:
        return _HEAD_16 + n.to_bytes(2, "big")
    return _HEAD_64 + n.to_bytes(8, "big")


def _binary_frame(data: bytes | bytearray | memoryview) -> bytes:
    """``data`` framed as one binary message by a server (unmasked, FIN): the outbound data
    path, built here rather than by the engine (whose frame objects cost several times more);
    control frames stay the engine's."""
    n = len(data)
    if n < 126:
        return _SHORT_HEADS[n] + data
    if n < 1 << 16:
        return _HEAD_16 + n.to_bytes(2, "big") + data
    return _HEAD_64 + n.to_bytes(8, "big") + data


class _EngineLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets' log for the server's connections: its per-connection INFO ("connection
    closed") dropped, the rest to trionano's WebSocket logger."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        pass


_ENGINE_LOG: Final = _EngineLog(_logger.getChild("frames"), {})


class WebSocketServerStream(trio.abc.Stream):
    """The server side of an accepted WebSocket as a byte stream: the framing of websockets'
    sans-I/O engine (``websockets.protocol.Protocol``) driven directly over the transport, in
    the calling tasks (no task, channel or lock of its own). A whole single-frame message is
    read without the engine (its header inline, its payload unmasked by the engine's
    ``apply_mask``); every other frame is fed to the engine whole and from its first byte,
    so it judges each as it would alone (tests: random sessions cut into random reads).

    Inbound, the payloads of binary and text messages (text as its UTF-8 bytes, checked) make
    the byte stream; a message is handed over once it is whole, so one larger than
    ``max_message_size`` is refused (close 1009) before any of it is read, and every message
    a read completes comes back from one ``receive_some``; a read that completes none (empty
    messages, control frames only, part of a frame) is not the end: reading goes on. Pings are
    answered with pongs, written by the receiver in turn with the sender's messages (a peer
    that pings and never reads stops the receiver at the transport's buffers). Frames that
    carry no payload (pings, pongs, empty messages) may be limited: :meth:`limit_frames`.
    Outbound, each ``send_all`` (or ``send_all_parts``: the parts as one payload) is one binary
    message; over FdStream a large one is written vectored, its header then its payload's own
    buffers, so a client that does not read never has a copy of them kept for it.

    Resource handling: owns ``transport_stream`` and closes it in ``aclose``, which first sends
    a close frame (1000) and waits up to a second for the peer's (callers may bound it
    sooner). One task may receive and one may send at a time (else trio.BusyResourceError);
    the control frames the receiver answers with are written in turn with the sender's
    messages.

    Error handling: ``receive_some`` returns b"" once the peer has closed (its close frame is
    answered), the transport has ended, or the peer has sent what it must not, after a close
    frame saying so: 1002 (protocol error), 1007 (invalid UTF-8 text), 1009 (message too
    big). Raises trio.BrokenResourceError when the transport breaks or (``send_all``) the
    WebSocket is closing, trio.ClosedResourceError after ``aclose``.
    """

    __slots__ = (
        "_answers",
        "_check",
        "_closed",
        "_eof",
        "_framing_failed",
        "_head",
        "_max_size",
        "_nowait",
        "_nowait_parts",
        "_owed",
        "_parts",
        "_pending",
        "_received",
        "_receiving",
        "_rest",
        "_send_parts",
        "_sending",
        "_skipping",
        "_text",
        "_write_turn",
        "_writing",
        "_ws",
        "transport_stream",
    )

    def __init__(self, transport: trio.abc.Stream, *, max_message_size: int, received: bytes = b"") -> None:
        self.transport_stream: Final = transport
        self._ws = Protocol(Side.SERVER, state=_OPEN, max_size=max_message_size, logger=_ENGINE_LOG)
        self._max_size = max_message_size
        self._received = received  # read from the transport past the handshake, not yet parsed
        self._head: bytes | bytearray = b""  # the start of a frame header the last read split
        self._owed = 0  # bytes of the frame being fed to the engine that it has yet to see
        self._skipping = False  # ... or of the control frame being skipped
        self._check: Callable[[], bool] | None = None  # limit_frames's
        self._answers = False  # the engine was fed: it may have frames to send (pong, close)
        self._parts: list[bytes] = []  # the message being received, until it is whole
        self._text = False  # it is a text message: its UTF-8 is checked once whole
        self._pending: bytes | bytearray = b""  # what the last receive_some had no room for
        self._eof = False  # nothing more will be read: the peer closed, or we did
        self._framing_failed = False  # the engine refused a frame: it parses nothing more
        self._closed = False
        self._receiving = False
        self._sending = False
        self._writing = False
        self._write_turn = trio.lowlevel.ParkingLot()
        # the transport's non-blocking write (FdStream's), if it has one
        self._nowait: Callable[[Buffer], int] | None = getattr(transport, "send_some_nowait", None)
        # ... and its vectored writes (FdStream's): a large message is written without a copy
        self._nowait_parts: Callable[[Sequence[Buffer]], int] | None = getattr(transport, "send_parts_nowait", None)
        self._send_parts: Callable[[Sequence[Buffer]], Awaitable[None]] | None = getattr(
            transport, "send_all_parts", None
        )
        if self._send_parts is None or self._nowait_parts is None:  # both, or neither
            self._nowait = self._nowait_parts = self._send_parts = None
        # a message send_parts_nowait left under way: its unsent bytes (a view of the part it
        # stopped in, references to the parts after it)
        self._rest: list[Buffer] | None = None

    def limit_frames(self, check: Callable[[], bool]) -> None:
        """Call ``check()`` for every frame that carries no payload bytes for the stream, as
        its header arrives: a ping or a pong the engine would accept, and an empty binary, text
        or continuation frame (the agent charges them to the connection's rate limit, as it
        does packets: a flood of them costs the server as much as one of packets). Returning
        False refuses the frame: a ping is then not answered (a pong or an empty frame is
        nothing either way). An exception ``check`` raises propagates from ``receive_some``,
        and the stream reads no more (``receive_some`` returns b"" after it; ``aclose`` still
        says goodbye and waits for the peer's close frame, parsing on from the frame checked).
        Not called for whole non-empty messages, the data path. Without it (the default) every
        such frame is accepted."""
        self._check = check

    def _charge(self, check: Callable[[], bool], read: bytes | bytearray, pos: int) -> bool:
        """``check()`` for the frame whose header starts at ``read[pos]``."""
        try:
            return check()
        except BaseException:
            # reading stops at this frame's header: the closing wait (aclose) parses from it
            self._eof = True
            self._owed = 0
            self._skipping = False
            self._received = bytes(read[pos:])
            raise

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._closed:
            raise trio.ClosedResourceError("the WebSocket was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving from this WebSocket")
        self._receiving = True
        try:
            if self._pending:
                data: bytes | bytearray = self._pending
                self._pending = b""
                await trio.lowlevel.checkpoint()
            else:
                # the payloads of the messages the next read(s) complete; b"" at the end
                data = b""
                while not self._eof:
                    read: bytes | bytearray
                    if self._received:
                        read, self._received = self._received, b""
                    else:
                        read = await self.transport_stream.receive_some(_READ_SIZE)
                    if not read:
                        self._eof = True
                        break
                    try:
                        data = self._parse(read)
                    except Exception:  # from limit_frames's check: the answers owed go first
                        if self._answers:
                            await self._answer()
                        raise
                    if self._answers:
                        await self._answer()
                    if data:
                        break
            if max_bytes is not None and len(data) > max_bytes:
                if max_bytes < 1:
                    raise ValueError("max_bytes must be >= 1")
                data, self._pending = data[:max_bytes], data[max_bytes:]
            return data
        finally:
            self._receiving = False

    def _parse(self, read: bytes | bytearray) -> bytes:
        """The payloads of the messages ``read`` completes (b"": none).

        A whole frame that is a whole binary or text message (FIN, no RSV bit, masked, within
        ``max_message_size``) is taken here, outside any message in fragments: its header read
        inline and its payload unmasked by websockets' own ``apply_mask`` (the engine's parser,
        a generator coroutine several levels deep per frame, costs several times more). Every
        other frame (control frames, fragments, anything malformed or too big, and a frame
        this read does not complete) is fed to the engine, byte for byte, until it ends, so
        the engine sees every frame it must judge whole and from its first byte."""
        if self._head:  # a frame header split by the last read
            read = self._head + read
            self._head = b""
        ws = self._ws
        n = len(read)
        pos = 0
        messages: list[bytes] | None = None
        limit = self._max_size
        while pos < n:
            owed = self._owed
            if owed:  # the rest of a frame the engine is parsing (or one skipped)
                take = owed if owed < n - pos else n - pos
                self._owed = owed - take
                pos += take
                if self._skipping:  # a control frame refused or needing no answer: not the engine's
                    self._skipping = self._owed > 0
                    continue
                done = self._engine(read[pos - take : pos])
                if done:
                    messages = [*messages, *done] if messages is not None else done
                if self._eof:
                    break
                continue
            if n - pos < 2:
                self._head = read[pos:]
                break
            head1 = read[pos]
            length = read[pos + 1] & 0x7F
            start = pos + 2
            if length >= 126:
                start = pos + (4 if length == 126 else 10)
                if start > n:
                    self._head = read[pos:]
                    break
                length = int.from_bytes(read[pos + 2 : start], "big")
            end = start + 4 + length
            if (
                (head1 == 0x82 or head1 == 0x81)  # FIN, a binary or text frame: a whole message
                and read[pos + 1] & 0x80  # masked, as a client's must be
                and end <= n
                and length  # an empty message carries no pomelo data: charged below
                and length <= limit
                and ws.current_size is None  # not inside a fragmented message
            ):
                payload = apply_mask(read[start + 4 : end], read[start : start + 4])
                if head1 == 0x81:
                    try:
                        payload.decode()
                    except UnicodeDecodeError:
                        ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8 text")
                        self._framing_failed = self._eof = True
                        self._answers = True
                        break
                if messages is None:
                    messages = [payload]
                else:
                    messages.append(payload)
                pos = end
            else:
                self._owed = end - pos  # the engine's frame (a refused header ends it sooner)
                check = self._check
                if check is not None:
                    if head1 == 0x89 or head1 == 0x8A:  # FIN, a ping or a pong
                        if read[pos + 1] & 0x80 and length <= 125 and length <= limit - (ws.current_size or 0):
                            # one the engine would accept: charged; skipped (the engine's state
                            # is not a control frame's business) unless a ping to answer
                            refused = not self._charge(check, read, pos)
                            self._skipping = refused or head1 == 0x8A
                    elif not length and head1 & 0x70 == 0 and head1 & 0x0F < 3:
                        self._charge(check, read, pos)  # an empty data frame: fed to the engine whatever the verdict
        if messages is None:
            return b""
        return messages[0] if len(messages) == 1 else b"".join(messages)

    def _engine(self, data: bytes | bytearray) -> list[bytes] | None:
        """Feed ``data`` (part of a frame, or its end) to the engine; the payloads of the
        messages it completes."""
        ws = self._ws
        ws.receive_data(data)
        messages: list[bytes] | None = None
        frames: list[Frame] = ws.events_received()  # type: ignore[assignment]  # only frames once open
        for frame in frames:
            opcode = frame.opcode
            if opcode is _CLOSE:  # the peer's: answered by the engine
                self._eof = True
                break
            if opcode is _PING or opcode is _PONG:  # a ping is answered by the engine
                continue
            if opcode is not _CONT:
                self._text = opcode is _TEXT
            payload = bytes(frame.data)
            if not frame.fin:
                self._parts.append(payload)
                continue
            if self._parts:
                self._parts.append(payload)
                payload = b"".join(self._parts)
                self._parts.clear()
            if self._text:
                try:
                    payload.decode()
                except UnicodeDecodeError:
                    ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8 text")
                    self._framing_failed = self._eof = True
                    break
            if messages is None:
                messages = [payload]
            else:
                messages.append(payload)
        if ws.parser_exc is not None:  # a frame refused (1002, 1009): the close is queued
            self._framing_failed = self._eof = True
        self._answers = True
        return messages

    async def _answer(self) -> None:
        """Write what the engine has to say (pongs, close frames)."""
        self._answers = False
        control = self._ws.data_to_send()
        if control:
            await self._write([b"".join(control)])

    def _frame(self, parts: Sequence[Buffer], size: int) -> list[Buffer]:
        """The payload ``parts`` (``size`` bytes in all) framed as one binary message, as the
        buffers to write: for a message of ``_COPY_BELOW`` bytes or more, the frame's header,
        then the parts themselves (not copied: they may be a broadcast's packets, shared by
        every member; a transport without vectored writes, TLS, gets them in turn, small ones
        joined up to ``_COPY_BELOW``); else one bytes object."""
        if size < _COPY_BELOW:
            if len(parts) == 1:
                return [_binary_frame(parts[0])]
            return [b"".join([_binary_head(size), *parts])]
        return [_binary_head(size), *parts]

    def send_some_nowait(self, data: bytes) -> int:
        """Send ``data`` as one binary message without waiting, as far as the transport takes
        it now (the agent's writer tries this before it waits, as over TCP). Returns how many
        bytes of ``data`` went out: all of them, or fewer when the transport's buffer filled;
        then the message is under way, and the next call must be ``send_all`` with the rest of
        ``data`` (it completes the message; the receiver's control frames wait for it). Not a
        checkpoint. Raises trio.WouldBlock (nothing sent: the transport cannot take it now, has
        no non-blocking write, or a control frame is being written), trio.BusyResourceError,
        trio.ClosedResourceError, trio.BrokenResourceError (the WebSocket is closing)."""
        return self.send_parts_nowait((data,))

    def send_parts_nowait(self, parts: Sequence[Buffer]) -> int:
        """:meth:`send_some_nowait` for a message whose payload is ``parts`` one after another
        (not joined: over a transport that writes vectored, FdStream, a message of
        ``_COPY_BELOW`` bytes or more goes out as its frame header followed by the parts
        themselves, and what the transport does not take at once is kept as references to
        them, not as a copy). Returns how many payload bytes went out; when fewer than all,
        the next call must be ``send_all_parts`` with the same ``parts`` and that count.
        Raises what :meth:`send_some_nowait` raises."""
        if self._closed:
            raise trio.ClosedResourceError("the WebSocket was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this WebSocket")
        nowait = self._nowait
        if nowait is None or self._writing:
            raise trio.WouldBlock
        ws = self._ws
        if ws.state is not _OPEN:
            raise trio.BrokenResourceError("the WebSocket is closing")
        size = len(parts[0]) if len(parts) == 1 else sum(map(len, parts))
        frame = self._frame(parts, size)
        try:
            sent = nowait(frame[0]) if len(frame) == 1 else self._nowait_parts(frame)  # type: ignore[misc]
        except trio.WouldBlock:
            sent = 0
        head = len(frame[0]) - size if len(frame) == 1 else len(frame[0])  # the frame header's bytes
        if sent == size + head:
            return size
        # the rest waits for send_all(_parts): the write turn is held so that no control frame
        # lands inside this message's frame
        self._rest = parts_after(frame, sent)
        self._writing = True
        return max(0, sent - head)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.send_all_parts((data,))

    async def send_all_parts(self, parts: Sequence[Buffer], start: int = 0) -> None:
        """Send ``parts`` one after another as one binary message (see
        :meth:`send_parts_nowait`), or, after ``send_parts_nowait`` sent ``start`` bytes of
        them, the rest of that message. Raises ValueError for a ``start`` without a message
        under way, and what ``send_all`` raises."""
        if self._closed:
            raise trio.ClosedResourceError("the WebSocket was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this WebSocket")
        rest = self._rest
        if rest is not None:  # the rest of a message send_parts_nowait began (``parts``' tail)
            self._sending = True
            try:
                await self._send_frame(rest)
            finally:
                self._rest = None
                self._sending = self._writing = False
                if self._write_turn:
                    self._write_turn.unpark()
            return
        if start:
            raise ValueError("no message is under way: nothing to go on from")
        ws = self._ws
        if ws.state is not _OPEN:
            raise trio.BrokenResourceError("the WebSocket is closing")
        frame = self._frame(parts, sum(map(len, parts)))
        self._sending = True
        try:
            await self._write(frame)
        finally:
            self._sending = False

    async def _send_frame(self, frame: list[Buffer]) -> None:
        if len(frame) == 1:
            await self.transport_stream.send_all(frame[0])
        elif self._send_parts is not None:
            await self._send_parts(frame)
        else:  # no vectored writes (TLS): one frame in several writes, none a copy of it all
            for chunk in coalesce(frame, _COPY_BELOW):
                await self.transport_stream.send_all(chunk)

    async def _write(self, frame: list[Buffer]) -> None:
        """Write whole frames: the sender's messages and the receiver's answers take turns."""
        while self._writing:
            await self._write_turn.park()
        self._writing = True
        try:
            await self._send_frame(frame)
        finally:
            self._writing = False
            if self._write_turn:
                self._write_turn.unpark()

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the WebSocket was closed")
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Say goodbye (close 1000, unless a close frame was sent already), wait for the
        peer's close frame, close the transport. Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._check = None  # no frame is charged any more (and the checker, often its owner's method, is let go)
        ws = self._ws
        if self._rest is not None:  # a message left half sent: no clean close frame can follow
            self._rest = None
            self._writing = False
            if self._write_turn:
                self._write_turn.unpark()
            await self.transport_stream.aclose()
            return
        try:
            if ws.state is _OPEN:
                ws.send_close(CloseCode.NORMAL_CLOSURE)
                await self._write([b"".join(ws.data_to_send())])
            # closing the socket with the peer's data unread would reset it, and the peer
            # might lose our close frame: read until its own
            if ws.close_rcvd is None and not self._receiving:
                with trio.move_on_after(_CLOSE_WAIT):
                    await self._await_close()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self.transport_stream.aclose()

    async def _await_close(self) -> None:
        """Read, discarding messages, until the peer's close frame or the end of the transport;
        once the engine has refused a frame (it parses nothing more), or after parsing
        ``_CLOSE_PARSE`` bytes without finding the close (a peer flooding frames costs the
        engine's parsing no more), until the peer goes quiet."""
        ws = self._ws
        receive_some = self.transport_stream.receive_some
        data: bytes | bytearray
        budget = _CLOSE_PARSE
        while True:
            if self._received and not self._framing_failed:  # read, not yet parsed
                data, self._received = self._received, b""
            elif self._framing_failed:
                with trio.move_on_after(_QUIET) as quiet:
                    data = await receive_some(_READ_SIZE)
                if quiet.cancelled_caught:
                    return
            else:
                data = await receive_some(_READ_SIZE)
            if not data:
                return
            if self._framing_failed:
                continue
            if self._skipping:  # the rest of a control frame skipped (limit_frames): not the engine's
                skip = min(self._owed, len(data))
                self._owed -= skip
                self._skipping = self._owed > 0
                data = data[skip:]
                if not data:
                    continue
            if self._head:  # the engine has seen whole frames so far: from a header's start
                data, self._head = self._head + data, b""
            ws.receive_data(data)
            ws.events_received()
            ws.data_to_send()  # pongs to pings after our close: not sent, not kept either
            if ws.close_rcvd is not None:
                return
            budget -= len(data)
            if ws.parser_exc is not None or budget < 0:
                self._framing_failed = True


class WebSocketStream(trio.abc.Stream):
    """A trio-websocket connection as a byte stream: what the client (trionano.client) reads
    and writes; the server side is :class:`WebSocketServerStream`. Text messages are taken as
    their UTF-8 bytes. ``aclose`` sends a close frame with code 1000 (normal closure) and
    waits for the peer's."""

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


async def _read_head(stream: trio.abc.Stream) -> tuple[h11.Request, bytes, bytes] | None:
    """The request head, every byte read so far, and those of them past the head (None: not
    HTTP, or closed early)."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    raw = bytearray()
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            return None
        if isinstance(event, h11.Request):
            return event, bytes(raw), parser.trailing_data[0]
        if event is not h11.NEED_DATA:
            return None
        data = await stream.receive_some(_MAX_HEAD)
        if not data:
            return None
        raw += data
        parser.receive_data(bytes(data))


async def _accept(stream: trio.abc.Stream, raw: bytes) -> bool:
    """Complete the opening handshake of the upgrade request in ``raw`` (the 101 response, or
    400/426 for a request wsproto refuses); whether the WebSocket is open. Bytes in ``raw``
    past the request are not fed to it (wsproto's handshake drops them)."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.receive_data(raw)
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        await stream.send_all(handshake.send(hint if isinstance(hint, RejectConnection) else RejectConnection()))
        return False
    if not any(isinstance(event, Request) for event in handshake.events()):
        return False  # cannot happen: h11 parsed a whole request head from these bytes
    await stream.send_all(handshake.send(AcceptConnection()))
    return True


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

    Until then a connection is not the server's yet (its handshake bounds,
    ``Config.max_handshaking``, start at the upgrade), so the endpoint bounds these itself, as
    :mod:`trionano._admission` does: at most ``max_upgrading`` at once, and
    ``max_upgrading_per_host`` (None: no bound) from one peer (an IPv4 address, an IPv6 /64).
    At a bound the oldest of them (of that peer, or of all) that has been at it a second is
    closed (counted in ``upgrades_evicted``), or else the newcomer is answered ``503`` and
    closed (``upgrades_refused``); both logged, rate-limited.
    """

    host: str | None = None
    port: int = 0
    path: str = "/"
    ssl_context: ssl.SSLContext | None = None
    check_origin: OriginCheck | None = None
    static_dir: Path | None = None
    static_files: dict[str, Path] = attrs.field(factory=dict)
    handshake_timeout: float = 10.0
    max_upgrading: int = 1024
    max_upgrading_per_host: int | None = 128

    max_message_size: int = 4 * 64 * 1024 + 64
    _listeners: list[trio.abc.Listener[Any]] = attrs.field(factory=list, init=False)
    upgrades_refused: int = attrs.field(default=0, init=False)
    upgrades_evicted: int = attrs.field(default=0, init=False)
    _upgrading: Handshaking[trio.CancelScope] = attrs.field(init=False)
    # refused and evicted upgrades, refused origins, the accept loops' capacity errors,
    # rate-limited: its summaries are flushed every second while open, and at aclose
    _log: RateLimitedLog = attrs.field(init=False, factory=lambda: RateLimitedLog(_logger))
    _flushing: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)

    def __attrs_post_init__(self) -> None:
        self._upgrading = Handshaking(self.max_upgrading, self.max_upgrading_per_host)

    async def start(self, handle: ConnectionHandler, nursery: trio.Nursery) -> int:
        """Bind and accept in ``nursery``: each connection's WebSocket handshake (or static
        GET) is read in its own task, then handed to ``handle``. Returns the bound port.
        Raises OSError when it cannot bind."""
        self._listeners, port = await open_listeners(self.host, self.port, self.ssl_context)

        async def serve(stream: trio.abc.Stream, address: str) -> None:
            await self._serve(stream, address, handle)

        for listener in self._listeners:
            nursery.start_soon(functools.partial(accept_forever, listener, serve, nursery, log=self._log))
        self._flushing = trio.CancelScope()
        nursery.start_soon(flush_while_open, self._log, self._flushing)
        return port

    async def aclose(self) -> None:
        """Stop accepting; connections already accepted go on. What its log suppressed
        (refused upgrades, say) is reported now."""
        self._flushing.cancel()
        for listener in self._listeners:
            await listener.aclose()
        self._log.flush()

    async def _serve(self, stream: trio.abc.Stream, address: str, handle: ConnectionHandler) -> None:
        async with stream:
            try:
                host = peer_host(address)
                now = trio.current_time()
                # connections=0 of 1: the bound of connections is the server's, after the upgrade
                room = self._upgrading.make_room(host, now, connections=0, max_connections=1)
                if room.refuse is not None:
                    self.upgrades_refused += 1
                    self._log.warning("upgrade refused", "WebSocket from %s refused: server busy", address)
                    with trio.move_on_after(1.0):
                        await _respond(stream, 503, b"server busy\n", "text/plain", False)
                    return
                for victim in room.evict:
                    self.upgrades_evicted += 1
                    self._log.warning("upgrade evicted", "a connection still in its upgrade closed for %s", address)
                    victim.cancel()
                upgrade = None
                # too slow to say what it wants, or evicted for a newcomer: closed
                scope = trio.CancelScope(deadline=now + self.handshake_timeout)
                self._upgrading.add(scope, host, now)
                try:
                    with scope:
                        upgrade = await self._route(stream)
                finally:
                    self._upgrading.remove(scope)
                if upgrade is not None:
                    ws = WebSocketServerStream(stream, max_message_size=self.max_message_size, received=upgrade)
                    await handle(ws, address)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _route(self, stream: trio.abc.Stream) -> bytes | None:
        """Answer what is not a WebSocket upgrade to our path from an allowed origin; accept an
        upgrade that is: the bytes read past the request (a client need not wait for our
        answer to send its first frames), None when it was not accepted."""
        head = await _read_head(stream)
        if head is None:
            return None
        request, raw, trailing = head
        if (_header(request, b"upgrade") or "").lower() != "websocket":
            await self._static(stream, request)
            return None
        if request.target.decode("latin-1").split("?", 1)[0] != self.path:
            await _respond(stream, 404, b"no WebSocket here\n", "text/plain", False)
            return None
        origin = _header(request, b"origin")
        if self.check_origin is not None and not self.check_origin(origin):
            self._log.info("origin refused", "WebSocket from origin %s refused", client_text(origin or ""))
            await _respond(stream, 403, b"origin not allowed\n", "text/plain", False)
            return None
        return trailing if await _accept(stream, raw) else None

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
