"""The connection state machine: every (state, event) pair is legal or a clean ProtocolError."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.wire.strategies import bodies, packet_types
from trionano import wire
from trionano.wire import LocalProtocolError, RemoteProtocolError, Role, State

SERVER_HELLO = wire.HandshakeResponse(heartbeat=10, servertime=1)
CLIENT_HELLO = wire.Handshake(type="test", version="1")
ERR = "error"


def packet(ptype: wire.PacketType, body: bytes = b"") -> bytes:
    return wire.encode_packet(ptype, body)


INCOMING: dict[str, Callable[[Role], bytes]] = {
    "handshake": lambda role: packet(
        wire.PacketType.HANDSHAKE, (CLIENT_HELLO if role is Role.SERVER else SERVER_HELLO).encode()
    ),
    "ack": lambda role: packet(wire.PacketType.HANDSHAKE_ACK),
    "heartbeat": lambda role: packet(wire.PacketType.HEARTBEAT),
    "request": lambda role: wire.MessageCodec().request_packet(1, "a.b", b"{}"),
    "push": lambda role: wire.MessageCodec().push_packet("a", b"{}"),
    "kick": lambda role: packet(wire.PacketType.KICK, wire.Kick("bye").encode()),
}


def connection_in(role: Role, state: str) -> wire.Connection:
    """A connection brought to ``state`` through the legal path."""
    conn = wire.Connection(role, heartbeat=10)
    steps = ["start", "handshake", "accepted", "working"]
    for step in steps[1 : steps.index(state) + 1] if state != "closed" else steps[1:]:
        if role is Role.SERVER:
            if step == "handshake":
                conn.receive_data(INCOMING["handshake"](role), now=0)
                assert isinstance(conn.next_event(), wire.Handshake)
            elif step == "accepted":
                conn.send(SERVER_HELLO)
            elif step == "working":
                conn.receive_data(INCOMING["ack"](role), now=0)
                assert isinstance(conn.next_event(), wire.HandshakeAck)
        elif step == "handshake":
            conn.send(CLIENT_HELLO)
        elif step == "accepted":
            conn.receive_data(INCOMING["handshake"](role), now=0)
            assert isinstance(conn.next_event(), wire.HandshakeResponse)
        elif step == "working":
            conn.send(wire.HandshakeAck())
    if state == "closed":
        conn.close()
    return conn


# What a server / client makes of each incoming packet in each state: the event class, None
# (accepted, nothing to report) or ERR (RemoteProtocolError, the connection is closed).
RECEIVE_TABLE: dict[Role, dict[str, dict[str, object]]] = {
    Role.SERVER: {
        #            handshake         ack                 heartbeat       request       push  kick
        "start": dict(handshake=wire.Handshake, ack=ERR, heartbeat=wire.Heartbeat, request=ERR, push=ERR, kick=None),
        "handshake": dict(handshake=ERR, ack=ERR, heartbeat=wire.Heartbeat, request=ERR, push=ERR, kick=None),
        "accepted": dict(
            handshake=ERR, ack=wire.HandshakeAck, heartbeat=wire.Heartbeat, request=ERR, push=ERR, kick=None
        ),
        "working": dict(handshake=ERR, ack=None, heartbeat=wire.Heartbeat, request=wire.Request, push=ERR, kick=None),
        "closed": dict(handshake=None, ack=None, heartbeat=None, request=None, push=None, kick=None),
    },
    Role.CLIENT: {
        "start": dict(handshake=ERR, ack=ERR, heartbeat=wire.Heartbeat, request=ERR, push=ERR, kick=wire.Kick),
        "handshake": dict(
            handshake=wire.HandshakeResponse, ack=ERR, heartbeat=wire.Heartbeat, request=ERR, push=ERR, kick=wire.Kick
        ),
        "accepted": dict(handshake=ERR, ack=ERR, heartbeat=wire.Heartbeat, request=ERR, push=ERR, kick=wire.Kick),
        "working": dict(handshake=ERR, ack=ERR, heartbeat=wire.Heartbeat, request=ERR, push=wire.Push, kick=wire.Kick),
        "closed": dict(handshake=None, ack=None, heartbeat=None, request=None, push=None, kick=None),
    },
}

OUTGOING: dict[str, wire.Event] = {
    "handshake": CLIENT_HELLO,
    "response_ok": SERVER_HELLO,
    "response_refused": wire.HandshakeResponse(code=wire.CODE_SERVER_ERROR),
    "ack": wire.HandshakeAck(),
    "heartbeat": wire.Heartbeat(),
    "request": wire.Request(1, "a.b", b"{}"),
    "notify": wire.Notify("a.b", b"{}"),
    "response": wire.Response(1, b"{}"),
    "push": wire.Push("a", b"{}"),
    "kick": wire.Kick("bye"),
}
# Which events each role may send in each state (anything else: LocalProtocolError), and the state after.
SEND_TABLE: dict[Role, dict[str, dict[str, State]]] = {
    Role.SERVER: {
        "start": {"heartbeat": State.START, "kick": State.CLOSED},
        "handshake": {
            "response_ok": State.HANDSHAKE,
            "response_refused": State.CLOSED,
            "heartbeat": State.HANDSHAKE,
            "kick": State.CLOSED,
        },
        "accepted": {"heartbeat": State.HANDSHAKE, "kick": State.CLOSED},
        "working": {"heartbeat": State.WORKING, "response": State.WORKING, "push": State.WORKING, "kick": State.CLOSED},
        "closed": {},
    },
    Role.CLIENT: {
        "start": {"handshake": State.HANDSHAKE, "heartbeat": State.START},
        "handshake": {"heartbeat": State.HANDSHAKE},
        "accepted": {"ack": State.WORKING, "heartbeat": State.HANDSHAKE},
        "working": {"heartbeat": State.WORKING, "request": State.WORKING, "notify": State.WORKING},
        "closed": {},
    },
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", ["start", "handshake", "accepted", "working", "closed"])
@pytest.mark.parametrize("incoming", list(INCOMING))
def test_receive_table(role: Role, state: str, incoming: str) -> None:
    conn = connection_in(role, state)
    expected = RECEIVE_TABLE[role][state][incoming]
    conn.receive_data(INCOMING[incoming](role), now=1)
    if expected == ERR:
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
        assert conn.state is State.CLOSED
        return
    event = conn.next_event()
    if expected is None:
        assert event is None
    else:
        assert isinstance(event, expected)  # type: ignore[arg-type]
    assert conn.next_event() is None


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", ["start", "handshake", "accepted", "working", "closed"])
@pytest.mark.parametrize("outgoing", list(OUTGOING))
def test_send_table(role: Role, state: str, outgoing: str) -> None:
    conn = connection_in(role, state)
    before = conn.state
    after = SEND_TABLE[role][state].get(outgoing)
    if after is None:
        with pytest.raises(LocalProtocolError):
            conn.send(OUTGOING[outgoing], now=1)
        assert conn.state is before
    else:
        data = conn.send(OUTGOING[outgoing], now=1)
        assert 1 <= data[0] <= 5
        assert conn.state is after


def test_data_before_ack_closes_with_nanos_text() -> None:
    conn = connection_in(Role.SERVER, "accepted")
    conn.receive_data(INCOMING["request"](Role.SERVER), now=0)
    with pytest.raises(RemoteProtocolError, match="not yet ACK"):
        conn.next_event()


def test_packets_before_a_bad_header_are_delivered_first() -> None:
    conn = connection_in(Role.SERVER, "working")
    conn.receive_data(INCOMING["heartbeat"](Role.SERVER) + INCOMING["request"](Role.SERVER) + b"\x07\x00\x00\x00", 0)
    assert isinstance(conn.next_event(), wire.Heartbeat)
    assert isinstance(conn.next_event(), wire.Request)
    with pytest.raises(RemoteProtocolError, match="wrong packet type"):
        conn.next_event()


def test_client_adopts_dictionary_and_heartbeat_from_the_handshake() -> None:
    routes = wire.RouteDict({"room.join": 1, "onMessage": 2})
    server = wire.Connection(Role.SERVER, heartbeat=5, routes=routes)
    client = wire.Connection(Role.CLIENT)
    server.receive_data(client.send(CLIENT_HELLO), now=0)
    assert isinstance(server.next_event(), wire.Handshake)
    client.receive_data(server.send(wire.HandshakeResponse(heartbeat=5, dictionary=routes)), now=0)
    response = client.next_event()
    assert isinstance(response, wire.HandshakeResponse)
    assert client.heartbeat == 5
    server.receive_data(client.send(wire.HandshakeAck()), now=0)
    assert isinstance(server.next_event(), wire.HandshakeAck)
    request = client.send(wire.Request(2, "room.join", b"{}"))
    assert request == bytes.fromhex("04000006010200017b7d")  # compressed, as in vectors.json
    server.receive_data(request, now=0)
    assert server.next_event() == wire.Request(2, "room.join", b"{}")
    client.receive_data(server.send(wire.Push("onMessage", b"{}")), now=0)
    assert client.next_event() == wire.Push("onMessage", b"{}")


def test_refused_handshake_closes_both_sides() -> None:
    server = connection_in(Role.SERVER, "handshake")
    client = connection_in(Role.CLIENT, "handshake")
    client.receive_data(server.send(wire.HandshakeResponse(code=wire.CODE_VERSION_MISMATCH)), now=0)
    assert server.state is State.CLOSED
    response = client.next_event()
    assert isinstance(response, wire.HandshakeResponse)
    assert response.code == 501
    assert client.state is State.CLOSED


def test_heartbeat_deadlines_follow_the_callers_clock() -> None:
    conn = wire.Connection(Role.SERVER, heartbeat=30, now=100)
    assert conn.heartbeat_deadline == 130  # a server heartbeats from accept, as nano
    assert conn.timeout_deadline == 160  # 2x the interval of silence
    conn.send(wire.Heartbeat(), now=130)
    assert conn.heartbeat_deadline == 160
    conn.receive_data(INCOMING["heartbeat"](Role.SERVER), now=150)
    assert conn.timeout_deadline == 160  # bytes alone are not a packet yet
    assert conn.next_event() == wire.Heartbeat()
    assert conn.timeout_deadline == 210
    conn.receive_data(b"\x03\x00", now=200)  # half a packet does not count as life
    assert conn.next_event() is None
    assert conn.timeout_deadline == 210
    conn.close()
    assert conn.heartbeat_deadline == conn.timeout_deadline == math.inf


def test_no_heartbeat_means_no_deadlines() -> None:
    conn = wire.Connection(Role.SERVER, heartbeat=0)
    assert conn.heartbeat_deadline == conn.timeout_deadline == math.inf
    client = wire.Connection(Role.CLIENT)
    assert client.heartbeat_deadline == math.inf  # until a server announces its interval
    with pytest.raises(LocalProtocolError):
        wire.Connection(Role.SERVER, heartbeat=-1)
    with pytest.raises(LocalProtocolError):
        client.send(wire.Heartbeat())  # a heartbeat is stamped with the caller's clock


class ConnectionMachine(RuleBasedStateMachine):
    """Random interleavings of sends and receives, legal and not, for both roles: only
    ProtocolErrors come out; a RemoteProtocolError closes, a LocalProtocolError changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.server = wire.Connection(Role.SERVER, heartbeat=1)
        self.client = wire.Connection(Role.CLIENT)
        self.now = 0.0

    def _receive(self, conn: wire.Connection, data: bytes) -> None:
        self.now += 0.25
        conn.receive_data(data, now=self.now)
        try:
            while conn.next_event() is not None:
                pass
        except RemoteProtocolError:
            assert conn.state is State.CLOSED

    def _send(self, conn: wire.Connection, peer: wire.Connection, event: wire.Event) -> None:
        before = conn.state
        try:
            data = conn.send(event, now=self.now)
        except LocalProtocolError:
            assert conn.state is before
            return
        self._receive(peer, data)

    @rule(name=st.sampled_from(list(OUTGOING)), to_server=st.booleans())
    def send_event(self, name: str, to_server: bool) -> None:
        if to_server:
            self._send(self.client, self.server, OUTGOING[name])
        else:
            self._send(self.server, self.client, OUTGOING[name])

    @rule(ptype=packet_types, body=bodies, to_server=st.booleans())
    def receive_packet(self, ptype: wire.PacketType, body: bytes, to_server: bool) -> None:
        self._receive(self.server if to_server else self.client, packet(ptype, body))

    @rule(data=st.binary(max_size=40), to_server=st.booleans())
    def receive_garbage(self, data: bytes, to_server: bool) -> None:
        self._receive(self.server if to_server else self.client, data)

    @invariant()
    def deadlines_are_sane(self) -> None:
        for conn in (self.server, self.client):
            assert conn.timeout_deadline >= conn.last_received
            assert conn.state in State


TestConnectionMachine = ConnectionMachine.TestCase
