"""The sans-IO connection: bytes in, events out; events in, bytes out (h11's shape).

States: nano's agent states (nano.md §3.6) plus ACCEPTED::

    server: START --Handshake--> HANDSHAKE --send(HandshakeResponse 200)--> ACCEPTED --HandshakeAck--> WORKING
    client: START --send(Handshake)--> HANDSHAKE --HandshakeResponse 200--> ACCEPTED --send(HandshakeAck)--> WORKING
    both:   any --RemoteProtocolError / EOF / Kick / refused handshake / close()--> CLOSED

The machine is data: :data:`RECEIVE_TRANSITIONS` and :data:`SEND_TRANSITIONS` say, for each
role and state, which :class:`EventKind` may come in or go out and the state after it; the
Connection consults them for every event, and anything they do not list is a
RemoteProtocolError (received) or a LocalProtocolError (sent).

Differences from nano, all in the direction of pomelo's stricter machine: Data before the
HandshakeAck, an Ack before the server accepted a handshake, and a second Handshake are
RemoteProtocolErrors (nano downgrades Working to Handshake on a re-handshake); a repeated Ack
while working is ignored. A server ignores a Kick from a client, as nano does.

Heartbeats are deadlines, never timers: the caller passes its clock's ``now`` and reads
:attr:`Connection.heartbeat_deadline` (send a Heartbeat then) and
:attr:`Connection.timeout_deadline` (close then: :data:`TIMEOUT_INTERVALS` intervals without a
packet).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

import attrs

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
from ._message import EMPTY_ROUTES, Message, MessageCodec, Notify, Push, Request, Response, RouteDict
from ._packet import MAX_BODY_SIZE, PacketDecoder, PacketType, encode_packet

__all__ = [
    "RECEIVE_TRANSITIONS",
    "SEND_TRANSITIONS",
    "TIMEOUT_INTERVALS",
    "Connection",
    "ConnectionClosed",
    "Event",
    "EventKind",
    "Role",
    "State",
    "event_kind",
]

#: A peer is gone after this many heartbeat intervals without a packet from it. An idle
#: official pomelo JS client answers each server heartbeat one interval after it arrives and
#: ignores heartbeats that arrive while its answer is pending, so the gap between its packets
#: reaches two intervals plus the server's lateness (nano.md §3.4): 2 kicks it, 2.5 leaves the
#: server half an interval to be late. A server that checks every interval/8 closes a silent
#: peer within 2.5..2.625 intervals.
TIMEOUT_INTERVALS: Final = 2.5


@attrs.frozen
class ConnectionClosed:
    """The peer closed its end (the caller passed ``receive_data(b"")``), after every complete
    packet it sent has been handed out. ``pending`` counts the bytes of an unfinished packet it
    left behind (0: it closed cleanly, between packets)."""

    pending: int = 0


Event: TypeAlias = (
    Handshake
    | HandshakeResponse
    | HandshakeAck
    | Heartbeat
    | Kick
    | Request
    | Notify
    | Response
    | Push
    | ConnectionClosed
)


class Role(enum.Enum):
    """Which end of the connection a :class:`Connection` plays."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """nano's statusStart..statusClosed (1..4), plus ACCEPTED (5): the accepting
    HandshakeResponse has gone out (server) or come in (client), the HandshakeAck is pending
    (nano has no such state: it counts as its Handshake). The values are nano's codes, not an
    order: never compare states with ``<``."""

    START = 1
    HANDSHAKE = 2
    WORKING = 3
    CLOSED = 4
    ACCEPTED = 5


class EventKind(enum.Enum):
    """What the transition tables are keyed by: an event class, with a HandshakeResponse split
    by its code, and the peer's EOF. The value is how messages name it."""

    HANDSHAKE = "Handshake"
    HANDSHAKE_ACCEPTED = "HandshakeResponse (accepting)"
    HANDSHAKE_REFUSED = "HandshakeResponse (refusing)"
    HANDSHAKE_ACK = "HandshakeAck"
    HEARTBEAT = "Heartbeat"
    KICK = "Kick"
    REQUEST = "Request"
    NOTIFY = "Notify"
    RESPONSE = "Response"
    PUSH = "Push"
    CONNECTION_CLOSED = "ConnectionClosed"


