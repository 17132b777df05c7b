"""The malformed-input matrix over real sockets: each bad input gets its documented reaction,
nothing escapes a nursery, and another client keeps being served throughout."""

from __future__ import annotations

import json
import logging
import random

import pytest
import trio

from tests.runtime.apps import echo_components, wait_until
from trionano import wire
from trionano.testing import RawConnection, RunningServer, open_test_server

CODEC = wire.MessageCodec()
HEARTBEAT = wire.encode_packet(wire.PacketType.HEARTBEAT)


def data(frame: bytes) -> bytes:
    return wire.encode_packet(wire.PacketType.DATA, frame)


# name, handshake first?, bytes sent, the Kick reason expected (a clean close after it)
KICKED = [
    ("bad packet type", True, b"\x07\x00\x00\x00", "wrong packet type"),
    ("packet type zero", True, b"\x00\x00\x00\x00", "wrong packet type"),
    ("oversize length", True, b"\x04\x01\x00\x01", "packet size exceed"),
    ("data before handshake", False, CODEC.request_packet(1, "echo.json", b"{}"), "not yet ACK"),
    ("bad route code", True, data(b"\x01\x01\xff\xff{}"), "route info not found"),
    ("varint overflow", True, data(b"\x00" + b"\xff" * 10 + b"\x01\x09echo.json{}"), "wrong message"),
    ("unterminated varint", True, data(b"\x00\x81\x82"), "wrong message"),
    ("truncated route code", True, data(b"\x03\x00"), "wrong message"),
    ("route overruns message", True, data(b"\x02\x05ab"), "wrong message"),
    ("route not utf-8", True, data(b"\x02\x02\xff\xfe{}"), "wrong message"),
    ("message type 4", True, data(b"\x08\x00"), "wrong message type"),
    ("response from a client", True, data(b"\x04\x01{}"), "wrong message type"),
    ("handshake twice", True, wire.encode_packet(wire.PacketType.HANDSHAKE, b"{}"), "handshake received twice"),
    ("handshake not json", False, wire.encode_packet(wire.PacketType.HANDSHAKE, b"{nope"), "invalid handshake"),
    (
        "handshake deeply nested",
        False,
        wire.encode_packet(wire.PacketType.HANDSHAKE, b"[" * 50000),
        "invalid handshake",
    ),
    ("ack before handshake", False, wire.encode_packet(wire.PacketType.HANDSHAKE_ACK), "handshake ack"),
]


async def bystander_round_trip(client_conn: RawConnection, n: int) -> None:
    await client_conn.send(CODEC.request_packet(n, "echo.json", b'{"n":%d}' % n))
    assert await client_conn.receive_message() == wire.Response(n, b'{"n":%d}' % n)


async def open_bystander(running: RunningServer) -> tuple[RawConnection, trio.SocketStream]:
    stream = await trio.open_tcp_stream(running.host, running.port)
    conn = RawConnection(stream)
    await conn.handshake()
    return conn, stream


