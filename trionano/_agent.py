"""The agent: one client connection. Its task reads; one writer task owns the stream.

::

    Server._serve_connection  (a task in the server's connections nursery)
    └── Agent.run: nursery
        ├── reader: this task — receive, decode every complete packet, run the state machine,
        │           dispatch messages to the scheduler (waiting when it is full)
        └── writer: drain the outbox, join everything queued into one send_all

Everything that sends to the client (handlers, broadcasts, the heartbeat sweeper, the reader's
handshake answer) puts whole packets on the outbox with ``send_nowait``: nothing waits for a
client, and FIFO order needs no lock. A full outbox is the server's slow-consumer policy.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Final

import trio

from ._errors import HandshakeRejected
from ._pipeline import PipelineMessage
from ._session import Session
from .wire import (
    CODE_OK,
    CODE_SERVER_ERROR,
    Connection,
    Handshake,
    HandshakeAck,
    HandshakeResponse,
    Heartbeat,
    Kick,
    MessageType,
    Notify,
    PacketType,
    RemoteProtocolError,
    Request,
    Role,
    State,
    encode_packet,
)

if TYPE_CHECKING:
    from ._server import Server

__all__ = ["Agent"]

#: The writer joins queued packets up to about this many bytes per send_all.
_MAX_BATCH: Final = 256 * 1024
_HEARTBEAT: Final = Heartbeat()


class Agent:
    """A connection's reader, writer and outbox; the :class:`~trionano.Session`'s network
    entity. Owned by its server; never constructed by users."""

    __slots__ = (
        "_drops",
        "_final",
        "_finished",
        "_reader_scope",
        "_receive",
        "_send",
        "_server",
        "_stream",
        "_writer_scope",
        "closed",
        "conn",
        "remote_address",
        "session",
    )

    def __init__(self, server: Server, stream: trio.abc.Stream, remote_address: str, session_id: int) -> None:
        config = server.config
        self._server = server
        self._stream = stream
        self.remote_address: Final = remote_address
        self.conn = Connection(Role.SERVER, heartbeat=config.heartbeat, codec=server.codec, now=trio.current_time())
        self._send, self._receive = trio.open_memory_channel[bytes](config.outbox_size)
        self.closed = False  # no more messages are accepted
        self._final: bytes | None = None  # a Kick, written after the outbox drains
        self._finished = False  # the closing sequence has begun
        self._reader_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        self._drops = 0
        self.session: Final = Session._create(server, self, session_id)

    # -- life -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until either side closes it. Never raises for the peer's
        misbehaviour: protocol errors are kicked, transport errors end the connection."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery.cancel_scope, name=f"trionano writer {self.remote_address}")
                reason = None
                with self._reader_scope:
                    reason = await self._reader()
                if reason is None:
                    self._finish(None, discard=False)  # the peer hung up: flush what is queued, briefly
                elif not self._finished:
                    # Kick from the main lane, behind the requests decoded before the error,
                    # so their responses go out first; reading has stopped already.
                    try:
                        await self._server.scheduler.push(lambda: self.kick(reason))
                    except trio.ClosedResourceError:
                        self.kick(reason)
        finally:
            self.closed = True
            self.conn.close()
            await trio.aclose_forcefully(self._stream)
            self._server._agent_closed(self)

    async def _reader(self) -> str | None:
        """Read until the peer hangs up (None) or breaks the protocol (the Kick reason)."""
        conn = self.conn
        receive_some = self._stream.receive_some
        read_size = self._server.config.read_size
        dispatch = self._server._dispatch
        session = self.session
        current_time = trio.current_time
        try:
            while True:
                data = await receive_some(read_size)
                if not data:
                    return None
                conn.receive_data(data, current_time())
                while True:
                    event = conn.next_event()
                    if event is None:
                        break
                    if type(event) is Request or type(event) is Notify:
                        pending = dispatch(session, event)
                        if pending is not None:
                            lane, task = pending
                            if lane is None:  # forwarded to another cluster node
                                await task()  # type: ignore[misc]
                            else:  # the lane is full: wait for room
                                await lane.push(task)
                    elif type(event) is Handshake:
                        await self._handshake(event)
                    elif type(event) is HandshakeAck:
                        self._server._logger.debug("session %d working, remote=%s", session.id, self.remote_address)
        except RemoteProtocolError as exc:
            self._server.stats.protocol_errors += 1
            self._server._logger.info("protocol error from %s: %s; kicking", self.remote_address, exc)
            return f"protocol error: {exc}"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None  # reset by peer, or closed under us

    async def _handshake(self, handshake: Handshake) -> None:
        server = self._server
        code = CODE_OK
        validator = server.config.handshake_validator
        if validator is not None:
            try:
                result = validator(self.session, handshake)
                if inspect.isawaitable(result):
                    await result
            except HandshakeRejected as exc:
                code = exc.code
                server._logger.info("handshake from %s rejected: %s", self.remote_address, exc)
            except Exception:
                code = CODE_SERVER_ERROR
                server._logger.exception("handshake validator failed for %s", self.remote_address)
        if code != CODE_OK:
            self._enqueue(self.conn.send(HandshakeResponse(code=code)))
            self._finish(None, discard=False)
            self._reader_scope.cancel()
            return
        self._enqueue(self.conn.send(server._handshake_response()))

    async def _writer(self, agent_scope: trio.CancelScope) -> None:
        receive = self._receive
        write = self._stream.send_all
        try:
            with self._writer_scope:
                while True:
                    try:
                        data = receive.receive_nowait()
                    except trio.WouldBlock:
                        try:
                            data = await receive.receive()
                        except trio.EndOfChannel:
                            break
                    except trio.EndOfChannel:
                        break
                    try:
                        more = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        pass
                    else:
                        batch = [data, more]
                        size = len(data) + len(more)
                        while size < _MAX_BATCH:
                            try:
                                more = receive.receive_nowait()
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                            batch.append(more)
                            size += len(more)
                        data = b"".join(batch)
                    await write(data)
                if self._final is not None:
                    await write(self._final)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer is gone
        finally:
            self.closed = True
            agent_scope.cancel()

    # -- sending (the NetworkEntity protocol) -----------------------------------------------

    def _enqueue(self, packet: bytes) -> bool:
        try:
            self._send.send_nowait(packet)
        except trio.WouldBlock:
            return self._server._slow_consumer(self)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._server.stats.dropped_closed += 1
            return False
        return True

    def send_push(self, session: Session, route: str, body: bytes, packet: bytes | None = None) -> bool:
        """Queue a Push (``packet``: its already-encoded bytes, shared by a broadcast).
        Returns whether it was queued. Raises trio.BrokenResourceError once closed."""
        if self.closed:
            raise trio.BrokenResourceError("broken low-level pipe")
        server = self._server
        if server._outbound_funcs:
            message = PipelineMessage(MessageType.PUSH, route, body)
            if not server._run_outbound(session, message):
                return False
            if message.data is not body:
                body, packet = message.data, None
        if packet is None:
            packet = server.codec.push_packet(route, body)
            server.stats.encoded += 1
        try:  # _enqueue, inlined: this is every broadcast's per-member step
            self._send.send_nowait(packet)
        except trio.WouldBlock:
            return server._slow_consumer(self)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            server.stats.dropped_closed += 1
            return False
        return True

    def send_response(self, session: Session, mid: int, body: bytes) -> bool:
        """Queue a Response to request ``mid``. Raises trio.BrokenResourceError once closed."""
        if self.closed:
            raise trio.BrokenResourceError("broken low-level pipe")
        server = self._server
        if server._outbound_funcs:
            message = PipelineMessage(MessageType.RESPONSE, "", body, mid)
            if not server._run_outbound(session, message):
                return False
            body = message.data
        server.stats.encoded += 1
        return self._enqueue(server.codec.response_packet(mid, body))

    def send_heartbeat(self, now: float) -> None:
        if self.conn.state is not State.CLOSED and not self.closed:
            self._enqueue(self.conn.send(_HEARTBEAT, now))

    def kick(self, reason: str, *, discard: bool = False) -> None:
        """Send a Kick with ``reason`` after what is queued (or instead of it, ``discard``),
        then close. Idempotent."""
        if self._finished:
            return
        # encoded here, not through self.conn: after a protocol error the wire state is
        # already CLOSED, and the peer should still learn why
        self.conn.close()
        self._finish(encode_packet(PacketType.KICK, Kick(reason).encode()), discard=discard)

    def close(self) -> None:
        """Close after flushing what is queued (within ``close_timeout``). Idempotent."""
        self._finish(None, discard=False)

    def _finish(self, final: bytes | None, *, discard: bool) -> None:
        if self._finished:
            return
        self._finished = True
        self.closed = True
        self._final = final
        self._send.close()
        if discard:
            while True:
                try:
                    self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._server.stats.dropped_slow += 1
        self._reader_scope.cancel()
        self._writer_scope.deadline = min(
            self._writer_scope.deadline, trio.current_time() + self._server.config.close_timeout
        )

    def count_drop(self) -> int:
        """Count one dropped message for this connection; returns the running total."""
        self._drops += 1
        return self._drops