_KIND_BY_TYPE: Final[Mapping[type, EventKind]] = {
    Handshake: EventKind.HANDSHAKE,
    HandshakeAck: EventKind.HANDSHAKE_ACK,
    Heartbeat: EventKind.HEARTBEAT,
    Kick: EventKind.KICK,
    Request: EventKind.REQUEST,
    Notify: EventKind.NOTIFY,
    Response: EventKind.RESPONSE,
    Push: EventKind.PUSH,
    ConnectionClosed: EventKind.CONNECTION_CLOSED,
}
_MESSAGE_KINDS: Final[Mapping[EventKind, type[Message]]] = {
    EventKind.REQUEST: Request,
    EventKind.NOTIFY: Notify,
    EventKind.RESPONSE: Response,
    EventKind.PUSH: Push,
}


def event_kind(event: Event) -> EventKind:
    """The :class:`EventKind` of ``event``. Raises LocalProtocolError for a non-event."""
    if isinstance(event, HandshakeResponse):
        return EventKind.HANDSHAKE_ACCEPTED if event.accepted else EventKind.HANDSHAKE_REFUSED
    kind = _KIND_BY_TYPE.get(type(event))
    if kind is None:
        raise LocalProtocolError(f"not a wire event: {event!r}")
    return kind


_K = EventKind
_S = State
Transitions: TypeAlias = Mapping[Role, Mapping[State, Mapping[EventKind, "State | None"]]]


def _freeze(table: dict[Role, dict[State, dict[EventKind, State | None]]]) -> Transitions:
    return MappingProxyType(
        {
            role: MappingProxyType({state: MappingProxyType(events) for state, events in states.items()})
            for role, states in table.items()
        }
    )


#: What each role may receive in each state, and the state after it. None: accepted and
#: dropped (:meth:`Connection.next_event` does not return it, the state stays). A kind not
#: listed is a RemoteProtocolError. CLOSED lists nothing: a closed connection reads nothing.
#: Messages never change the state (the Connection's fast paths rely on it).
RECEIVE_TRANSITIONS: Final[Transitions] = _freeze(
    {
        Role.SERVER: {
            _S.START: {
                _K.HANDSHAKE: _S.HANDSHAKE,
                _K.HEARTBEAT: _S.START,
                _K.KICK: None,  # nano accepts and ignores a client's Kick
                _K.CONNECTION_CLOSED: _S.CLOSED,
            },
            _S.HANDSHAKE: {_K.HEARTBEAT: _S.HANDSHAKE, _K.KICK: None, _K.CONNECTION_CLOSED: _S.CLOSED},
            _S.ACCEPTED: {
                _K.HANDSHAKE_ACK: _S.WORKING,
                _K.HEARTBEAT: _S.ACCEPTED,
                _K.KICK: None,
                _K.CONNECTION_CLOSED: _S.CLOSED,
            },
            _S.WORKING: {
                _K.REQUEST: _S.WORKING,
                _K.NOTIFY: _S.WORKING,
                _K.HEARTBEAT: _S.WORKING,
                _K.HANDSHAKE_ACK: None,  # a repeated Ack
                _K.KICK: None,
                _K.CONNECTION_CLOSED: _S.CLOSED,
            },
            _S.CLOSED: {},
        },
        Role.CLIENT: {
            _S.START: {_K.HEARTBEAT: _S.START, _K.KICK: _S.CLOSED, _K.CONNECTION_CLOSED: _S.CLOSED},
            _S.HANDSHAKE: {
                _K.HANDSHAKE_ACCEPTED: _S.ACCEPTED,
                _K.HANDSHAKE_REFUSED: _S.CLOSED,
                _K.HEARTBEAT: _S.HANDSHAKE,
                _K.KICK: _S.CLOSED,
                _K.CONNECTION_CLOSED: _S.CLOSED,
            },
            _S.ACCEPTED: {_K.HEARTBEAT: _S.ACCEPTED, _K.KICK: _S.CLOSED, _K.CONNECTION_CLOSED: _S.CLOSED},
            _S.WORKING: {
                _K.RESPONSE: _S.WORKING,
                _K.PUSH: _S.WORKING,
                _K.HEARTBEAT: _S.WORKING,
                _K.KICK: _S.CLOSED,
                _K.CONNECTION_CLOSED: _S.CLOSED,
            },
            _S.CLOSED: {},
        },
    }
)

