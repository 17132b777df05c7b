"""WebSocket frames that carry no pomelo data: empty messages, pings, pongs. A read of them alone
is not the end of the stream (the connection goes on), and they are charged to the connection's
rate limit as packets are: a flood of them is refused (a refused ping is not answered), counted,
and kicked "rate limit", while a bystander is served. Real loopback sockets; clients by hand."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing
from wsproto.events import BytesMessage, CloseConnection, Event, Pong

from tests.runtime.apps import echo_components, wait_until
from tests.runtime.test_websocket import packets_of
from tests.runtime.test_websocket_engine import (
    ACK,
    CODEC,
    HANDSHAKE,
    HandClient,
    ScriptedTransport,
    data_packets,
    engine_alone,
    frame,
    hand_client,
    random_session,
)
from trionano import Config, RateLimit, Server, WebSocketEndpoint, wire
from trionano._websocket import WebSocketServerStream
from trionano.client import open_websocket_client

EMPTY = frame(0x2, b"")
#: frames without pomelo data, each charged once per frame
NO_DATA = {
    "ping": frame(0x9, b"are you there"),
    "pong": frame(0xA, b"unsolicited"),
    "empty binary": EMPTY,
    "empty text": frame(0x1, b""),
    "empty fragments": frame(0x2, b"", fin=False) + frame(0x0, b""),
}


def request(mid: int) -> bytes:
    return frame(0x2, CODEC.request_packet(mid, "echo.json", b'{"n":%d}' % mid))


@asynccontextmanager
async def ws_server(config: Config) -> AsyncIterator[tuple[Server, int]]:
    server = Server(echo_components(), config=config)
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, WebSocketEndpoint("127.0.0.1"))
        yield server, port
        server.shutdown()


# -- F1: a read without pomelo bytes is not the end ---------------------------------------------


@pytest.mark.parametrize(
    "reads",
    [
        [EMPTY],
        [EMPTY * 3],
        [frame(0x1, b"")],
        [frame(0x9, b"p"), frame(0xA, b"q")],
        [frame(0x2, b"", fin=False), frame(0x0, b"", fin=False), frame(0x0, b"")],
        [frame(0x2, b"", fin=False) + frame(0x9, b"mid") + frame(0x0, b"")],
        [EMPTY[:1], EMPTY[1:3], EMPTY[3:]],  # one empty message over three reads
        [EMPTY + frame(0x9, b"x")[:1], frame(0x9, b"x")[1:]],  # a ping's header split after an empty message
    ],
    ids=["empty", "three empty", "empty text", "ping+pong", "fragments", "ping mid-fragments", "split", "split-next"],
)
async def test_reads_without_payload_are_not_the_end_of_the_stream(reads: list[bytes]) -> None:
    # each element one read of the transport; then a message with data, then the end
    transport = ScriptedTransport([*reads, frame(0x2, b"data")])
    stream = WebSocketServerStream(transport, max_message_size=1000)
    with trio.fail_after(10):
        assert await stream.receive_some(100) == b"data"
        assert await stream.receive_some(100) == b""  # the transport's end: now it is


@pytest.mark.parametrize("name", NO_DATA)
async def test_a_frame_without_data_in_its_own_write_ends_nothing(name: str) -> None:
    config = Config(heartbeat=0)
    async with ws_server(config) as (server, port), hand_client(port) as client:
        await client.stream.send_all(request(1))
        assert data_packets(await packets_without_pongs(client)) == [wire.Response(1, b'{"n":1}')]
        await client.stream.send_all(NO_DATA[name])
        await client.stream.send_all(NO_DATA[name] + request(2) + NO_DATA[name])
        assert data_packets(await packets_without_pongs(client)) == [wire.Response(2, b'{"n":2}')]
        stats = server.statistics()
        assert (stats.sessions_open, dict(stats.kicks), stats.dropped_rate) == (1, {}, 0)


async def packets_without_pongs(client: HandClient) -> list[wire.Packet]:
    with trio.fail_after(10):
        while True:
            event = await client.next_event()
            if isinstance(event, Pong):
                continue
            assert isinstance(event, BytesMessage), event
            return packets_of(bytes(event.data))


# -- F2: charged to the rate limit ---------------------------------------------------------------

#: ten frames in the bucket, five refusals of patience; no refill to speak of during a test
TIGHT = Config(heartbeat=0, rate_limit=RateLimit(rate=0.001, burst=10, kick_after=5))


async def events_until_closed(client: HandClient) -> tuple[list[Event], int]:
    events: list[Event] = []
    with trio.fail_after(10):
        while True:
            event = await client.next_event()
            assert event is not None, f"TCP closed without a close frame after {events}"
            if isinstance(event, CloseConnection):
                return events, event.code
            events.append(event)


def kick_reason(event: Event) -> str:
    assert isinstance(event, BytesMessage), event
    (kick,) = packets_of(bytes(event.data))
    assert kick.type is wire.PacketType.KICK
    return wire.Kick.parse(kick.body).reason


@pytest.mark.parametrize("handshake", [True, False], ids=["working", "before the handshake"])
@pytest.mark.parametrize("name", ["ping", "pong", "empty binary", "empty text"])
async def test_frames_without_data_are_charged_refused_and_kicked(name: str, handshake: bool) -> None:
    async with ws_server(TIGHT) as (server, port), hand_client(port, handshake=handshake) as client:
        # ten taken (a ping answered), five refused (a ping not), the sixteenth kicked
        await client.stream.send_all(NO_DATA[name] * 16)
        events, code = await events_until_closed(client)
        pongs = [e for e in events if isinstance(e, Pong)]
        assert len(pongs) == (10 if name == "ping" else 0), events
        assert kick_reason(events[-1]) == "rate limit"
        assert code == 1000
        await wait_until(lambda: server.statistics().kicks.get("rate limit") == 1)
        assert server.statistics().dropped_rate == 5


async def test_empty_fragments_and_messages_among_data_are_each_charged() -> None:
    async with ws_server(TIGHT) as (server, port), hand_client(port) as client:
        # a request (one token), eight empty frames around it, then a request: all taken
        await client.stream.send_all(EMPTY * 3 + request(1) + NO_DATA["empty fragments"] + EMPTY * 3 + request(2))
        answered: list[wire.Message] = []
        with trio.fail_after(10):
            while len(answered) < 2:
                answered += data_packets(await client.packets())
        assert answered == [wire.Response(1, b'{"n":1}'), wire.Response(2, b'{"n":2}')]
        await client.stream.send_all(EMPTY * 6)  # five refused, the sixth kicked
        events, _ = await events_until_closed(client)
        assert kick_reason(events[-1]) == "rate limit"
        assert server.statistics().dropped_rate == 5


@pytest.mark.parametrize("seed", range(20))
async def test_a_check_that_takes_every_frame_reads_as_the_engine_alone(seed: int) -> None:
    # the charged frames skipped (pongs) or fed to the engine (pings, empty frames) change
    # nothing: random sessions cut into random reads, as in test_websocket_engine
    rng = random.Random(seed)
    charged = [0]

    def take() -> bool:
        charged[0] += 1
        return True

    for _ in range(10):
        limit = rng.choice([300, 1000, 70000])
        frames = random_session(rng, limit)
        expected, answers = engine_alone(frames, limit)
        stream_bytes = b"".join(frames)
        chunks = []
        while stream_bytes:
            size = rng.choice([1, 2, 3, 7, 14, rng.randrange(1, 200), rng.randrange(1, 1 << 17)])
            chunks.append(stream_bytes[:size])
            stream_bytes = stream_bytes[size:]
        transport = ScriptedTransport(chunks)
        stream = WebSocketServerStream(transport, max_message_size=limit)
        charged[0] = 0
        stream.limit_frames(take)
        received = bytearray()
        with trio.fail_after(10):
            while data := await stream.receive_some(rng.choice([None, rng.randrange(1, 500)])):
                received += data
        assert bytes(received) == expected
        assert bytes(transport.written) == answers
        # every ping, pong and empty data frame was charged, up to where the engine stopped
        # (an upper bound: the frames of the session that are such)
        assert charged[0] <= sum(f[0] in (0x89, 0x8A) or payload_length(f) == 0 for f in frames)


def payload_length(frame: bytes) -> int:
    length = frame[1] & 0x7F
    if length == 126:
        return int.from_bytes(frame[2:4], "big")
    if length == 127:
        return int.from_bytes(frame[2:10], "big")
    return length


async def test_without_a_rate_limit_every_ping_is_answered() -> None:
    async with ws_server(attrs.evolve(TIGHT, rate_limit=None)) as (server, port), hand_client(port) as client:
        await client.stream.send_all(frame(0x9, b"x") * 30 + request(1))
        pongs = 0
        with trio.fail_after(10):
            while True:
                event = await client.next_event()
                if isinstance(event, Pong):
                    pongs += 1
                    continue
                assert isinstance(event, BytesMessage)
                assert data_packets(packets_of(bytes(event.data))) == [wire.Response(1, b'{"n":1}')]
                break
        assert pongs == 30
        assert server.statistics().dropped_rate == 0


async def test_a_ping_flood_is_kicked_while_a_bystander_is_served() -> None:
    # the default limit (500/s, bursts of 2,000): pings as fast as the client can write them
    config = Config(heartbeat=0)
    async with ws_server(config) as (server, port), open_websocket_client(f"ws://127.0.0.1:{port}/") as bystander:
        assert await bystander.request("echo.json", {"n": 0}) == {"n": 0}
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with tcp:
            flooder = HandClient(tcp)
            await flooder.upgrade()
            await flooder.handshake()
            kicked = trio.Event()
            reason: list[str] = []

            async def read_flooder() -> None:
                events, _ = await events_until_closed(flooder)
                reason.append(kick_reason(events[-1]))
                kicked.set()

            async def flood() -> None:
                pings = frame(0x9, b"p" * 100) * 500
                try:
                    while not kicked.is_set():
                        await tcp.send_all(pings)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            served = 0
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_flooder)
                    nursery.start_soon(flood)
                    while not kicked.is_set():
                        served += 1
                        assert await bystander.request("echo.json", {"n": served}) == {"n": served}
            assert reason == ["rate limit"]
        assert await bystander.request("echo.json", {"n": -1}) == {"n": -1}
        stats = server.statistics()
        assert stats.kicks.get("rate limit") == 1
        assert stats.dropped_rate > 0
        assert stats.sessions_open == 1


async def test_a_peer_that_pings_and_never_reads_is_held_by_backpressure() -> None:
    # no rate limit, no heartbeat: what bounds the pongs is the reader, which writes them and
    # reads nothing more until they are taken; a bystander is served meanwhile
    config = Config(heartbeat=0, rate_limit=None)
    async with ws_server(config) as (server, port), open_websocket_client(f"ws://127.0.0.1:{port}/") as bystander:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        tcp = trio.SocketStream(sock)
        async with tcp:
            pinger = HandClient(tcp)
            await pinger.upgrade()
            await pinger.handshake()
            pings = frame(0x9, b"p" * 125) * 4096  # about 0.5 MB a write
            sent = 0
            attempted = 400 * len(pings)  # 200 MB, were nothing to stop it

            async def ping() -> None:
                nonlocal sent
                while sent < attempted:
                    await tcp.send_all(pings)
                    sent += len(pings)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping)
                await trio.testing.wait_all_tasks_blocked(cushion=0.5)
                assert await bystander.request("echo.json", {"n": 1}) == {"n": 1}
                await trio.testing.wait_all_tasks_blocked(cushion=0.5)
                stalled = sent
                assert stalled < attempted // 4  # the kernel's buffers, not the server's memory
                assert await bystander.request("echo.json", {"n": 2}) == {"n": 2}
                await trio.testing.wait_all_tasks_blocked(cushion=0.5)
                assert sent == stalled
                nursery.cancel_scope.cancel()
        await wait_until(lambda: server.statistics().sessions_open == 1, timeout=10)


async def test_the_handshake_ack_and_requests_after_it_still_count_as_packets() -> None:
    # the pomelo handshake's two packets stay free; a ping before them is charged
    async with ws_server(TIGHT) as (server, port), hand_client(port, handshake=False) as client:
        await client.stream.send_all(frame(0x9, b"x") * 9 + frame(0x2, HANDSHAKE))
        events: list[Event] = []
        with trio.fail_after(10):
            while len(events) < 10:
                event = await client.next_event()
                assert event is not None
                events.append(event)
        assert sum(isinstance(e, Pong) for e in events) == 9
        await client.stream.send_all(frame(0x2, ACK) + request(1))  # the tenth token
        assert data_packets(await packets_without_pongs(client)) == [wire.Response(1, b'{"n":1}')]
        assert server.statistics().dropped_rate == 0


async def test_a_refused_ping_split_by_the_close_is_still_skipped(autojump_clock: trio.testing.MockClock) -> None:
    # the kick's close while a refused ping is half read: the closing wait skips the rest of it
    # and sees the peer's close frame (not garbage, after which it could only wait for quiet)
    peer, server_end = trio.testing.memory_stream_pair()
    stream = WebSocketServerStream(server_end, max_message_size=1000)
    stream.limit_frames(lambda: False)
    ping = frame(0x9, b"refused, and split")
    await peer.send_all(frame(0x2, b"data") + ping[:8])
    assert await stream.receive_some(100) == b"data"
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(stream.aclose)
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(close_of(await peer.receive_some(100)), bytes)  # our close frame, 1000
        await peer.send_all(ping[8:] + frame(0x8, (1000).to_bytes(2, "big")) + frame(0x9, b"more"))
    assert trio.current_time() == start  # done at the peer's close, with no wait for quiet
    assert await peer.receive_some(100) == b""  # and the transport closed, no pong sent


def close_of(data: bytes | bytearray) -> bytes:
    assert data[:2] == b"\x88\x02", data
    assert int.from_bytes(data[2:4], "big") == 1000
    return bytes(data)


class Kicked(Exception):
    pass


async def test_after_a_check_raises_the_closing_wait_parses_from_that_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # the kick's exception stops reading at the frame checked; aclose parses on from there and
    # sees the peer's close frame, which follows that frame in the same read
    peer, server_end = trio.testing.memory_stream_pair()
    stream = WebSocketServerStream(server_end, max_message_size=1000)

    def kick() -> bool:
        raise Kicked

    stream.limit_frames(kick)
    await peer.send_all(frame(0x2, b"data") + EMPTY + frame(0x8, (1000).to_bytes(2, "big")))
    with pytest.raises(Kicked):
        await stream.receive_some(100)
    assert await stream.receive_some(100) == b""  # no more reading
    start = trio.current_time()
    await stream.aclose()
    assert trio.current_time() == start  # the peer's close was found: no wait for quiet
    close_of(await peer.receive_some(100))
    assert await peer.receive_some(100) == b""


async def test_the_closing_wait_does_not_parse_a_flood(autojump_clock: trio.testing.MockClock) -> None:
    # after our close, a peer's frames are parsed up to a bound (64 KiB): a ping flood then is
    # read and dropped unparsed until the peer goes quiet, so its close frame past the flood
    # goes unseen; one sent at once is found
    for flood, waits in [(0, False), (1000, False), (2000, True)]:
        peer, server_end = trio.testing.memory_stream_pair()
        stream = WebSocketServerStream(server_end, max_message_size=1000)
        await peer.send_all(frame(0x9, b"p" * 100) * flood + frame(0x8, (1000).to_bytes(2, "big")))
        start = trio.current_time()
        await stream.aclose()
        assert (trio.current_time() > start) == waits, flood
        close_of(await peer.receive_some(100))
