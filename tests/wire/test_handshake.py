"""The wire contract for control bodies: whatever JSON (or not-JSON) a peer puts in a
Handshake, a HandshakeResponse or a Kick either parses to values that are safe to use (valid
text, a sane heartbeat, a usable dictionary) or raises RemoteProtocolError. Never anything else:
a hostile server must not crash a client's reader, nor a hostile client a server's."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings

from tests.wire.strategies import client_handshake_bodies, kick_bodies, server_handshake_bodies
from trionano import wire
from trionano.wire import RemoteProtocolError, Role, State

HOSTILE = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
# the Connection tests repeat the parsers' properties one layer up: fewer examples will do
THROUGH_CONNECTION = settings(HOSTILE, max_examples=40)

# Bodies that crashed a parser with something other than RemoteProtocolError, or let through
# values that crash their user later.
HUGE_HEARTBEAT = b'{"code":200,"sys":{"heartbeat":1' + b"0" * 400 + b"}}"  # OverflowError
LONE_SURROGATE_ROUTE = b'{"code":200,"sys":{"dict":{"\\ud800":1}}}'  # UnicodeEncodeError
TINY_HEARTBEAT = b'{"code":200,"sys":{"heartbeat":1e-300}}'  # a client spinning on heartbeats
NAN_HEARTBEAT = b'{"code":200,"sys":{"heartbeat":NaN}}'
ENCODED_SURROGATE = b'{"code":200,"sys":{"heartbeat":3},"user":"\xed\xa0\x80"}'  # json.loads lets it through
LONE_SURROGATE_USER = b'{"sys":{"type":"\\udfff"},"user":["\\ud800x"]}'
LONE_SURROGATE_REASON = b'{"reason":"\\udc00"}'  # Kick(reason).encode() raised UnicodeEncodeError
DUPLICATE_KEYS = b'{"code":200,"code":500,"sys":{"heartbeat":1,"heartbeat":2}}'
DEEP = b"[" * 5000 + b"]" * 5000


def assert_valid_text(value: object) -> None:
    """Every string in ``value`` (keys included) encodes as UTF-8, and no float is NaN/inf."""
    json.dumps(value, ensure_ascii=False, allow_nan=False).encode()


def assert_sane_response(response: wire.HandshakeResponse) -> None:
    assert response.heartbeat == 0 or wire.MIN_HEARTBEAT <= response.heartbeat <= wire.MAX_HEARTBEAT
    assert_valid_text(response.user)
    if response.dictionary is not None:
        codec = wire.MessageCodec(response.dictionary)
        for route in response.dictionary:
            assert codec.decode(codec.encode(wire.Push(route, b"x"))) == wire.Push(route, b"x")


@HOSTILE
@given(server_handshake_bodies)
@example(HUGE_HEARTBEAT)
@example(LONE_SURROGATE_ROUTE)
@example(TINY_HEARTBEAT)
@example(NAN_HEARTBEAT)
@example(ENCODED_SURROGATE)
@example(DUPLICATE_KEYS)
@example(DEEP)
@example(b'{"code":200,"sys":{"heartbeat":1e400}}')
@example(b'{"code":200,"sys":{"heartbeat":-0.0}}')
@example(b'{"code":200,"sys":{"heartbeat":true}}')
def test_handshake_response_bodies_parse_or_raise_remote_protocol_error(body: bytes) -> None:
    try:
        response = wire.HandshakeResponse.parse(body)
    except RemoteProtocolError:
        return
    assert_sane_response(response)


@HOSTILE
@given(client_handshake_bodies)
@example(LONE_SURROGATE_USER)
@example(ENCODED_SURROGATE)
@example(DEEP)
@example(b'{"sys":{"type":"a","type":"b"},"user":Infinity}')
@example(b'{"user":' + b"9" * 5000 + b"}")
def test_handshake_bodies_parse_or_raise_remote_protocol_error(body: bytes) -> None:
    try:
        handshake = wire.Handshake.parse(body)
    except RemoteProtocolError:
        return
    assert_valid_text([handshake.type, handshake.version, handshake.user])
    assert wire.Handshake.parse(handshake.encode()).user == handshake.user  # what parses re-encodes


@HOSTILE
@given(kick_bodies)
@example(LONE_SURROGATE_REASON)
@example(b'{"reason":"\xed\xa0\x80"}')
@example(DEEP)
@example(b"NaN")
def test_kick_bodies_always_parse_to_valid_text(body: bytes) -> None:
    kick = wire.Kick.parse(body)
    kick.reason.encode()
    assert wire.Kick.parse(kick.encode()) == kick


def test_lone_surrogates_become_the_replacement_character_as_go_reads_them() -> None:
    assert wire.Handshake.parse(LONE_SURROGATE_USER).user == ["\ufffdx"]
    assert wire.Handshake.parse(LONE_SURROGATE_USER).type == "\ufffd"
    assert wire.Kick.parse(LONE_SURROGATE_REASON) == wire.Kick("\ufffd")
    response = wire.HandshakeResponse.parse(LONE_SURROGATE_ROUTE)
    assert response.dictionary == wire.RouteDict({"\ufffd": 1})
    # a pair is one character, not two replacements
    assert wire.Kick.parse(b'{"reason":"\\ud83d\\ude00\\ud83d"}') == wire.Kick("\U0001f600\ufffd")
    # and an encoder never fails on one
    assert json.loads(wire.Kick("a\udc00").encode()) == {"reason": "a\ufffd"}


@pytest.mark.parametrize(
    "body",
    [HUGE_HEARTBEAT, TINY_HEARTBEAT, NAN_HEARTBEAT, b'{"code":200,"sys":{"heartbeat":86401}}', ENCODED_SURROGATE],
)
def test_absurd_heartbeats_and_bad_text_are_remote_protocol_errors(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="invalid handshake response"):
        wire.HandshakeResponse.parse(body)


def test_heartbeat_range_is_shared_by_both_ends() -> None:
    for ok in (0, 0.0, wire.MIN_HEARTBEAT, 1.5, 30, wire.MAX_HEARTBEAT):
        assert wire.check_heartbeat(ok) == ok
        assert wire.HandshakeResponse.parse(wire.HandshakeResponse(heartbeat=ok).encode()).heartbeat == ok
        wire.Connection(Role.SERVER, heartbeat=ok)
    for bad in (-1, 1e-4, wire.MAX_HEARTBEAT + 1, math.inf, math.nan, 10**400, True):
        assert wire.check_heartbeat(bad) is None
        with pytest.raises(wire.LocalProtocolError):  # the encoder refuses what the decoder would
            wire.HandshakeResponse(heartbeat=bad).encode()
        with pytest.raises(wire.LocalProtocolError):
            wire.Connection(Role.SERVER, heartbeat=bad)
    assert math.copysign(1, wire.HandshakeResponse.parse(b'{"code":200,"sys":{"heartbeat":-0.0}}').heartbeat) == 1


# -- the same bodies through a Connection, for both roles --------------------------------------


@THROUGH_CONNECTION
@given(client_handshake_bodies)
@example(LONE_SURROGATE_USER)
@example(DEEP)
def test_a_server_connection_receiving_any_handshake(body: bytes) -> None:
    server = wire.Connection(Role.SERVER, heartbeat=10)
    server.receive_data(wire.encode_packet(wire.PacketType.HANDSHAKE, body), now=1)
    try:
        event = server.next_event()
    except RemoteProtocolError:
        assert server.state is State.CLOSED
        return
    assert isinstance(event, wire.Handshake)
    assert server.state is State.HANDSHAKE
    assert_valid_text([event.type, event.version, event.user])
    server.send(wire.HandshakeResponse(heartbeat=10, user=event.user))  # echoing it back is safe


@THROUGH_CONNECTION
@given(server_handshake_bodies)
@example(HUGE_HEARTBEAT)
@example(LONE_SURROGATE_ROUTE)
@example(TINY_HEARTBEAT)
@example(DEEP)
def test_a_client_connection_receiving_any_handshake_response(body: bytes) -> None:
    client = wire.Connection(Role.CLIENT)
    client.send(wire.Handshake(type="test"))
    client.receive_data(wire.encode_packet(wire.PacketType.HANDSHAKE, body), now=1)
    try:
        event = client.next_event()
    except RemoteProtocolError:
        assert client.state is State.CLOSED
        return
    assert isinstance(event, wire.HandshakeResponse)
    assert_sane_response(event)
    if not event.accepted:
        assert client.state is State.CLOSED
        return
    assert client.heartbeat == event.heartbeat
    assert client.timeout_deadline > 1
    client.send(wire.HandshakeAck())
    for route in event.dictionary or ():
        client.send(wire.Request(1, route, b"{}"))


@THROUGH_CONNECTION
@given(kick_bodies)
@example(LONE_SURROGATE_REASON)
@example(DEEP)
def test_a_client_connection_receiving_any_kick(body: bytes) -> None:
    client = wire.Connection(Role.CLIENT)
    client.send(wire.Handshake(type="test"))
    client.receive_data(wire.encode_packet(wire.PacketType.KICK, body), now=1)
    event = client.next_event()
    assert isinstance(event, wire.Kick)
    event.reason.encode()
    assert client.state is State.CLOSED