#: What each role may send in each state, and the state after it; a kind not listed is a
#: LocalProtocolError. One exception, outside the table: after a RemoteProtocolError, a server
#: may send the Kick of the error's ``event_hint`` once, although it is CLOSED.
SEND_TRANSITIONS: Final[Transitions] = _freeze(
    {
        Role.SERVER: {
            _S.START: {_K.HEARTBEAT: _S.START, _K.KICK: _S.CLOSED},
            _S.HANDSHAKE: {
                _K.HANDSHAKE_ACCEPTED: _S.ACCEPTED,
                _K.HANDSHAKE_REFUSED: _S.CLOSED,
                _K.HEARTBEAT: _S.HANDSHAKE,
                _K.KICK: _S.CLOSED,
            },
            _S.ACCEPTED: {_K.HEARTBEAT: _S.ACCEPTED, _K.KICK: _S.CLOSED},
            _S.WORKING: {
                _K.RESPONSE: _S.WORKING,
                _K.PUSH: _S.WORKING,
                _K.HEARTBEAT: _S.WORKING,
                _K.KICK: _S.CLOSED,
            },
            _S.CLOSED: {},
        },
        Role.CLIENT: {
            _S.START: {_K.HANDSHAKE: _S.HANDSHAKE, _K.HEARTBEAT: _S.START},
            _S.HANDSHAKE: {_K.HEARTBEAT: _S.HANDSHAKE},
            _S.ACCEPTED: {_K.HANDSHAKE_ACK: _S.WORKING, _K.HEARTBEAT: _S.ACCEPTED},
            _S.WORKING: {_K.REQUEST: _S.WORKING, _K.NOTIFY: _S.WORKING, _K.HEARTBEAT: _S.WORKING},
            _S.CLOSED: {},
        },
    }
)


def _message_classes(table: Transitions) -> Mapping[Role, Mapping[State, frozenset[type[Message]]]]:
    # The message classes each state lets through, for the per-message fast paths (a class's
    # hash is its identity: cheaper than hashing an Enum member).
    return {
        role: {
            state: frozenset(cls for kind, cls in _MESSAGE_KINDS.items() if kind in events)
            for state, events in states.items()
        }
        for role, states in table.items()
    }


_DATA_IN: Final = _message_classes(RECEIVE_TRANSITIONS)
_DATA_OUT: Final = _message_classes(SEND_TRANSITIONS)
_CONTROL_KINDS: Final[Mapping[PacketType, EventKind]] = {
    PacketType.HEARTBEAT: EventKind.HEARTBEAT,
    PacketType.HANDSHAKE_ACK: EventKind.HANDSHAKE_ACK,
    PacketType.KICK: EventKind.KICK,
}

# The texts these errors have always had, which logs and kick reasons are matched against.
_REASONS: Final[Mapping[tuple[Role, EventKind], str]] = {
    (Role.SERVER, EventKind.HANDSHAKE): "handshake received twice",
    (Role.SERVER, EventKind.HANDSHAKE_ACK): "handshake ack before the handshake was accepted",
    (Role.CLIENT, EventKind.HANDSHAKE_ACCEPTED): "unexpected handshake response",
    (Role.CLIENT, EventKind.HANDSHAKE_REFUSED): "unexpected handshake response",
    (Role.CLIENT, EventKind.HANDSHAKE_ACK): "a server does not send a handshake ack",
}

_HEARTBEAT_PACKET: Final = encode_packet(PacketType.HEARTBEAT)
_ACK_PACKET: Final = encode_packet(PacketType.HANDSHAKE_ACK)
_HEARTBEAT: Final = Heartbeat()
_ACK: Final = HandshakeAck()
_DATA: Final = PacketType.DATA
_CLOSED: Final = State.CLOSED
_DATA_BYTE: Final = int(PacketType.DATA)
_MAX_MESSAGE_ID: Final = (1 << 64) - 1


