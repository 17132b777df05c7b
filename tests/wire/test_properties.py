"""Properties of the codec: round trips, chunking, and that no input escapes as anything but a
ProtocolError. Each nano defect of vectors.json's ``fixed`` section is pinned as an @example."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.wire.strategies import bodies, ids, messages, packet_types, route_dicts, routes
from trionano import wire
from trionano.wire import LocalProtocolError, RemoteProtocolError

EMPTY = wire.RouteDict()


def drain(decoder: wire.PacketDecoder) -> list[wire.Packet]:
    out = []
    while (packet := decoder.next_packet()) is not None:
        out.append(packet)
    return out


@given(st.data(), route_dicts())
def test_message_round_trip_with_and_without_dictionary(data: st.DataObject, routes_in: wire.RouteDict) -> None:
    message = data.draw(messages(routes_in))
    for codec in (wire.MessageCodec(), wire.MessageCodec(routes_in)):
        try:
            frame = codec.encode(message)
        except LocalProtocolError:
            assert len(getattr(message, "route", "").encode()) > wire.MAX_ROUTE_LENGTH
            assert codec.routes.code(getattr(message, "route", "")) is None
            continue
        assert codec.decode(frame) == message
        # the whole-packet encoders agree with the frame encoder
        assert codec.packet(message) == wire.encode_packet(wire.PacketType.DATA, frame)


@given(ids, st.text(max_size=60), bodies)
@example(id=2**64 - 1, route="", body=b"")
@example(id=0, route="", body=b"")
def test_each_type_round_trips_over_the_whole_id_range(id: int, route: str, body: bytes) -> None:
    codec = wire.MessageCodec()
    assert codec.decode(codec.request_packet(id, route, body)[4:]) == wire.Request(id, route, body)
    assert codec.decode(codec.response_packet(id, body)[4:]) == wire.Response(id, body)
    assert codec.decode(codec.notify_packet(route, body)[4:]) == wire.Notify(route, body)
    assert codec.decode(codec.push_packet(route, body)[4:]) == wire.Push(route, body)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(n: int) -> None:
    encoded = wire.encode_varint(n)
    assert len(encoded) <= 10
    assert wire.decode_message(b"\x04" + encoded) == wire.Response(n)


@given(st.integers(min_value=2**64, max_value=2**80) | st.integers(max_value=-1))
def test_varint_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(LocalProtocolError):
        wire.encode_varint(n)


@given(st.lists(st.tuples(packet_types, st.binary(max_size=200)), max_size=20), st.data())
def test_any_chunking_decodes_to_the_same_packets(packets: list[tuple[int, bytes]], data: st.DataObject) -> None:
    stream = b"".join(wire.encode_packet(t, b) for t, b in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    decoder = wire.PacketDecoder()
    out: list[wire.Packet] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:end])
        out += drain(decoder)  # every packet is out as soon as its last byte is in
        assert decoder.buffered == end - sum(4 + len(p.body) for p in out)
    assert [(p.type, p.body) for p in out] == packets


@given(st.lists(st.binary(max_size=64), max_size=12), st.integers(0, 70000))
@example(chunks=[bytes.fromhex("0300000007000000")], max_body=65536)  # packets before a bad header
@example(chunks=[bytes.fromhex("04010001")], max_body=65536)
@example(chunks=[bytes.fromhex("04000003"), b"abc"], max_body=65536)  # nano's small-body stall
def test_arbitrary_bytes_give_packets_or_remote_protocol_error(chunks: list[bytes], max_body: int) -> None:
    decoder = wire.PacketDecoder(max_body=max_body)
    delivered = 0
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (packet := decoder.next_packet()) is not None:
                delivered += 4 + len(packet.body)
    except RemoteProtocolError:
        # the error is at the header right after the last delivered packet
        head = b"".join(chunks)[delivered : delivered + 4]
        assert not 1 <= head[0] <= 5 or int.from_bytes(head[1:], "big") > max_body


@given(st.binary(max_size=40), route_dicts())
@example(data=bytes.fromhex("048182"), routes_in=EMPTY)  # unterminated varint
@example(data=bytes.fromhex("00ffffffffffffffffff0200"), routes_in=EMPTY)  # id over 64 bits
@example(data=bytes.fromhex("0300"), routes_in=EMPTY)  # truncated route code (nano panics)
@example(data=bytes.fromhex("0401"), routes_in=EMPTY)  # empty Response (nano rejects its own)
@example(data=bytes.fromhex("0201ff"), routes_in=EMPTY)  # route that is not UTF-8
def test_arbitrary_bytes_give_a_message_or_remote_protocol_error(data: bytes, routes_in: wire.RouteDict) -> None:
    codec = wire.MessageCodec(routes_in)
    try:
        message = codec.decode(data)
    except RemoteProtocolError:
        return
    # what decodes re-encodes to something that decodes the same (the encoder may choose a
    # shorter form: minimal varints, dictionary codes)
    assert codec.decode(codec.encode(message)) == message


@given(st.binary(max_size=200))
@example(b"[" * 5000)
@example(b'{"sys": 1, "user": [1, 2]}')
@example(b"\xff\xfe")
def test_arbitrary_control_bodies_parse_or_raise_remote_protocol_error(body: bytes) -> None:
    for parse in (wire.Handshake.parse, wire.HandshakeResponse.parse):
        with contextlib.suppress(RemoteProtocolError):
            parse(body)
    assert isinstance(wire.Kick.parse(body).reason, str)


@given(
    route_dicts(),
    st.just(0) | st.floats(wire.MIN_HEARTBEAT, wire.MAX_HEARTBEAT) | st.integers(1, int(wire.MAX_HEARTBEAT)),
    st.integers(0, 2**40),
    st.booleans(),
)
def test_handshake_response_round_trip(routes_in: wire.RouteDict, hb: float, now: int, pomelo: bool) -> None:
    response = wire.HandshakeResponse(heartbeat=hb, servertime=now, dictionary=routes_in or None, pomelo=pomelo)
    try:
        body = response.encode()
    except LocalProtocolError:
        assert pomelo
        assert not float(hb).is_integer()
        return
    parsed = wire.HandshakeResponse.parse(body)
    assert parsed.heartbeat == hb
    assert parsed.servertime == now
    assert parsed.dictionary == (routes_in or None)
    sys = json.loads(body)["sys"]
    if pomelo and routes_in:
        assert sys["useDict"] is True
        assert sys["routeToCode"] == dict(routes_in)
        assert sys["codeToRoute"] == {str(c): r for r, c in routes_in.items()}
        assert sys["dictVersion"] == wire.dict_version(routes_in)
    else:
        assert "useDict" not in sys


@given(st.one_of(st.none(), st.text(), st.dictionaries(st.text(), st.integers())), st.text(), st.text())
def test_handshake_request_round_trip(user: object, kind: str, version: str) -> None:
    handshake = wire.Handshake(type=kind, version=version, user=user)
    parsed = wire.Handshake.parse(handshake.encode())
    assert (parsed.type, parsed.version, parsed.user) == (kind, version, user)


@given(st.text())
def test_kick_round_trip(reason: str) -> None:
    assert wire.Kick.parse(wire.Kick(reason).encode()) == wire.Kick(reason)


def test_empty_handshake_body_is_tolerated() -> None:
    assert wire.Handshake.parse(b"") == wire.Handshake(raw=b"")


@given(routes)
def test_route_length_limit(route: str) -> None:
    fits = len(route.encode()) <= wire.MAX_ROUTE_LENGTH
    try:
        wire.encode_message(wire.Push(route, b""))
    except LocalProtocolError:
        assert not fits
    else:
        assert fits


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ([("a", 1), ("b", 1)], "duplicated"),
        ([("a", 1), (" a ", 2)], "duplicated"),  # nano trims routes
        ([("a", 0)], "1..65535"),
        ([("a", 65536)], "1..65535"),
        ([("  ", 3)], "route"),
        ([("x" * 256, 3)], "route"),
    ],
)
def test_route_dict_rejects_bad_entries(pairs: list[tuple[str, int]], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        wire.RouteDict(pairs)


def test_route_dict_is_two_way_and_immutable() -> None:
    routes_in = wire.RouteDict({" room.join ": 1, "onMessage": 2})
    assert dict(routes_in) == {"room.join": 1, "onMessage": 2}
    assert routes_in.route(2) == "onMessage"
    assert routes_in.code("nope") is None
    assert dict(routes_in.codes) == {1: "room.join", 2: "onMessage"}
    with pytest.raises(TypeError):
        routes_in.codes[3] = "x"  # type: ignore[index]


def test_whole_packet_encoders_refuse_what_a_decoder_would() -> None:
    codec = wire.MessageCodec(max_body=8)
    assert codec.push_packet("a", bytes(5)) == wire.encode_packet(wire.PacketType.DATA, b"\x06\x01a" + bytes(5))
    encoders: list[Callable[[], bytes]] = [
        lambda: codec.push_packet("a", bytes(6)),  # 3 + 6 > 8
        lambda: codec.response_packet(1, bytes(7)),
        lambda: codec.response_packet(300, bytes(6)),
        lambda: codec.request_packet(1, "a", bytes(5)),
        lambda: codec.packet(wire.Push("a", bytes(6))),
        lambda: wire.encode_packet(wire.PacketType.KICK, bytes(9), max_body=8),
    ]
    for encode in encoders:
        with pytest.raises(LocalProtocolError, match="packet size exceed: the packet is too large"):
            encode()
    with pytest.raises(LocalProtocolError):
        codec.response_packet(-1, b"")  # not the last cached head
    for id in (0, 127, 128, 16383, 16384):  # either side of the cached heads and of 2-byte varints
        assert codec.decode(codec.response_packet(id, b"x")[4:]) == wire.Response(id, b"x")


def _working_server(max_body: int = wire.MAX_BODY_SIZE) -> wire.Connection:
    conn = wire.Connection(wire.Role.SERVER, heartbeat=0, max_body=max_body)
    conn.receive_data(wire.encode_packet(wire.PacketType.HANDSHAKE, b"{}"), now=0)
    conn.next_event()
    conn.send(wire.HandshakeResponse(heartbeat=0))
    conn.receive_data(wire.encode_packet(wire.PacketType.HANDSHAKE_ACK), now=0)
    conn.next_event()
    assert conn.state is wire.State.WORKING
    return conn


def _general_path(conn: wire.Connection, data: bytes) -> list[object]:
    events: list[object] = []
    conn.receive_data(data, now=1)
    with contextlib.suppress(RemoteProtocolError):
        while (event := conn.next_event()) is not None:
            events.append(event)
    return events


_request_packets = st.builds(
    lambda id, route, body: wire.MessageCodec().request_packet(id, route, body), ids, st.text(max_size=20), bodies
)


@given(
    st.lists(_request_packets | st.binary(max_size=30), max_size=6),
    st.sampled_from([wire.MAX_BODY_SIZE, 40]),
)
@example(packets=[b"\x04\x00\x00\x03\x00\x81\x80"], max_body=wire.MAX_BODY_SIZE)  # an unterminated id
@example(packets=[b"\x04\x00\x00\x04\x00\x05\x02\xc3"], max_body=wire.MAX_BODY_SIZE)  # a route overrun
@example(packets=[b"\x04\x00\x00\x04\x00\x05\x01\xff"], max_body=wire.MAX_BODY_SIZE)  # a route not UTF-8
def test_the_fused_request_path_agrees_with_the_general_one(packets: list[bytes], max_body: int) -> None:
    # receive_requests either declines (taking nothing) or gives exactly the Requests the
    # general path decodes from the same bytes, which then holds nothing more
    data = b"".join(packets)
    fused = _working_server(max_body)
    requests = fused.receive_requests(data, now=1)
    general = _general_path(_working_server(max_body), data)
    if requests is None:
        assert _general_path(fused, data) == general  # nothing was taken
        return
    assert [wire.Request(*request) for request in requests] == general
    assert fused.last_received == 1
    assert fused.next_event() is None


def test_the_fused_request_path_declines_outside_working_and_after_eof() -> None:
    packet = wire.MessageCodec().request_packet(1, "a.b", b"{}")
    assert wire.Connection(wire.Role.SERVER, heartbeat=0).receive_requests(packet, now=0) is None
    conn = _working_server()
    conn.receive_data(packet[:3], now=0)  # something buffered: the general path goes on
    assert conn.receive_requests(packet, now=0) is None
    conn = _working_server()
    conn.receive_data(b"", now=0)
    assert conn.receive_requests(packet, now=0) is None
    assert isinstance(conn.next_event(), wire.ConnectionClosed)
    assert _working_server().receive_requests(bytearray(packet), now=0) is None
    assert _working_server().receive_requests(packet, now=0) == [(1, "a.b", b"{}")]


def cesu8(text: str) -> bytes:
    """``text`` as pomelo's JS client encodes it (protocol.js strencode): each UTF-16 code unit
    encoded on its own, so a character outside the BMP is two 3-byte surrogate sequences."""
    units = text.encode("utf-16-le")
    return "".join(chr(int.from_bytes(units[i : i + 2], "little")) for i in range(0, len(units), 2)).encode(
        "utf-8", "surrogatepass"
    )


@given(st.text(max_size=60), ids, bodies)
@example(text="s.\U0001f600", id=1, body=b"{}")
def test_a_cesu8_route_decodes_as_its_utf8_spelling(text: str, id: int, body: bytes) -> None:
    raw = cesu8(text)
    if len(raw) > wire.MAX_ROUTE_LENGTH:
        return
    codec = wire.MessageCodec()
    frame = codec.encode(wire.Request(id, "", body))  # flag + id + an empty route, then the body
    head = frame[: len(frame) - len(body) - 1]
    assert codec.decode(head + bytes((len(raw),)) + raw + body) == wire.Request(id, text, body)
    notify = bytes((wire.MessageType.NOTIFY << 1, len(raw))) + raw + body
    assert codec.decode(notify) == wire.Notify(text, body)
    assert wire.decode_route(raw) == text


@given(st.binary(max_size=40))
@example(raw="\ud83d".encode("utf-8", "surrogatepass"))  # a lone high surrogate: U+FFFD
@example(raw=b"\xff")
def test_a_route_decodes_to_text_or_raises_remote_protocol_error(raw: bytes) -> None:
    try:
        text = wire.decode_route(raw)
    except RemoteProtocolError:
        return
    text.encode()  # a str with no surrogate left: encodable as UTF-8
