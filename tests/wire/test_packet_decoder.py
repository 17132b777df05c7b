"""The packet decoder's work is linear in the bytes received, however they are chunked.

No timing assertions: the work is counted (bytes the decoder copies, times it looks at a fed
chunk), and the big cases only have to complete and decode correctly.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from tests.wire.strategies import packet_types
from trionano import wire


class CountingBytes(bytes):
    """A chunk that counts how often the decoder asks its length: a decoder that re-sums
    everything pending on every call asks once per pending chunk per call (quadratic)."""

    looks = 0

    def __len__(self) -> int:
        CountingBytes.looks += 1
        return super().__len__()


def feed_in_pieces(decoder: wire.PacketDecoder, stream: bytes, cuts: list[int]) -> list[wire.Packet]:
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:end])
        while (packet := decoder.next_packet()) is not None:
            out.append(packet)
    return out


@given(
    st.lists(st.tuples(packet_types, st.integers(0, 3000)), min_size=1, max_size=8),
    st.data(),
)
@example(packets=[(wire.PacketType.DATA, 16 * 1024)], data=None)  # the 5.4 s case, one byte at a time
def test_bytes_copied_are_linear_in_bytes_received(
    packets: list[tuple[wire.PacketType, int]], data: st.DataObject | None
) -> None:
    stream = b"".join(wire.encode_packet(t, bytes(n)) for t, n in packets)
    if data is None:
        cuts = list(range(1, len(stream)))
    else:
        # single bytes, small pieces and big ones, mixed
        sizes = data.draw(st.lists(st.sampled_from([1, 1, 1, 2, 3, 5, 64, 4096]), max_size=200))
        cuts = sorted({min(sum(sizes[: i + 1]), len(stream)) for i in range(len(sizes))} - {len(stream)})
    decoder = wire.PacketDecoder()
    out = feed_in_pieces(decoder, stream, cuts)
    assert [(p.type, len(p.body)) for p in out] == packets
    assert decoder.buffered == 0
    # at most six copies of each byte (see PacketDecoder's docstring)
    assert decoder._copied <= 6 * len(stream)


def test_each_fed_chunk_is_looked_at_a_bounded_number_of_times() -> None:
    stream = wire.encode_packet(wire.PacketType.DATA, bytes(2000)) * 3
    decoder = wire.PacketDecoder()
    CountingBytes.looks = 0
    packets = 0
    for i in range(len(stream)):
        decoder.feed(CountingBytes(stream[i : i + 1]))
        while decoder.next_packet() is not None:
            packets += 1
    assert packets == 3
    assert CountingBytes.looks <= 3 * len(stream)  # a re-summing decoder: ~len(stream)**2 / 6


def test_a_16_kib_packet_fed_one_byte_at_a_time() -> None:
    body = bytes(range(256)) * 64
    stream = wire.encode_packet(wire.PacketType.DATA, body) + wire.encode_packet(wire.PacketType.HEARTBEAT)
    out = feed_in_pieces(wire.PacketDecoder(), stream, list(range(1, len(stream))))
    assert [(p.type, p.body) for p in out] == [(wire.PacketType.DATA, body), (wire.PacketType.HEARTBEAT, b"")]


def test_65540_one_byte_feeds_make_the_largest_packet() -> None:
    body = bytes(range(256)) * 256  # exactly MAX_BODY_SIZE
    stream = wire.encode_packet(wire.PacketType.DATA, body)
    assert len(stream) == 65_540
    decoder = wire.PacketDecoder()
    out = feed_in_pieces(decoder, stream, list(range(1, len(stream))))
    assert out == [wire.Packet(wire.PacketType.DATA, body)]
    assert decoder._copied <= 6 * len(stream)


def test_a_connection_fed_one_byte_at_a_time() -> None:
    codec = wire.MessageCodec()
    server = wire.Connection(wire.Role.SERVER, heartbeat=10)
    stream = (
        wire.encode_packet(wire.PacketType.HANDSHAKE, wire.Handshake(type="t").encode())
        + wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
        + codec.request_packet(1, "a.b", bytes(16 * 1024))
    )
    events: list[wire.Event] = []
    for i in range(len(stream)):
        server.receive_data(stream[i : i + 1], now=i)
        while (event := server.next_event()) is not None:
            events.append(event)
            if isinstance(event, wire.Handshake):
                server.send(wire.HandshakeResponse(heartbeat=10))
    assert [type(e) for e in events] == [wire.Handshake, wire.HandshakeAck, wire.Request]
    assert events[-1] == wire.Request(1, "a.b", bytes(16 * 1024))
