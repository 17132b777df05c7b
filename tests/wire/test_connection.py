"""The connection state machine: every (state, event) pair is legal or a clean ProtocolError."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.wire.strategies import bodies, packet_types
from trionano import wire
from trionano.wire import LocalProtocolError, RemoteProtocolError, Role, State

SERVER_HELLO = wire.HandshakeResponse(heartbeat=10, servertime=1)
CLIENT_HELLO = wire.Handshake(type="test", version="1")
K = wire.EventKind
IGNORED = None  # accepted, no event, state unchanged


def packet(ptype: wire.PacketType, body: bytes = b"") -> bytes:
    return wire.encode_packet(ptype, body)


_codec = wire.MessageCodec()
# What a peer can put on the wire, by the kind the receiving role makes of it. A type-1 packet
# is a Handshake to a server and a HandshakeResponse to a client; b"" is the peer's EOF.
INCOMING: dict[Role, dict[wire.EventKind, bytes]] = {
    role: {
        **(
            {K.HANDSHAKE: packet(wire.PacketType.HANDSHAKE, CLIENT_HELLO.encode())}
            if role is Role.SERVER
            else {
                K.HANDSHAKE_ACCEPTED: packet(wire.PacketType.HANDSHAKE, SERVER_HELLO.encode()),
                K.HANDSHAKE_REFUSED: packet(wire.PacketType.HANDSHAKE, wire.HandshakeResponse(code=500).encode()),
            }
        ),
        K.HANDSHAKE_ACK: packet(wire.PacketType.HANDSHAKE_ACK),
        K.HEARTBEAT: packet(wire.PacketType.HEARTBEAT),
        K.KICK: packet(wire.PacketType.KICK, wire.Kick("bye").encode()),
        K.REQUEST: _codec.request_packet(1, "a.b", b"{}"),
        K.NOTIFY: _codec.notify_packet("a.b", b"{}"),
        K.RESPONSE: _codec.response_packet(1, b"{}"),
        K.PUSH: _codec.push_packet("a", b"{}"),
        K.CONNECTION_CLOSED: b"",
    }
    for role in Role
}

S = State
# The spec, written out by hand: what each role makes of each incoming kind in each state (the
# state after it, IGNORED, or ERR). wire.RECEIVE_TRANSITIONS must say the same, and the
# Connection must do it. A CLOSED connection reads nothing (next_event is None).
EOF_CLOSES = {K.CONNECTION_CLOSED: S.CLOSED}
RECEIVE_SPEC: dict[Role, dict[State, dict[wire.EventKind, State | None]]] = {
    Role.SERVER: {
        S.START: {K.HANDSHAKE: S.HANDSHAKE, K.HEARTBEAT: S.START, K.KICK: IGNORED, **EOF_CLOSES},
        S.HANDSHAKE: {K.HEARTBEAT: S.HANDSHAKE, K.KICK: IGNORED, **EOF_CLOSES},
        S.ACCEPTED: {K.HANDSHAKE_ACK: S.WORKING, K.HEARTBEAT: S.ACCEPTED, K.KICK: IGNORED, **EOF_CLOSES},
        S.WORKING: {
            **{K.REQUEST: S.WORKING, K.NOTIFY: S.WORKING, K.HEARTBEAT: S.WORKING},
            **{K.HANDSHAKE_ACK: IGNORED, K.KICK: IGNORED, **EOF_CLOSES},
        },
        S.CLOSED: {},
    },
    Role.CLIENT: {
        S.START: {K.HEARTBEAT: S.START, K.KICK: S.CLOSED, **EOF_CLOSES},
        S.HANDSHAKE: {
            **{K.HANDSHAKE_ACCEPTED: S.ACCEPTED, K.HANDSHAKE_REFUSED: S.CLOSED},
            **{K.HEARTBEAT: S.HANDSHAKE, K.KICK: S.CLOSED, **EOF_CLOSES},
        },
        S.ACCEPTED: {K.HEARTBEAT: S.ACCEPTED, K.KICK: S.CLOSED, **EOF_CLOSES},
        S.WORKING: {K.RESPONSE: S.WORKING, K.PUSH: S.WORKING, K.HEARTBEAT: S.WORKING, K.KICK: S.CLOSED, **EOF_CLOSES},
        S.CLOSED: {},
    },
}

OUTGOING: dict[wire.EventKind, wire.Event] = {
    K.HANDSHAKE: CLIENT_HELLO,
    K.HANDSHAKE_ACCEPTED: SERVER_HELLO,
    K.HANDSHAKE_REFUSED: wire.HandshakeResponse(code=wire.CODE_SERVER_ERROR),
    K.HANDSHAKE_ACK: wire.HandshakeAck(),
    K.HEARTBEAT: wire.Heartbeat(),
    K.KICK: wire.Kick("bye"),
    K.REQUEST: wire.Request(1, "a.b", b"{}"),
    K.NOTIFY: wire.Notify("a.b", b"{}"),
    K.RESPONSE: wire.Response(1, b"{}"),
    K.PUSH: wire.Push("a", b"{}"),
    K.CONNECTION_CLOSED: wire.ConnectionClosed(),
}
# Which kinds each role may send in each state (anything else: LocalProtocolError), and the state after.
SEND_SPEC: dict[Role, dict[State, dict[wire.EventKind, State | None]]] = {
    Role.SERVER: {
        S.START: {K.HEARTBEAT: S.START, K.KICK: S.CLOSED},
        S.HANDSHAKE: {
            **{K.HANDSHAKE_ACCEPTED: S.ACCEPTED, K.HANDSHAKE_REFUSED: S.CLOSED},
            **{K.HEARTBEAT: S.HANDSHAKE, K.KICK: S.CLOSED},
        },
        S.ACCEPTED: {K.HEARTBEAT: S.ACCEPTED, K.KICK: S.CLOSED},
        S.WORKING: {K.HEARTBEAT: S.WORKING, K.RESPONSE: S.WORKING, K.PUSH: S.WORKING, K.KICK: S.CLOSED},
        S.CLOSED: {},
    },
    Role.CLIENT: {
        S.START: {K.HANDSHAKE: S.HANDSHAKE, K.HEARTBEAT: S.START},
        S.HANDSHAKE: {K.HEARTBEAT: S.HANDSHAKE},
        S.ACCEPTED: {K.HANDSHAKE_ACK: S.WORKING, K.HEARTBEAT: S.ACCEPTED},
        S.WORKING: {K.HEARTBEAT: S.WORKING, K.REQUEST: S.WORKING, K.NOTIFY: S.WORKING},
        S.CLOSED: {},
    },
}
MESSAGE_KINDS = (K.REQUEST, K.NOTIFY, K.RESPONSE, K.PUSH)


def state_of(conn: wire.Connection) -> State:
    """``conn.state``, which mypy would keep narrowed across the calls that change it."""
    return conn.state


def connection_in(role: Role, state: State) -> wire.Connection:
    """A connection brought to ``state`` through the legal path."""
    conn = wire.Connection(role, heartbeat=10)
    path = [S.HANDSHAKE, S.ACCEPTED, S.WORKING]
    for step in path[: path.index(state) + 1] if state in path else []:
        if role is Role.SERVER:
            if step is S.HANDSHAKE:
                conn.receive_data(INCOMING[role][K.HANDSHAKE], now=0)
                assert isinstance(conn.next_event(), wire.Handshake)
            elif step is S.ACCEPTED:
                conn.send(SERVER_HELLO)
            else:
                conn.receive_data(INCOMING[role][K.HANDSHAKE_ACK], now=0)
                assert isinstance(conn.next_event(), wire.HandshakeAck)
        elif step is S.HANDSHAKE:
            conn.send(CLIENT_HELLO)
        elif step is S.ACCEPTED:
            conn.receive_data(INCOMING[role][K.HANDSHAKE_ACCEPTED], now=0)
            assert isinstance(conn.next_event(), wire.HandshakeResponse)
        else:
            conn.send(wire.HandshakeAck())
    if state is S.CLOSED:
        conn.close()
    assert conn.state is state
    return conn


def test_the_exported_tables_are_the_spec() -> None:
    assert {r: {s: dict(e) for s, e in t.items()} for r, t in wire.RECEIVE_TRANSITIONS.items()} == RECEIVE_SPEC
    assert {r: {s: dict(e) for s, e in t.items()} for r, t in wire.SEND_TRANSITIONS.items()} == SEND_SPEC
    for table in (wire.RECEIVE_TRANSITIONS, wire.SEND_TRANSITIONS):
        assert set(table) == set(Role)
        for states in table.values():
            assert set(states) == set(State)  # every state has a row
            for state, events in states.items():
                for kind in MESSAGE_KINDS:  # the Connection's per-message fast paths rely on this
                    assert events.get(kind, state) is state
    with pytest.raises(TypeError):
        wire.SEND_TRANSITIONS[Role.SERVER][S.WORKING][K.REQUEST] = S.WORKING  # type: ignore[index]


def test_state_values_are_nanos_plus_accepted() -> None:
    assert [(s.name, s.value) for s in State] == [
        ("START", 1),
        ("HANDSHAKE", 2),
        ("WORKING", 3),
        ("CLOSED", 4),
        ("ACCEPTED", 5),
    ]


@pytest.mark.parametrize(("role", "kind"), [(role, kind) for role in Role for kind in INCOMING[role]])
@pytest.mark.parametrize("state", list(State))
def test_receive_follows_the_table(role: Role, state: State, kind: wire.EventKind) -> None:
    conn = connection_in(role, state)
    events = wire.RECEIVE_TRANSITIONS[role][state]
    conn.receive_data(INCOMING[role][kind], now=1)
    if state is S.CLOSED:
        assert conn.next_event() is None  # a closed connection reads nothing
        assert conn.state is S.CLOSED
        return
    if kind not in events:
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
        assert conn.state is S.CLOSED
        return
    event = conn.next_event()
    if events[kind] is IGNORED:
        assert event is None
        assert conn.state is state
    else:
        assert event is not None
        assert wire.event_kind(event) is kind
        assert conn.state is events[kind]
    assert conn.next_event() is None


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("kind", list(K))
def test_send_follows_the_table(role: Role, state: State, kind: wire.EventKind) -> None:
    conn = connection_in(role, state)
    after = wire.SEND_TRANSITIONS[role][state].get(kind)
    if after is None:
        with pytest.raises(LocalProtocolError):
            conn.send(OUTGOING[kind], now=1)
        assert conn.state is state
    else:
        data = conn.send(OUTGOING[kind], now=1)
        assert 1 <= data[0] <= 5
        assert conn.state is after


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
def test_fast_paths_follow_the_table(role: Role, state: State) -> None:
    events = wire.SEND_TRANSITIONS[role][state]
    conn = connection_in(role, state)
    push = wire.MessageCodec().push_packet("a", b"{}")
    fast_paths: list[tuple[wire.EventKind | None, Callable[[], bytes]]] = [
        (K.PUSH, lambda: conn.send_push("a", b"{}")),
        (K.RESPONSE, lambda: conn.send_response(1, b"{}")),
        (None, lambda: conn.send_encoded(push)),
    ]
    for kind, send in fast_paths:
        allowed = kind in events if kind is not None else any(k in events for k in MESSAGE_KINDS)
        if allowed:
            data = send()
            if kind is not None:
                assert data == conn.send(OUTGOING[kind])  # the same bytes as the event
            else:
                assert data is push  # the very object, for a broadcast's shared packet
        else:
            with pytest.raises(LocalProtocolError):
                send()
        assert conn.state is state
    assert (K.PUSH in events) is (role is Role.SERVER and state is S.WORKING)


def test_data_before_ack_closes_with_nanos_text() -> None:
    conn = connection_in(Role.SERVER, S.ACCEPTED)
    conn.receive_data(INCOMING[Role.SERVER][K.REQUEST], now=0)
    with pytest.raises(RemoteProtocolError, match="not yet ACK"):
        conn.next_event()


def test_packets_before_a_bad_header_are_delivered_first() -> None:
    conn = connection_in(Role.SERVER, S.WORKING)
    incoming = INCOMING[Role.SERVER]
    conn.receive_data(incoming[K.HEARTBEAT] + incoming[K.REQUEST] + b"\x07\x00\x00\x00", 0)
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
    assert server.state is S.ACCEPTED
    response = client.next_event()
    assert isinstance(response, wire.HandshakeResponse)
    assert client.heartbeat == 5
    assert client.state is S.ACCEPTED
    server.receive_data(client.send(wire.HandshakeAck()), now=0)
    assert isinstance(server.next_event(), wire.HandshakeAck)
    assert state_of(server) is state_of(client) is S.WORKING
    request = client.send(wire.Request(2, "room.join", b"{}"))
    assert request == bytes.fromhex("04000006010200017b7d")  # compressed, as in vectors.json
    server.receive_data(request, now=0)
    assert server.next_event() == wire.Request(2, "room.join", b"{}")
    client.receive_data(server.send(wire.Push("onMessage", b"{}")), now=0)
    assert client.next_event() == wire.Push("onMessage", b"{}")
    client.receive_data(server.send_push("onMessage", b"[]"), now=0)
    assert client.next_event() == wire.Push("onMessage", b"[]")


def test_refused_handshake_closes_both_sides() -> None:
    server = connection_in(Role.SERVER, S.HANDSHAKE)
    client = connection_in(Role.CLIENT, S.HANDSHAKE)
    client.receive_data(server.send(wire.HandshakeResponse(code=wire.CODE_VERSION_MISMATCH)), now=0)
    assert server.state is S.CLOSED
    response = client.next_event()
    assert isinstance(response, wire.HandshakeResponse)
    assert response.code == 501
    assert client.state is S.CLOSED


# -- EOF ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_eof_comes_after_the_packets_already_received(role: Role) -> None:
    conn = connection_in(role, S.WORKING)
    incoming = INCOMING[role]
    conn.receive_data(incoming[K.HEARTBEAT] * 2, now=1)
    conn.receive_data(b"", now=2)
    assert conn.next_event() == wire.Heartbeat()
    assert conn.state is S.WORKING  # not yet: a packet is still to come
    assert conn.next_event() == wire.Heartbeat()
    assert conn.next_event() == wire.ConnectionClosed(pending=0)
    assert state_of(conn) is S.CLOSED
    assert conn.next_event() is None  # once
    conn.receive_data(b"more", now=3)  # ignored once closed, as everything is
    assert conn.next_event() is None


def test_eof_says_how_much_of_a_packet_was_left_unfinished() -> None:
    conn = connection_in(Role.SERVER, S.WORKING)
    request = INCOMING[Role.SERVER][K.REQUEST]
    conn.receive_data(request + request[:5], now=1)
    assert isinstance(conn.next_event(), wire.Request)
    assert conn.next_event() is None
    conn.receive_data(b"", now=2)
    conn.receive_data(b"", now=2)  # idempotent
    assert conn.next_event() == wire.ConnectionClosed(pending=5)


def test_data_after_eof_is_the_callers_error() -> None:
    conn = connection_in(Role.CLIENT, S.HANDSHAKE)
    conn.receive_data(b"", now=1)
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"\x03\x00\x00\x00", now=1)
    assert conn.next_event() == wire.ConnectionClosed()


def test_a_bad_packet_before_eof_is_still_an_error() -> None:
    conn = connection_in(Role.SERVER, S.START)
    conn.receive_data(b"\x09\x00\x00\x00", now=1)
    conn.receive_data(b"", now=1)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.next_event() is None


# -- after a protocol error: the Kick to send -----------------------------------------------


@pytest.mark.parametrize(
    ("state", "data", "message"),
    [
        (S.START, b"\x07\x00\x00\x00", "wrong packet type: 7"),
        (S.WORKING, b"\x04\x00\x00\x01\x0e", "invalid message"),
        (S.WORKING, b"\x04\x00\x00\x02\x0e\x00", "wrong message type"),
        (S.ACCEPTED, INCOMING[Role.SERVER][K.REQUEST], "receive data on socket which not yet ACK"),
        (S.WORKING, INCOMING[Role.SERVER][K.HANDSHAKE], "handshake received twice (a Handshake from the client in"),
        (S.HANDSHAKE, INCOMING[Role.SERVER][K.HANDSHAKE_ACK], "handshake ack before the handshake was accepted"),
        (S.START, INCOMING[Role.SERVER][K.PUSH], "receive data on socket which not yet ACK"),
        (S.START, packet(wire.PacketType.HANDSHAKE, b"{"), "invalid handshake"),
    ],
)
def test_a_server_error_hints_the_kick_to_send_and_allows_exactly_it(state: State, data: bytes, message: str) -> None:
    conn = connection_in(Role.SERVER, state)
    conn.receive_data(data, now=1)
    with pytest.raises(RemoteProtocolError) as caught:
        conn.next_event()
    hint = caught.value.event_hint
    assert isinstance(hint, wire.Kick)
    assert hint.reason == f"protocol error: {caught.value}"
    assert hint.reason.startswith(f"protocol error: {message}")
    assert conn.state is S.CLOSED
    for other in (wire.Kick("something else"), wire.Heartbeat()):
        with pytest.raises(LocalProtocolError, match="closed"):
            conn.send(other, now=1)
    if state is S.WORKING:  # the answers to what the client sent before its error may still go out
        assert conn.send_push("a", b"{}")
        assert conn.send(wire.Response(1, b"{}"))
    else:
        with pytest.raises(LocalProtocolError):
            conn.send_push("a", b"{}")
    conn.close()  # the runtime may mark it closed first; the hint stays sendable
    with pytest.raises(LocalProtocolError):  # but no more answers
        conn.send_response(1, b"{}")
    data = conn.send(wire.Kick(hint.reason))  # equal is enough, it need not be the same object
    client = connection_in(Role.CLIENT, S.WORKING)
    client.receive_data(data, now=1)
    assert client.next_event() == hint
    with pytest.raises(LocalProtocolError):  # exactly once
        conn.send(hint)


def test_answers_may_go_out_after_a_client_error_until_the_kick() -> None:
    conn = connection_in(Role.SERVER, S.WORKING)
    conn.receive_data(INCOMING[Role.SERVER][K.REQUEST] + b"\x07\x00\x00\x00", now=1)
    assert isinstance(conn.next_event(), wire.Request)
    with pytest.raises(RemoteProtocolError) as caught:
        conn.next_event()
    assert conn.send_response(1, b"{}")  # the answer to the request before the bad packet
    assert caught.value.event_hint is not None
    conn.send(caught.value.event_hint)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        conn.send_response(2, b"{}")


def test_a_client_error_has_no_hint() -> None:
    conn = connection_in(Role.CLIENT, S.WORKING)
    conn.receive_data(INCOMING[Role.CLIENT][K.REQUEST], now=1)
    with pytest.raises(RemoteProtocolError, match="a client cannot receive REQUEST") as caught:
        conn.next_event()
    assert caught.value.event_hint is None


def test_sending_a_kick_closes_a_server() -> None:
    for state in (S.START, S.HANDSHAKE, S.ACCEPTED, S.WORKING):
        conn = connection_in(Role.SERVER, state)
        assert conn.send(wire.Kick("heartbeat timeout"))[0] == wire.PacketType.KICK
        assert conn.state is S.CLOSED
        assert conn.timeout_deadline == math.inf


# -- the fast paths -------------------------------------------------------------------------


def test_fast_paths_are_the_codecs_bytes_and_refuse_what_it_refuses() -> None:
    conn = connection_in(Role.SERVER, S.WORKING)
    codec = conn.codec
    assert conn.send_push("onMessage", b"{}") == codec.push_packet("onMessage", b"{}")
    assert conn.send_response(2**40, b"{}") == codec.response_packet(2**40, b"{}")
    big = bytes(wire.MAX_BODY_SIZE)
    too_large: list[Callable[[], bytes]] = [lambda: conn.send_push("a", big), lambda: conn.send_response(1, big)]
    for send in too_large:
        with pytest.raises(LocalProtocolError, match="too large"):
            send()
    with pytest.raises(LocalProtocolError, match="too large"):
        conn.send(wire.Push("a", big))
    with pytest.raises(LocalProtocolError):
        conn.send_response(-1, b"")
    with pytest.raises(LocalProtocolError):
        conn.send_push("x" * 256, b"")
    assert conn.state is S.WORKING


def test_a_request_with_id_0_is_a_request_on_both_receive_paths_and_id_0_can_be_answered() -> None:
    """The wire layer reports what was sent: a Request with id 0 stays a Request (nano and
    pomelo take it for a Notify); the runtime answers it 400 with a Response of id 0."""
    data = packet(wire.PacketType.DATA, wire.encode_message(wire.Request(0, "a.b", b"{}")))
    fused = connection_in(Role.SERVER, S.WORKING)
    assert fused.receive_requests(data, 0) == [(0, "a.b", b"{}")]
    full = connection_in(Role.SERVER, S.WORKING)
    full.receive_data(packet(wire.PacketType.HEARTBEAT) + data, now=0)
    assert isinstance(full.next_event(), wire.Heartbeat)
    assert full.next_event() == wire.Request(0, "a.b", b"{}")
    assert full.send_response(0, b"{}") == full.codec.response_packet(0, b"{}")
    client = connection_in(Role.CLIENT, S.WORKING)
    client.receive_data(full.send_response(0, b"{}"), now=0)
    assert client.next_event() == wire.Response(0, b"{}")


# -- heartbeats -----------------------------------------------------------------------------


def test_heartbeat_deadlines_follow_the_callers_clock() -> None:
    assert wire.TIMEOUT_INTERVALS == 2.5
    conn = wire.Connection(Role.SERVER, heartbeat=30, now=100)
    assert conn.heartbeat_deadline == 130  # a server heartbeats from accept, as nano
    assert conn.timeout_deadline == 175  # 2.5x the interval of silence
    conn.send(wire.Heartbeat(), now=130)
    assert conn.heartbeat_deadline == 160
    conn.receive_data(INCOMING[Role.SERVER][K.HEARTBEAT], now=150)
    assert conn.timeout_deadline == 175  # bytes alone are not a packet yet
    assert conn.next_event() == wire.Heartbeat()
    assert conn.timeout_deadline == 225
    conn.receive_data(b"\x03\x00", now=200)  # half a packet does not count as life
    assert conn.next_event() is None
    assert conn.timeout_deadline == 225
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


def test_a_silent_peer_times_out_at_two_and_a_half_intervals() -> None:
    interval = 30.0
    server = connection_in(Role.SERVER, S.WORKING)
    server = wire.Connection(Role.SERVER, heartbeat=interval, now=1000)
    server.receive_data(INCOMING[Role.SERVER][K.HANDSHAKE], now=1001)
    assert isinstance(server.next_event(), wire.Handshake)
    assert server.timeout_deadline == 1001 + 2.5 * interval
    # a sweep every interval/8 notices it within 2.5..2.625 intervals
    sweeps = [1001 + k * interval / 8 for k in range(40)]
    noticed = next(t for t in sweeps if t >= server.timeout_deadline)
    assert 2.5 * interval <= noticed - 1001 <= 2.625 * interval
    assert 1001 + 2.5 * interval - 1e-9 < server.timeout_deadline


@given(
    interval=st.sampled_from([1.0, 5.0, 30.0]),
    lateness=st.lists(st.floats(0, 1 / 8), min_size=60, max_size=60),
    sweep_phase=st.floats(0, 1 / 8, exclude_max=True),
)
@example(interval=30.0, lateness=[0.0, 1 / 8] * 30, sweep_phase=0.0)  # late, then on time: one ignored
@example(interval=30.0, lateness=[1 / 8, 0.0] * 30, sweep_phase=0.0)
@example(interval=30.0, lateness=[0.01, 0.0, 1 / 8] * 20, sweep_phase=0.0)  # gaps of 2.115 intervals
@example(interval=1.0, lateness=[0.0] * 60, sweep_phase=0.0)  # every heartbeat ties with a reply
def test_an_idle_pomelo_js_client_is_never_timed_out(
    interval: float, lateness: list[float], sweep_phase: float
) -> None:
    """pomelo-jsclient-websocket / starx, idle: it answers a server heartbeat exactly one
    interval after it arrives, and ignores one that arrives while that answer is pending; it
    sends nothing else. The server heartbeats on schedule, up to interval/8 late, and sweeps
    its deadlines every interval/8. Over 60 intervals the timeout deadline is never reached."""
    server = wire.Connection(Role.SERVER, heartbeat=interval, now=0.0)
    client = wire.Connection(Role.CLIENT, now=0.0)
    server.receive_data(client.send(CLIENT_HELLO), now=0.0)
    assert isinstance(server.next_event(), wire.Handshake)
    client.receive_data(server.send(wire.HandshakeResponse(heartbeat=interval)), now=0.0)
    assert isinstance(client.next_event(), wire.HandshakeResponse)
    server.receive_data(client.send(wire.HandshakeAck()), now=0.0)
    assert isinstance(server.next_event(), wire.HandshakeAck)

    # (time, order, what): server heartbeats on schedule; the client's replies are added as
    # the heartbeats arrive; the sweeps check the deadlines
    timeline: list[tuple[float, int, str]] = [
        ((k + 1 + late) * interval, 1, "server heartbeat") for k, late in enumerate(lateness)
    ]
    end = (len(lateness) + 1) * interval
    timeline += [((k + sweep_phase) / 8 * interval, 0, "sweep") for k in range(int(end / interval * 8))]
    timeline.sort()
    reply_due: float | None = None
    replies = 0
    while timeline:
        now, _, what = timeline.pop(0)
        if reply_due is not None and reply_due < now:  # the client's timer fires (on a tie: last, the worst case)
            server.receive_data(client.send(wire.Heartbeat(), now=reply_due), now=reply_due)
            assert server.next_event() == wire.Heartbeat()
            reply_due = None
            replies += 1
        if what == "sweep":
            assert now < server.timeout_deadline, f"an idle client kicked at {now / interval:.3f} intervals"
            continue
        client.receive_data(server.send(wire.Heartbeat(), now=now), now=now)
        assert client.next_event() == wire.Heartbeat()
        if reply_due is None:
            reply_due = now + interval  # else: ignored, a reply is pending
    assert replies >= len(lateness) // 2
    assert server.state is client.state is S.WORKING


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
        try:
            conn.receive_data(data, now=self.now)
        except LocalProtocolError:
            assert data  # data after the peer's EOF
            return
        error = None
        try:
            while (event := conn.next_event()) is not None:
                if isinstance(event, wire.ConnectionClosed):
                    assert conn.state is State.CLOSED
        except RemoteProtocolError as exc:
            error = exc
        if error is None:
            return
        assert conn.state is State.CLOSED
        if conn.role is Role.CLIENT:
            assert error.event_hint is None
            return
        assert isinstance(error.event_hint, wire.Kick)
        assert conn.send(error.event_hint)[0] == wire.PacketType.KICK
        with pytest.raises(LocalProtocolError):
            conn.send(error.event_hint)

    def _send(self, conn: wire.Connection, peer: wire.Connection, event: wire.Event) -> None:
        before = conn.state
        try:
            data = conn.send(event, now=self.now)
        except LocalProtocolError:
            assert conn.state is before
            return
        self._receive(peer, data)

    @rule(kind=st.sampled_from(list(OUTGOING)), to_server=st.booleans())
    def send_event(self, kind: wire.EventKind, to_server: bool) -> None:
        if to_server:
            self._send(self.client, self.server, OUTGOING[kind])
        else:
            self._send(self.server, self.client, OUTGOING[kind])

    @rule(to_server=st.booleans())
    def send_push(self, to_server: bool) -> None:
        conn, peer = (self.client, self.server) if to_server else (self.server, self.client)
        before = conn.state
        try:
            data = conn.send_push("a", b"{}")
        except LocalProtocolError:
            assert conn.state is before
            return
        self._receive(peer, data)

    @rule(to_server=st.booleans())
    def eof(self, to_server: bool) -> None:
        self._receive(self.server if to_server else self.client, b"")

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