@pytest.mark.parametrize(("name", "handshake", "payload", "reason"), KICKED, ids=[k[0] for k in KICKED])
async def test_protocol_error_is_kicked_with_a_reason(
    name: str, handshake: bool, payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_test_server(echo_components()) as running:
        bystander, stream = await open_bystander(running)
        async with stream:
            await bystander_round_trip(bystander, 1)
            async with running.raw() as bad:
                if handshake:
                    await bad.handshake()
                await bad.send(payload)
                packets = await bad.receive_until_closed()
            assert packets, "expected a Kick before the close"
            assert packets[-1].type is wire.PacketType.KICK, packets
            assert reason in wire.Kick.parse(packets[-1].body).reason
            await bystander_round_trip(bystander, 2)
            assert running.server.statistics().protocol_errors == 1
            await wait_until(lambda: len(running.server.sessions) == 1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no tracebacks for a peer's mistake"


async def test_packets_before_the_bad_header_are_processed_first() -> None:
    async with open_test_server(echo_components()) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(CODEC.request_packet(9, "echo.json", b'{"a":1}') + b"\x07\x00\x00\x00")
        packets = await raw.receive_until_closed()
        messages = [CODEC.decode(p.body) for p in packets if p.type is wire.PacketType.DATA]
        assert messages == [wire.Response(9, b'{"a":1}')]
        assert packets[-1].type is wire.PacketType.KICK


async def test_data_before_ack_is_kicked() -> None:
    async with open_test_server(echo_components()) as running, running.raw() as raw:
        await raw.send(wire.encode_packet(wire.PacketType.HANDSHAKE, b""))
        assert (await raw.receive_packet()).type is wire.PacketType.HANDSHAKE
        await raw.send(CODEC.request_packet(1, "echo.json", b"{}"))
        packets = await raw.receive_until_closed()
        assert "not yet ACK" in wire.Kick.parse(packets[-1].body).reason


async def test_truncated_header_then_close_is_a_clean_close() -> None:
    async with open_test_server(echo_components()) as running:
        bystander, stream = await open_bystander(running)
        async with stream:
            async with running.raw() as raw:
                await raw.handshake()
                await raw.send(b"\x04\x00")
            await wait_until(lambda: running.server.statistics().sessions_closed == 1)
            await bystander_round_trip(bystander, 1)
            assert running.server.statistics().protocol_errors == 0


async def test_truncated_body_then_close_is_a_clean_close() -> None:
    async with open_test_server(echo_components()) as running:
        async with running.raw() as raw:
            await raw.handshake()
            await raw.send(CODEC.request_packet(1, "echo.json", b'{"long": "body"}')[:-3])
        await wait_until(lambda: running.server.statistics().sessions_closed == 1)


@pytest.mark.parametrize(
    ("route", "body", "code"),
    [
        ("nope.missing", b"{}", 404),  # unknown route: nano never answers, trionano does
        ("echo", b"{}", 404),  # no dot
        ("echo.point", b"not json", 400),  # undecodable body
        ("echo.point", b'{"x": 1}', 400),  # JSON, but not the handler's type
        ("echo.ping", b"\x0a\x02\xff\xfe", 400),  # protobuf whose string is not UTF-8
        ("echo.json", b"\xc3\x28", 400),  # not UTF-8
    ],
)
async def test_bad_request_gets_an_error_response_and_the_connection_lives(route: str, body: bytes, code: int) -> None:
    async with open_test_server(echo_components()) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(CODEC.request_packet(5, route, body))
        response = await raw.receive_message()
        assert isinstance(response, wire.Response)
        assert response.id == 5
        assert json.loads(response.body)["code"] == code
        await bystander_round_trip(raw, 6)  # the same connection goes on


async def test_bad_notify_is_logged_and_the_connection_lives(caplog: pytest.LogCaptureFixture) -> None:
    async with open_test_server(echo_components()) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(CODEC.notify_packet("nope.missing", b"{}") + CODEC.notify_packet("echo.point", b"[1"))
        await bystander_round_trip(raw, 1)
        assert running.server.statistics().unknown_routes == 1
    assert any("unknown route" in r.getMessage() for r in caplog.records)
    assert any("undecodable body" in r.getMessage() for r in caplog.records)


async def test_random_garbage_never_hurts_the_server() -> None:
    rng = random.Random(20261124)
    async with open_test_server(echo_components()) as running:
        bystander, stream = await open_bystander(running)
        async with stream:
            for i in range(40):
                async with running.raw() as raw:
                    if i % 2:
                        await raw.handshake()
                    blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
                    await raw.send(blob)
                    with trio.move_on_after(0.2):  # closed, or waiting for more bytes
                        await raw.receive_until_closed()
                await bystander_round_trip(bystander, i + 1)
        await wait_until(lambda: len(running.server.sessions) == 1)
