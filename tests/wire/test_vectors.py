"""Every case of vectors.json: bytes recorded from nano's own encoder and decoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import betterproto
import pytest

from tests.vectors import unhex, vectors
from trionano import wire
from trionano.wire import LocalProtocolError, RemoteProtocolError

V = vectors()


def _id(case: dict[str, Any]) -> str:
    return str(case.get("name") or case.get("what") or case.get("hex") or case.get("chunks"))[:40]


def drain(decoder: wire.PacketDecoder) -> list[wire.Packet]:
    packets = []
    while (packet := decoder.next_packet()) is not None:
        packets.append(packet)
    return packets


@pytest.mark.parametrize("case", V["packet_encode"], ids=_id)
def test_packet_encode(case: dict[str, Any]) -> None:
    body = unhex(case["body"])
    if "error" in case:
        with pytest.raises(LocalProtocolError, match=case["error"]):
            wire.encode_packet(case["type"], body)
    else:
        assert wire.encode_packet(case["type"], body) == unhex(case["hex"])


@pytest.mark.parametrize("case", V["packet_decode"], ids=_id)
def test_packet_decode(case: dict[str, Any]) -> None:
    decoder = wire.PacketDecoder()
    packets: list[wire.Packet] = []
    error: RemoteProtocolError | None = None
    for chunk in case["chunks"]:
        decoder.feed(unhex(chunk))
    try:
        while (packet := decoder.next_packet()) is not None:
            packets.append(packet)
    except RemoteProtocolError as exc:
        error = exc
    if "error" in case:
        assert error is not None
        assert case["error"] in str(error)
        with pytest.raises(RemoteProtocolError):  # a spent decoder stays spent
            decoder.next_packet()
    else:
        assert error is None
    assert [(p.type, p.body) for p in packets] == [(t, unhex(b)) for t, b in case["packets"]]


@pytest.mark.parametrize("case", V["message_encode"], ids=_id)
def test_message_encode(case: dict[str, Any]) -> None:
    codec = wire.MessageCodec(wire.RouteDict(case["dict"]))
    if "error" in case:
        with pytest.raises(LocalProtocolError, match=case["error"]):
            wire.build_message(case["type"], id=case["id"], route=case["route"], body=unhex(case["body"]))
        return
    message = wire.build_message(case["type"], id=case["id"], route=case["route"], body=unhex(case["body"]))
    frame = unhex(case["hex"])
    assert codec.encode(message) == frame
    assert codec.decode(frame) == message
    assert codec.packet(message) == wire.encode_packet(wire.PacketType.DATA, frame)


@pytest.mark.parametrize("case", V["message_decode"], ids=_id)
def test_message_decode(case: dict[str, Any]) -> None:
    codec = wire.MessageCodec(wire.RouteDict(case["dict"]))
    data = unhex(case["hex"])
    if "error" in case:
        with pytest.raises(RemoteProtocolError, match=case["error"]):
            codec.decode(data)
    else:
        expected = wire.build_message(case["type"], id=case["id"], route=case["route"], body=unhex(case["body"]))
        assert codec.decode(data) == expected


# -- nano's defects, fixed ---------------------------------------------------------------------

FIXED = {case["what"]: case for case in V["fixed"]}


@pytest.mark.parametrize("what", ["unterminated message-id varint", "compressed route with fewer than 2 code bytes"])
def test_fixed_decode_errors(what: str) -> None:
    case = FIXED[what]
    assert case["expect"] == "decode error (wrong message)"
    with pytest.raises(RemoteProtocolError, match="wrong message"):
        wire.decode_message(unhex(case["hex"]))


def test_fixed_varint_over_64_bits() -> None:
    """The vector's hex, ``ff`` x9 then ``01``, is the canonical encoding of 2^64-1, the
    largest legal id (the issue asks ids over 0..2^64-1 to round-trip), so it must decode.
    The defect the vector names, silent overflow, is tested with ids that really exceed
    64 bits: a 10th group over 1, and an 11-byte varint."""
    case = FIXED["message-id varint longer than 64 bits"]
    assert wire.decode_message(unhex(case["hex"])) == wire.Request(2**64 - 1, "")
    assert wire.encode_message(wire.Request(2**64 - 1, "")) == unhex(case["hex"])
    for overflowing in ("00" + "ff" * 9 + "02" + "00", "00" + "ff" * 10 + "01" + "00", "00" + "80" * 10 + "00" + "00"):
        with pytest.raises(RemoteProtocolError, match="wrong message"):
            wire.decode_message(bytes.fromhex(overflowing))
    with pytest.raises(LocalProtocolError):
        wire.encode_message(wire.Request(2**64, "r"))


def build(spec: dict[str, Any]) -> wire.Message:
    return wire.build_message(spec["type"], id=spec["id"], route=spec["route"], body=unhex(spec["body"]))


def test_fixed_response_with_empty_body_round_trips() -> None:
    case = FIXED["Response with empty body"]
    message = build(case["encode"])
    assert wire.encode_message(message) == unhex(case["hex"])
    assert wire.decode_message(unhex(case["hex"])) == wire.Response(1, b"")


def test_fixed_route_longer_than_255_bytes_is_refused() -> None:
    case = FIXED["route longer than 255 bytes"]
    message = build(case["encode"])
    assert len(message.route.encode()) == 256  # type: ignore[union-attr]
    with pytest.raises(LocalProtocolError, match="route"):
        wire.encode_message(message)
    assert wire.decode_message(wire.encode_message(wire.Notify("x" * 255)))  # 255 is the limit


def test_fixed_packet_body_over_maximum_is_refused() -> None:
    case = FIXED["packet body longer than 65536"]["encode_packet"]
    with pytest.raises(LocalProtocolError, match="packet size exceed"):
        wire.encode_packet(case["type"], bytes(case["length"]))
    with pytest.raises(LocalProtocolError, match="packet size exceed"):
        wire.MessageCodec().push_packet("r", bytes(case["length"]))
    assert len(wire.encode_packet(wire.PacketType.DATA, bytes(65536))) == 65540


def test_fixed_small_body_completes_pending_packet() -> None:
    case = FIXED["body completing a pending packet arrives in under 4 bytes"]
    decoder = wire.PacketDecoder()
    first, second = (unhex(c) for c in case["chunks"])
    decoder.feed(first)
    assert decoder.next_packet() is None
    decoder.feed(second)
    assert decoder.next_packet() == wire.Packet(wire.PacketType.DATA, b"abc")


# -- handshake ---------------------------------------------------------------------------------

HS = V["handshake"]


def test_handshake_client_starx() -> None:
    packet = unhex(HS["client_starx"]["hex"])
    decoder = wire.PacketDecoder()
    decoder.feed(packet)
    (received,) = drain(decoder)
    assert received.type is wire.PacketType.HANDSHAKE
    handshake = wire.Handshake.parse(received.body)
    assert (handshake.type, handshake.version, handshake.user) == ("js-websocket", "0.0.1", None)
    assert json.loads(received.body) == HS["client_starx"]["json"]


def test_handshake_server_nano_30s_is_byte_exact() -> None:
    response = wire.HandshakeResponse(heartbeat=30, servertime=1700000000)
    assert wire.encode_packet(wire.PacketType.HANDSHAKE, response.encode()) == unhex(HS["server_nano_30s"]["hex"])
    assert wire.HandshakeResponse.parse(response.encode()) == response


def test_handshake_server_with_dict() -> None:
    expected = HS["server_nano_with_dict"]["json"]
    routes = wire.RouteDict(expected["sys"]["dict"])
    body = wire.HandshakeResponse(heartbeat=30, servertime=1700000000, dictionary=routes).encode()
    assert json.loads(body) == expected
    assert body == json.dumps(expected, separators=(",", ":"), sort_keys=True).encode()  # Go's key order


def test_handshake_ack_and_heartbeat_packets() -> None:
    assert wire.encode_packet(wire.PacketType.HANDSHAKE_ACK) == unhex(HS["ack"])
    assert wire.encode_packet(wire.PacketType.HEARTBEAT) == unhex(HS["heartbeat"])


# -- protobuf bodies through a betterproto message ---------------------------------------------


@dataclass(eq=False, repr=False)
class Ping(betterproto.Message):
    content: str = betterproto.string_field(1)


@dataclass(eq=False, repr=False)
class Pong(betterproto.Message):
    content: str = betterproto.string_field(2)


PB = V["protobuf"]


def test_protobuf_ping_body() -> None:
    assert bytes(Ping(content=PB["ping_body"]["Content"])) == unhex(PB["ping_body"]["hex"])


def test_protobuf_notify_packet() -> None:
    case = PB["notify_packet"]
    codec = wire.MessageCodec()
    assert codec.notify_packet(case["route"], bytes(Ping(content="ping"))) == unhex(case["hex"])
    decoder = wire.PacketDecoder()
    decoder.feed(unhex(case["hex"]))
    (packet,) = drain(decoder)
    message = codec.decode(packet.body)
    assert isinstance(message, wire.Notify)
    assert Ping().parse(message.body).content == "ping"


def test_protobuf_push_packet() -> None:
    case = PB["push_packet"]
    assert wire.MessageCodec().push_packet(case["route"], bytes(Pong(content=case["pong"]))) == unhex(case["hex"])
