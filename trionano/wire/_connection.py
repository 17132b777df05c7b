"""The sans-IO connection: bytes in, events out; events in, bytes out (h11's shape).

States (nano's agent states, nano.md §3.6)::

    server: START --Handshake--> HANDSHAKE --send(HandshakeResponse 200)-- ack --> WORKING
    client: START --send(Handshake)--> HANDSHAKE --HandshakeResponse 200-- send(HandshakeAck) --> WORKING
    both:   any --error / Kick / refused handshake / close()--> CLOSED

Differences from nano, all in the direction of pomelo's stricter machine: Data before the
HandshakeAck, an Ack before the server accepted a handshake, and a second Handshake are
RemoteProtocolErrors (nano downgrades Working to Handshake on a re-handshake); a repeated Ack
while working is ignored. A server ignores a Kick from a client, as nano does.

Heartbeats are deadlines, never timers: the caller passes its clock's ``now`` and reads
:attr:`Connection.heartbeat_deadline` (send a Heartbeat then) and
:attr:`Connection.timeout_deadline` (close then: twice the interval without a packet).
"""

from __future__ import annotations

import enum
import math
from typing import Final, TypeAlias

from ._errors import LocalProtocolError, RemoteProtocolError
from ._handshake import (
    MAX_HEARTBEAT,
    MIN_HEARTBEAT,
    Handshake,
    HandshakeAck,
    HandshakeResponse,
    Heartbeat,
    Kick,
    check_heartbeat,
)
from ._message import EMPTY_ROUTES, MessageCodec, Notify, Push, Request, Response, RouteDict
from ._packet import MAX_BODY_SIZE, PacketDecoder, PacketType, encode_packet

__all__ = ["Connection", "Event", "Role", "State"]

Event: TypeAlias = Handshake | HandshakeResponse | HandshakeAck | Heartbeat | Kick | Request | Notify | Response | Push

_HEARTBEAT_PACKET: Final = encode_packet(PacketType.HEARTBEAT)
_ACK_PACKET: Final = encode_packet(PacketType.HANDSHAKE_ACK)
_HEARTBEAT: Final = Heartbeat()
_ACK: Final = HandshakeAck()