class Connection:
    """One end of one pomelo connection. Owned by a single task (not thread- or task-safe).

    ``heartbeat`` is the interval in seconds (0 disables heartbeats; else
    :data:`MIN_HEARTBEAT`..:data:`MAX_HEARTBEAT`): a server announces its own; a client adopts
    the server's from the HandshakeResponse. ``codec`` (else one built from ``routes`` and
    ``max_body``) encodes and decodes messages. ``now`` is the caller's clock when the
    connection began.

    Error handling: :meth:`next_event` raises RemoteProtocolError for anything the peer may not
    send (the state becomes CLOSED; a server's error carries the Kick to send in
    ``event_hint``); the ``send*`` methods raise LocalProtocolError for an event the role or
    state does not allow, or that cannot be encoded (nothing is emitted, the state is
    unchanged).
    """

    __slots__ = (
        "_data_in",
        "_data_out",
        "_decoder",
        "_eof",
        "_error_kick",
        "_now",
        "_receive",
        "_send",
        "_state",
        "codec",
        "heartbeat",
        "last_heartbeat_sent",
        "last_received",
        "role",
    )

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
        self.heartbeat = heartbeat if role is Role.SERVER else 0.0
        # A server passes its one codec to every connection, sharing its encoding caches.
        self.codec = codec if codec is not None else MessageCodec(routes, max_body=max_body)
        self._decoder = PacketDecoder(max_body=self.codec.max_body)
        self._eof = False  # the peer closed; ConnectionClosed comes once its packets are out
        self._error_kick: Kick | None = None  # the one Kick a server may send once CLOSED
        self._now = now
        self.last_received = now
        self.last_heartbeat_sent = now
        self._enter(State.START)

    def _enter(self, state: State) -> None:
        role = self.role
        self._state = state
        self._receive = RECEIVE_TRANSITIONS[role][state]
        self._send = SEND_TRANSITIONS[role][state]
        self._data_in = _DATA_IN[role][state]
        self._data_out = _DATA_OUT[role][state]

    @property
    def state(self) -> State:
        """The current :class:`State`; it changes only through events and :meth:`close`."""
        return self._state

    # -- deadlines -------------------------------------------------------------------------

    @property
    def heartbeat_deadline(self) -> float:
        """When the next Heartbeat is due (inf: none). A server heartbeats from the start, as
        nano does; a client once the handshake is accepted."""
        if not self.heartbeat or self._state is _CLOSED:
            return math.inf
        return self.last_heartbeat_sent + self.heartbeat

    @property
    def timeout_deadline(self) -> float:
        """When the peer counts as gone: :data:`TIMEOUT_INTERVALS` intervals after its last
        packet (inf: never)."""
        if not self.heartbeat or self._state is _CLOSED:
            return math.inf
        return self.last_received + TIMEOUT_INTERVALS * self.heartbeat

    # -- receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Buffer received bytes; ``now`` stamps the packets they complete. ``b""`` means the
        peer closed: :meth:`next_event` returns :class:`ConnectionClosed` after the packets
        already received. Ignored once CLOSED. Raises LocalProtocolError for data after EOF."""
        if self._state is _CLOSED:
            return
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after the peer closed")
        self._now = now
        self._decoder.feed(data)

    def receive_requests(self, data: bytes | bytearray | memoryview, now: float) -> list[tuple[int, str, bytes]] | None:
        """:meth:`receive_data` and :meth:`next_event` fused for the common case: a WORKING
        server with nothing buffered receives ``data`` holding only whole Data packets, each a
        Request with an uncompressed route. Returns their ``(id, route, body)`` in order, or
        None, having taken nothing (then feed ``data`` to :meth:`receive_data` as usual): for
        anything else (a partial packet, another packet or message type, a compressed route,
        anything malformed, end of file), so the general path decides, errors included. Never
        raises."""
        if not data or type(data) is not bytes or Request not in self._data_in or self._eof or self._decoder.buffered:
            return None
        requests = []
        max_body = self.codec.max_body
        n = len(data)
        pos = 0
        while pos < n:
            if n - pos < 6 or data[pos] != _DATA_BYTE:  # 6: a header, a flag and an id at least
                return None
            end = pos + 4 + (data[pos + 1] << 16 | data[pos + 2] << 8 | data[pos + 3])
            if end > n or end - pos - 4 > max_body or data[pos + 4]:  # flag 0: a Request, route uncompressed
                return None
            offset = pos + 5
            mid = data[offset]
            offset += 1
            if mid >= 0x80:  # a varint of more bytes
                mid &= 0x7F
                shift = 7
                while True:
                    if offset >= end or shift > 63:
                        return None
                    b = data[offset]
                    offset += 1
                    mid |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                if mid > _MAX_MESSAGE_ID:
                    return None
            if offset >= end:
                return None
            route_end = offset + 1 + data[offset]
            if route_end > end:
                return None
            try:
                route = data[offset + 1 : route_end].decode()
            except UnicodeDecodeError:
                return None
            requests.append((mid, route, data[route_end:end]))
            pos = end
        self._now = self.last_received = now
        return requests

    def next_event(self) -> Event | None:
        """The next event, or None until more data arrives (and for ever once CLOSED).
        Raises RemoteProtocolError."""
        next_raw = self._decoder.next_raw
        while self._state is not _CLOSED:
            try:
                raw = next_raw()
                if raw is None:
                    return self._closed_by_peer() if self._eof else None
                self.last_received = self._now
                ptype, body = raw
                if ptype is _DATA:  # the hot path: the table, precomputed for this state
                    allowed = self._data_in
                    if not allowed:
                        raise RemoteProtocolError("receive data on socket which not yet ACK")
                    message = self.codec.decode(body)
                    if type(message) in allowed:
                        return message
                    raise RemoteProtocolError(
                        f"wrong message type: a {self.role.value} cannot receive {message.type.name}"
                    )
                event = self._on_control(ptype, body)
            except RemoteProtocolError as exc:
                self._fail(exc)
                raise
            if event is not None:
                return event
        return None

    def _closed_by_peer(self) -> ConnectionClosed:
        self._enter(self._receive.get(EventKind.CONNECTION_CLOSED) or _CLOSED)
        return ConnectionClosed(self._decoder.buffered)

    def _fail(self, exc: RemoteProtocolError) -> None:
        data_out = self._data_out
        self._enter(_CLOSED)
        if self.role is Role.SERVER:
            exc.event_hint = self._error_kick = Kick(f"protocol error: {exc}")
            # the answers to what the peer sent before its error may still go out, until the Kick
            self._data_out = data_out

    def _on_control(self, ptype: PacketType, body: bytes) -> Event | None:
        table = self._receive
        event: Event
        if ptype is PacketType.HANDSHAKE and self.role is Role.CLIENT:
            if EventKind.HANDSHAKE_ACCEPTED not in table and EventKind.HANDSHAKE_REFUSED not in table:
                raise self._unexpected(EventKind.HANDSHAKE_ACCEPTED, "HandshakeResponse")
            event = HandshakeResponse.parse(body)
            kind = EventKind.HANDSHAKE_ACCEPTED if event.accepted else EventKind.HANDSHAKE_REFUSED
            if kind not in table:
                raise self._unexpected(kind)
        else:
            kind = EventKind.HANDSHAKE if ptype is PacketType.HANDSHAKE else _CONTROL_KINDS[ptype]
            if kind not in table:
                raise self._unexpected(kind)
            if table[kind] is None:
                return None
            if kind is EventKind.HEARTBEAT:
                event = _HEARTBEAT
            elif kind is EventKind.HANDSHAKE_ACK:
                event = _ACK
            elif kind is EventKind.KICK:
                event = Kick.parse(body)
            else:
                event = Handshake.parse(body)
        after = table[kind]
        if after is None:
            return None
        if kind is EventKind.HANDSHAKE_ACCEPTED:
            assert isinstance(event, HandshakeResponse)
            self.heartbeat = event.heartbeat
            self.last_heartbeat_sent = self._now
            if event.dictionary is not None:
                self.codec = MessageCodec(event.dictionary, max_body=self.codec.max_body)
        if after is not self._state:
            self._enter(after)
        return event

    def _unexpected(self, kind: EventKind, name: str | None = None) -> RemoteProtocolError:
        peer = "client" if self.role is Role.SERVER else "server"
        what = f"{name or kind.value} from the {peer} in state {self._state.name}"
        reason = _REASONS.get((self.role, kind))
        return RemoteProtocolError(f"{reason} (a {what})" if reason else f"unexpected {what}")

    # -- sending ---------------------------------------------------------------------------

    def send(self, event: Event, now: float | None = None) -> bytes:
        """The bytes for ``event``; hand them to the transport in order. ``now`` stamps a
        Heartbeat (required for one). Raises LocalProtocolError."""
        if type(event) in self._data_out:  # a message this state lets out: the common case
            return self.codec.packet(event)  # type: ignore[arg-type]
        kind = event_kind(event)
        state = self._state
        after = self._send.get(kind)
        if after is None:
            if state is _CLOSED and isinstance(event, Kick) and event == self._error_kick:
                self._error_kick = None
                self._data_out = frozenset()
                return encode_packet(PacketType.KICK, event.encode(), max_body=self.codec.max_body)
            raise self._refused(kind)
        if isinstance(event, (Request, Notify, Response, Push)):
            data = self.codec.packet(event)
        elif kind is EventKind.HEARTBEAT:
            if now is None:
                raise LocalProtocolError("sending a heartbeat needs the current time")
            self.last_heartbeat_sent = now
            data = _HEARTBEAT_PACKET
        elif kind is EventKind.HANDSHAKE_ACK:
            data = _ACK_PACKET
        elif isinstance(event, Kick):
            data = encode_packet(PacketType.KICK, event.encode(), max_body=self.codec.max_body)
        elif isinstance(event, (Handshake, HandshakeResponse)):
            data = encode_packet(PacketType.HANDSHAKE, event.encode(), max_body=self.codec.max_body)
        else:  # not in any table
            raise self._refused(kind)
        if after is not state:
            self._enter(after)
        return data

    @property
    def can_send_data(self) -> bool:
        """Whether Pushes and Responses may be sent now (a server WORKING, or answering after
        a client's protocol error until its Kick). When true, the ``send_*`` fast paths raise
        LocalProtocolError only for a packet that is too large."""
        return bool(self._data_out)

    def send_push(self, route: str, body: bytes) -> bytes:
        """``send(Push(route, body))`` without building the event: the whole Data packet.
        Raises LocalProtocolError unless a Push may be sent now (a server, WORKING), or when
        the packet is too large."""
        if Push not in self._data_out:
            raise self._refused(EventKind.PUSH)
        return self.codec.push_packet(route, body)

    def send_response(self, mid: int, body: bytes) -> bytes:
        """``send(Response(mid, body))`` without building the event: the whole Data packet.
        Raises LocalProtocolError unless a Response may be sent now (a server, WORKING), or
        when the packet is too large."""
        if Response not in self._data_out:
            raise self._refused(EventKind.RESPONSE)
        return self.codec.response_packet(mid, body)

    def send_encoded(self, packet: bytes) -> bytes:
        """Check that Data may be sent now and return ``packet`` itself: a whole Data packet
        encoded once for many connections (a broadcast) by the same codec configuration.
        Nothing else is checked. Raises LocalProtocolError unless WORKING."""
        if not self._data_out:
            raise self._refused(EventKind.PUSH)
        return packet

    def _refused(self, kind: EventKind) -> LocalProtocolError:
        if self._state is _CLOSED:
            return LocalProtocolError(f"cannot send {kind.value}: connection is closed")
        return LocalProtocolError(f"a {self.role.value} cannot send {kind.value} in state {self._state.name}")

    def close(self) -> None:
        """Mark the connection closed (the caller closes the transport). Idempotent. A server
        may still send the Kick of a RemoteProtocolError's ``event_hint``.

        After a RemoteProtocolError a server may also go on sending Pushes and Responses (the
        answers to what the peer sent before its error) until it sends that Kick or calls
        :meth:`close`."""
        self._enter(_CLOSED)
