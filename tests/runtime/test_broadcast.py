"""Fan-out: a broadcast is encoded once, queued without waiting, and slow members never block
the others; the slow-consumer policy (drop and count, or kick) handles them."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from tests.runtime.apps import Echo, wait_until
from trionano import Components, Config, Server, SlowConsumerPolicy, TCPEndpoint, wire

SESSIONS = 1000
SLOW = 10
BROADCASTS = 30
PAYLOAD = {"text": "x" * 2000}


async def connect(port: int, *, slow: bool) -> trio.SocketStream:
    sock = trio.socket.socket()
    if slow:  # a tiny window, so a client that never reads backs up at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    handshake = wire.encode_packet(wire.PacketType.HANDSHAKE)
    ack = wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
    await stream.send_all(handshake + ack + wire.MessageCodec().request_packet(1, "echo.join", b""))
    decoder = wire.PacketDecoder()
    seen: list[wire.Packet] = []
    while len(seen) < 2:  # the handshake response and the join's response
        decoder.feed(await stream.receive_some(4096))
        while (packet := decoder.next_packet()) is not None:
            seen.append(packet)
    return stream


async def count_pushes(stream: trio.SocketStream, want: int, got: list[int]) -> None:
    decoder = wire.PacketDecoder()
    n = 0
    while n < want:
        decoder.feed(await stream.receive_some(65536))
        while (packet := decoder.next_packet()) is not None:
            n += packet.type is wire.PacketType.DATA
    got.append(n)


@pytest.mark.parametrize("policy", list(SlowConsumerPolicy))
async def test_broadcast_to_1000_sessions_where_10_never_read(policy: SlowConsumerPolicy) -> None:
    echo = Echo()
    components = Components()
    components.register(echo, name="echo")
    # slow_consumer_after short: the policy applies once a slow client's writer has been blocked
    # that long with 16 messages queued; at the default (1 s) the outcome would depend on how fast
    # the 30 broadcasts run (a faster server finished them within the second and kicked no one)
    config = Config(outbox_size=16, slow_consumer=policy, slow_consumer_after=0.001, heartbeat=0, shutdown_timeout=2)
    server = Server(components, config)
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, TCPEndpoint("127.0.0.1", 0, send_buffer=4096))
        streams: list[trio.SocketStream] = []

        async def open_one(slow: bool) -> None:
            streams.append(await connect(port, slow=slow))

        async with trio.open_nursery() as connecting:
            for i in range(SESSIONS):
                connecting.start_soon(open_one, i < SLOW)
        assert echo.group.count() == SESSIONS
        fast = [s for s in streams if s.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 8192]
        assert len(fast) == SESSIONS - SLOW
        encoded_before = server.statistics().encoded
        got: list[int] = []
        async with trio.open_nursery() as readers:
            for stream in fast:
                readers.start_soon(count_pushes, stream, BROADCASTS, got)
            for _ in range(BROADCASTS):
                echo.group.broadcast("onShout", PAYLOAD)
                await trio.testing.wait_all_tasks_blocked()  # a server broadcasting at a steady rate
        assert got == [BROADCASTS] * (SESSIONS - SLOW)  # every reader got every push
        assert server.statistics().encoded - encoded_before == BROADCASTS  # one encode per broadcast
        if policy is SlowConsumerPolicy.DROP:
            assert server.statistics().dropped_slow > 0
            assert server.statistics().slow_kicks == 0
        else:
            assert server.statistics().slow_kicks == SLOW
            await wait_until(lambda: len(server.sessions) == SESSIONS - SLOW)
        for stream in streams:
            await stream.aclose()
        server.shutdown()