class Role(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    # nano's statusStart..statusClosed
    START = 1
    HANDSHAKE = 2
    WORKING = 3
    CLOSED = 4


class Connection:
    """One end of one pomelo connection. Owned by a single task (not thread- or task-safe).

    ``heartbeat`` is the interval in seconds (0 disables heartbeats): a server announces its
    own; a client adopts the server's from the HandshakeResponse. ``codec`` (else one built from
    ``routes`` and ``max_body``) encodes and decodes messages. ``now`` is the caller's clock
    when the connection began.

    Error handling: :meth:`next_event` raises RemoteProtocolError for anything the peer may not
    send (the state becomes CLOSED); :meth:`send` raises LocalProtocolError for an event the
    role or state does not allow (nothing is emitted, the state is unchanged).
    """

    def __init__(
        self,
        role: Role,
        *,
        heartbeat: float = 30.0,
        routes: RouteDict = EMPTY_ROUTES,
        max_body: int = MAX_BODY_SIZE,
        codec: MessageCodec | None = None,
        now: float = 0.0,
    ) -> None:
        if check_heartbeat(heartbeat) is None:
            raise LocalProtocolError(
                f"heartbeat must be 0 or {MIN_HEARTBEAT}..{MAX_HEARTBEAT} seconds, not {heartbeat!r}"
            )
        self.role: Final = role
        self.state = State.START
        self.heartbeat = heartbeat if role is Role.SERVER else 0.0
        # A server passes its one codec to every connection, sharing its encoding caches.
        self.codec = codec if codec is not None else MessageCodec(routes, max_body=max_body)
        self._decoder = PacketDecoder(max_body=self.codec.max_body)
        self._accepted = False  # the accepting HandshakeResponse has gone out (server) / come in (client)
        self._now = now
        self.last_received = now
        self.last_heartbeat_sent = now

    # -- deadlines -------------------------------------------------------------------------

    @property
    def heartbeat_deadline(self) -> float:
        """When the next Heartbeat is due (inf: none). A server heartbeats from the start, as
        nano does; a client once the handshake is accepted."""
        if not self.heartbeat or self.state is State.CLOSED:
            return math.inf
        return self.last_heartbeat_sent + self.heartbeat

    @property
    def timeout_deadline(self) -> float:
        """When the peer counts as gone: twice the interval after its last packet (inf: never)."""
        if not self.heartbeat or self.state is State.CLOSED:
            return math.inf
        return self.last_received + 2 * self.heartbeat

    # -- receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Buffer received bytes; ``now`` stamps the packets they complete. Ignored once closed."""
        if self.state is not State.CLOSED:
            self._now = now
            self._decoder.feed(data)

    def next_event(self) -> Event | None:
        """The next event, or None until more data arrives. Raises RemoteProtocolError."""
        while self.state is not State.CLOSED:
            try:
                raw = self._decoder.next_raw()
                if raw is None:
                    return None
                self.last_received = self._now
                event = self._on_packet(raw[0], raw[1])
            except RemoteProtocolError:
                self.state = State.CLOSED
                raise
            if event is not None:
                return event
        return None

    def _on_packet(self, ptype: PacketType, body: bytes) -> Event | None:
        state = self.state
        if ptype is PacketType.DATA:
            if state is not State.WORKING:
                raise RemoteProtocolError("receive data on socket which not yet ACK")
            message = self.codec.decode(body)
            kind = type(message)
            if self.role is Role.SERVER:
                if kind is Request or kind is Notify:
                    return message
            elif kind is Response or kind is Push:
                return message
            raise RemoteProtocolError(f"wrong message type: a {self.role.value} cannot receive {message.type.name}")
        if ptype is PacketType.HEARTBEAT:
            return _HEARTBEAT
        if self.role is Role.SERVER:
            return self._server_control(ptype, body)
        return self._client_control(ptype, body)

    def _server_control(self, ptype: PacketType, body: bytes) -> Event | None:
        if ptype is PacketType.HANDSHAKE:
            if self.state is not State.START:
                raise RemoteProtocolError("handshake received twice")
            event = Handshake.parse(body)
            self.state = State.HANDSHAKE
            return event
        if ptype is PacketType.HANDSHAKE_ACK:
            if self.state is State.WORKING:
                return None
            if not self._accepted:
                raise RemoteProtocolError("handshake ack before the handshake was accepted")
            self.state = State.WORKING
            return _ACK
        return None  # a Kick from a client: accepted and ignored, as nano does

    def _client_control(self, ptype: PacketType, body: bytes) -> Event | None:
        if ptype is PacketType.KICK:
            self.state = State.CLOSED
            return Kick.parse(body)
        if ptype is PacketType.HANDSHAKE:
            if self.state is not State.HANDSHAKE or self._accepted:
                raise RemoteProtocolError("unexpected handshake response")
            response = HandshakeResponse.parse(body)
            if not response.accepted:
                self.state = State.CLOSED
                return response
            self._accepted = True
            self.heartbeat = response.heartbeat
            self.last_heartbeat_sent = self._now
            if response.dictionary is not None:
                self.codec = MessageCodec(response.dictionary, max_body=self.codec.max_body)
            return response
        raise RemoteProtocolError("a server does not send a handshake ack")

    # -- sending ---------------------------------------------------------------------------

    def send(self, event: Event, now: float | None = None) -> bytes:
        """The bytes for ``event``; hand them to the transport in order. ``now`` stamps a
        Heartbeat (required for one). Raises LocalProtocolError."""
        if self.state is State.CLOSED:
            raise LocalProtocolError("connection is closed")
        if isinstance(event, Heartbeat):
            if now is None:
                raise LocalProtocolError("sending a heartbeat needs the current time")
            self.last_heartbeat_sent = now
            return _HEARTBEAT_PACKET
        if self.role is Role.SERVER:
            return self._server_send(event)
        return self._client_send(event)

    def _server_send(self, event: Event) -> bytes:
        if isinstance(event, Push | Response):
            if self.state is not State.WORKING:
                raise LocalProtocolError(f"cannot send {type(event).__name__} before the handshake is acked")
            return self.codec.packet(event)
        if isinstance(event, Kick):
            data = encode_packet(PacketType.KICK, event.encode(), max_body=self.codec.max_body)
            self.state = State.CLOSED
            return data
        if isinstance(event, HandshakeResponse):
            if self.state is not State.HANDSHAKE or self._accepted:
                raise LocalProtocolError("a handshake response answers one handshake request")
            data = encode_packet(PacketType.HANDSHAKE, event.encode(), max_body=self.codec.max_body)
            if event.accepted:
                self._accepted = True
            else:
                self.state = State.CLOSED
            return data
        raise LocalProtocolError(f"a server cannot send {type(event).__name__}")

    def _client_send(self, event: Event) -> bytes:
        if isinstance(event, Request | Notify):
            if self.state is not State.WORKING:
                raise LocalProtocolError(f"cannot send {type(event).__name__} before the handshake is acked")
            return self.codec.packet(event)
        if isinstance(event, Handshake):
            if self.state is not State.START:
                raise LocalProtocolError("handshake already sent")
            data = encode_packet(PacketType.HANDSHAKE, event.encode(), max_body=self.codec.max_body)
            self.state = State.HANDSHAKE
            return data
        if isinstance(event, HandshakeAck):
            if self.state is not State.HANDSHAKE or not self._accepted:
                raise LocalProtocolError("ack only an accepted handshake, once")
            self.state = State.WORKING
            return _ACK_PACKET
        raise LocalProtocolError(f"a client cannot send {type(event).__name__}")

    def close(self) -> None:
        """Mark the connection closed (the caller closes the transport). Idempotent."""
        self.state = State.CLOSED
