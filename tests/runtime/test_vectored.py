"""Vectored writes: a connection's writer hands the kernel the packets themselves (``writev``)
rather than a copy joined for that connection, so members of a group that do not read hold the
broadcast's shared packets, not one private copy each (attack4's fault 6: 1,000 stalled members
resuming held 1,000 joined copies of up to 256 KiB). FdStream's ``send_parts_nowait`` and
``send_all_parts`` (short writes at every boundary, more than IOV_MAX buffers, a close while
waiting), the WebSocket's framing over them, the memory a stalled group holds (tracemalloc:
a count of bytes, not a timing), and the order of the bytes on the wire. Real loopback
sockets throughout."""

from __future__ import annotations

import gc
import socket
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.events import BytesMessage, Ping

from tests.runtime.apps import tls_contexts
from tests.runtime.test_fdstream import fd_stream_pair, fill, reuse_descriptor
from tests.runtime.test_websocket_engine import HandClient
from trionano import Component, Components, Config, Group, Server, Session, TCPEndpoint, WebSocketEndpoint, wire
from trionano._agent import JOIN_BELOW, MAX_WRITE
from trionano._fdstream import IOV_MAX, Buffer, FdStream, coalesce, parts_after
from trionano._websocket import WebSocketServerStream
from trionano.testing import RawConnection

CODEC = wire.MessageCodec()
TRANSPORTS = ["tcp", "ws", "tls", "wss"]

# parts of every size around the boundaries that matter, empty ones among them
LAYOUT: list[bytes] = [bytes([65 + i % 26]) * n for i, n in enumerate([0, 1, 2, 0, 3, 7, 1, 0, 5, 1])]
buffers = st.lists(st.binary(max_size=40), max_size=12)


def joined(parts: Sequence[Buffer]) -> bytes:
    return b"".join(bytes(part) for part in parts)


async def read_exactly(stream: trio.abc.ReceiveStream, size: int, chunk: int = 65536) -> bytes:
    data = bytearray()
    while len(data) < size:
        more = await stream.receive_some(min(chunk, size - len(data)))
        assert more, f"end of file after {len(data)} of {size} bytes"
        data += more
    return bytes(data)


# -- parts_after ---------------------------------------------------------------------------------


@given(buffers, st.data())
def test_parts_after_is_the_tail_without_a_copy(parts: list[bytes], data: st.DataObject) -> None:
    whole = joined(parts)
    start = data.draw(st.integers(min_value=0, max_value=len(whole) + 3))
    tail = parts_after(parts, start)
    assert joined(tail) == whole[start:]
    for index, piece in enumerate(tail):  # the parts themselves, or a view of the first one's end
        if isinstance(piece, memoryview):
            assert index == 0
            assert any(piece.obj is part for part in parts)
        else:
            assert any(piece is part for part in parts)


@given(buffers, st.integers(min_value=1, max_value=60))
def test_coalesce_joins_only_runs_up_to_the_limit(parts: list[bytes], limit: int) -> None:
    chunks = list(coalesce(parts, limit))
    assert joined(chunks) == joined(parts)
    for chunk in chunks:  # a part itself, or a join of parts within the limit
        assert any(chunk is part for part in parts) or len(chunk) <= limit


def test_parts_after_refuses_a_negative_start() -> None:
    with pytest.raises(ValueError, match="negative"):
        parts_after([b"x"], -1)


# -- FdStream ------------------------------------------------------------------------------------


async def test_send_all_parts_from_every_byte_boundary() -> None:
    # a short write may stop anywhere: going on from each byte of the layout (empty parts, parts
    # of one byte, the ends of parts) writes exactly what follows it
    left, right = await fd_stream_pair()
    async with left, right:
        whole = joined(LAYOUT)
        for start in range(len(whole) + 1):
            await left.send_all_parts(LAYOUT, start)
            assert await read_exactly(right, len(whole) - start) == whole[start:]
        sent = left.send_parts_nowait(LAYOUT)
        assert sent == len(whole)
        assert await read_exactly(right, len(whole)) == whole


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=70_000), min_size=1, max_size=40), st.randoms())
def test_short_writes_keep_every_byte_in_order(sizes: list[int], rnd: Any) -> None:
    # a clogged socket: the first writev is short or refused, then writes go on from where each
    # stopped while the peer reads in random amounts
    parts = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    whole = joined(parts)

    async def main() -> None:
        left, right = await fd_stream_pair()
        left.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        right.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with left, right:
            try:
                sent = left.send_parts_nowait(parts)
            except trio.WouldBlock:
                sent = 0
            received = bytearray()

            async def reader() -> None:
                while len(received) < len(whole):
                    received.extend(await right.receive_some(rnd.randint(1, 9000)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                if sent < len(whole):
                    await left.send_all_parts(parts, sent)
            assert bytes(received) == whole

    trio.run(main)


async def test_more_parts_than_iov_max() -> None:
    parts = [bytes([i % 256]) * (1 + i % 3) for i in range(3 * IOV_MAX + 5)]
    whole = joined(parts)
    left, right = await fd_stream_pair()
    async with left, right:
        left.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        assert left.send_parts_nowait(parts) == len(whole)  # several writev calls, none short
        assert await read_exactly(right, len(whole)) == whole
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.send_all_parts, parts)
            assert await read_exactly(right, len(whole), chunk=777) == whole
        # a short call among the turns: what went out is counted, and the rest follows in order
        big = [bytes([i % 256]) * 300 for i in range(3 * IOV_MAX)]
        fill_peer = joined(big)
        left.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sent = left.send_parts_nowait(big)
        assert 0 < sent < len(fill_peer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.send_all_parts, big, sent)
            assert await read_exactly(right, len(fill_peer)) == fill_peer


async def test_a_full_send_buffer_would_block_and_nothing_is_written() -> None:
    left, right = await fd_stream_pair()
    fill(left)
    async with left, right:
        with pytest.raises(trio.WouldBlock):
            left.send_parts_nowait([b"a", b"b"])
        with pytest.raises(trio.WouldBlock):
            left.send_parts_nowait([b"c"] * (IOV_MAX + 1))
        assert left.send_parts_nowait([]) == 0


async def test_a_close_wakes_a_blocked_send_all_parts_and_it_never_writes_again() -> None:
    left, right = await fd_stream_pair()
    fill(left)
    async with right:
        outcome: list[BaseException] = []

        async def blocked() -> None:
            try:
                await left.send_all_parts([b"x" * 1000, b"y" * 1000])
            except trio.ClosedResourceError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                left.send_parts_nowait([b"z"])
            with pytest.raises(trio.BusyResourceError):
                await left.send_all_parts([b"z"])
            old_fd = left.socket.fileno()
            await left.aclose()
        assert len(outcome) == 1
    # the descriptor number goes to another socket: nothing is written onto it
    opened, _newcomer, newcomer_peer = reuse_descriptor(old_fd)
    try:
        with pytest.raises(trio.ClosedResourceError):
            left.send_parts_nowait([b"into someone else's socket"])
        with pytest.raises(trio.ClosedResourceError):
            await left.send_all_parts([b"into someone else's socket"])
        with pytest.raises(BlockingIOError):
            newcomer_peer.recv(100)
    finally:
        for sock in opened:
            sock.close()


async def test_a_cancelled_send_all_parts_writes_nothing_and_eof_ends_sending() -> None:
    left, right = await fd_stream_pair()
    async with left, right:
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await left.send_all_parts([b"lost"])
        await left.send_all_parts([b"kept"])
        assert await right.receive_some(10) == b"kept"
        await left.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            left.send_parts_nowait([b"x"])
        with pytest.raises(trio.ClosedResourceError):
            await left.send_all_parts([b"x"])
        assert await right.receive_some(10) == b""


async def test_a_reset_peer_is_broken() -> None:
    left, right = await fd_stream_pair()
    async with left:
        await right.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await send_parts_until_broken(left)


async def send_parts_until_broken(stream: FdStream) -> None:
    while True:
        await stream.send_all_parts([b"x" * 65536, b"y" * 65536])


# -- the WebSocket's framing over them ------------------------------------------------------------


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """A server's (unmasked) frames, whole: (opcode byte, payload)."""
    frames = []
    pos = 0
    while pos < len(data):
        head, length = data[pos], data[pos + 1] & 0x7F
        assert not data[pos + 1] & 0x80, "a server's frames are not masked"
        start = pos + 2
        if length == 126:
            length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        elif length == 127:
            length, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
        frames.append((head, data[start : start + length]))
        pos = start + length
    assert pos == len(data), "a frame cut short"
    return frames


async def ws_over_fd() -> tuple[WebSocketServerStream, FdStream, FdStream]:
    left, right = await fd_stream_pair()
    return WebSocketServerStream(left, max_message_size=1 << 20), left, right


@pytest.mark.parametrize("size", [10, 125, 126, 20_000, 70_000, MAX_WRITE])
async def test_a_websocket_message_of_parts_is_one_frame(size: int) -> None:
    ws, _left, right = await ws_over_fd()
    async with ws, right:
        parts = [bytes([i % 256]) * (size // 7 + (1 if i < size % 7 else 0)) for i in range(7)]
        payload = joined(parts)
        head = 2 if size < 126 else 4 if size < 65536 else 10

        async def send() -> None:
            sent = ws.send_parts_nowait(parts)
            if sent < size:  # the socket pair's buffer took part of it: the rest is under way
                await ws.send_all_parts(parts, sent)
            await ws.send_all_parts(parts)
            await ws.send_all(payload)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            received = await read_exactly(right, 3 * (head + size))
        assert server_frames(received) == [(0x82, payload)] * 3


async def test_a_websocket_message_under_way_is_whole_before_a_pong() -> None:
    # the transport is clogged: the message goes out partly, the rest is kept as references to
    # its parts, and the pong the receiver owes waits for the message's end
    ws, left, right = await ws_over_fd()
    left.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    async with ws, right:
        parts = [b"p" * 30_000, b"q" * 30_000, b"r" * 5]
        payload = joined(parts)
        whole_messages = 0
        while (sent := ws.send_parts_nowait(parts)) == len(payload):
            whole_messages += 1
        await right.send_all(bytes([0x89, 0x84]) + bytes(4) + b"ping")  # a masked ping, zero key
        expected = (whole_messages + 1) * (4 + len(payload)) + 2 + 4
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.receive_some)  # takes the ping; its pong waits for its turn
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ws.send_all_parts, parts, sent)
            with trio.fail_after(30):
                received = await read_exactly(right, expected)
            nursery.cancel_scope.cancel()
        assert server_frames(bytes(received)) == [(0x82, payload)] * (whole_messages + 1) + [(0x8A, b"ping")]


async def test_a_websocket_start_without_a_message_under_way_is_refused() -> None:
    ws, _left, right = await ws_over_fd()
    async with ws, right:
        with pytest.raises(ValueError, match="under way"):
            await ws.send_all_parts([b"abc"], 1)


# -- a group that does not read holds the broadcast's packets, not a copy each -------------------


class Room(Component):
    def __init__(self) -> None:
        self.group = Group("room")

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}


class Member:
    """A client that reads only when told to: TCP (RawConnection) or WebSocket (by hand)."""

    def __init__(self, transport: str, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.raw = RawConnection(stream) if transport in ("tcp", "tls") else None  # type: ignore[arg-type]
        self.ws = HandClient(stream) if transport in ("ws", "wss") else None
        self.decoder = wire.PacketDecoder()

    async def join(self) -> None:
        if self.raw is not None:
            await self.raw.handshake()
            await self.raw.send(CODEC.request_packet(1, "room.join", b"{}"))
            assert isinstance(await self.raw.receive_message(), wire.Response)
        else:
            assert self.ws is not None
            await self.ws.upgrade()
            await self.ws.handshake()
            await self.ws.send(BytesMessage(CODEC.request_packet(1, "room.join", b"{}")))
            (packet,) = await self.ws.packets()
            assert isinstance(CODEC.decode(packet.body), wire.Response)

    async def packets(self, count: int) -> list[wire.Packet]:
        """The next ``count`` packets (a WebSocket message may hold several)."""
        got: list[wire.Packet] = []
        while len(got) < count:
            if self.raw is not None:
                got.append(await self.raw.receive_packet())
            else:
                assert self.ws is not None
                event = await self.ws.next_event()
                if isinstance(event, Ping):
                    continue
                assert isinstance(event, BytesMessage), event
                self.decoder.feed(event.data)
                while (packet := self.decoder.next_packet()) is not None:
                    got.append(packet)
        assert len(got) == count
        return got


@asynccontextmanager
async def stalled_group(
    transport: str, members: int, config: Config | None = None, receive_buffer: int | None = 4096
) -> AsyncIterator[tuple[Server, Room, list[Member]]]:
    """A server and ``members`` clients in its group "room", each with a receive buffer of
    ``receive_buffer`` bytes (None: the kernel's): once joined they read only when a test
    tells them to."""
    room = Room()
    components = Components()
    components.register(room, name="room")
    server = Server(components, config or Config(heartbeat=0))
    server_tls, client_tls = tls_contexts() if transport in ("tls", "wss") else (None, None)
    endpoint: TCPEndpoint | WebSocketEndpoint
    if transport in ("tcp", "tls"):
        endpoint = TCPEndpoint("127.0.0.1", ssl_context=server_tls)
    else:
        endpoint = WebSocketEndpoint("127.0.0.1", ssl_context=server_tls)
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, endpoint)
        clients: list[Member] = []
        for _ in range(members):
            sock = trio.socket.socket()
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            await sock.connect(("127.0.0.1", port))
            stream: trio.abc.Stream = trio.SocketStream(sock)
            if client_tls is not None:
                stream = trio.SSLStream(stream, client_tls, server_hostname="127.0.0.1")
            member = Member(transport, stream)
            await member.join()
            clients.append(member)
        try:
            yield server, room, clients
        finally:
            for member in clients:  # gone first: a WebSocket's close then waits for no answer
                await member.stream.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stalled_members_hold_the_shared_packets_not_a_joined_copy_each(transport: str) -> None:
    # 40 members that do not read, 40 broadcasts of 10 KB queued for each at once: every writer
    # writes what is queued (up to MAX_WRITE) and waits for its client. What the server holds
    # then is the 40 packets, shared, and little per member; joined, it was 40 copies of up to
    # 256 KiB (10 MB), as each writer waited with its own (over TLS, and their encryption too).
    members, broadcasts, size = 40, 40, 10_000
    async with stalled_group(transport, members) as (server, room, clients):
        await trio.testing.wait_all_tasks_blocked(0.05)
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for seq in range(broadcasts):
                assert room.group.broadcast("onBig", {"s": seq, "p": "x" * size}) == members
            await trio.testing.wait_all_tasks_blocked(0.2)  # every writer waits for its client
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        grown = held - before
        shared = broadcasts * (size + 40)
        assert server.statistics().dropped_slow == 0
        assert grown < shared + members * 2 * JOIN_BELOW, f"{grown} bytes held for {shared} bytes of broadcasts"
        # and every member then gets all of them, in order
        for member in clients:
            packets = await member.packets(broadcasts)
            bodies = [CODEC.decode(packet.body).body for packet in packets]
            assert [int(body[5 : body.index(b",")]) for body in bodies] == list(range(broadcasts))


# -- the order of the bytes on the wire ------------------------------------------------------------

packet_sizes = st.lists(st.integers(min_value=0, max_value=60_000), min_size=1, max_size=30)


@pytest.mark.parametrize("transport", TRANSPORTS)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(sizes=packet_sizes, merge=st.booleans())
def test_what_the_writer_gathers_arrives_whole_and_in_order(transport: str, sizes: list[int], merge: bool) -> None:
    # Pushes and broadcasts of sizes around JOIN_BELOW and MAX_WRITE, queued while the client
    # does not read (some merged in a window): joined or vectored, the client reads each whole
    # and in order
    config = Config(heartbeat=0, merge_window=0.01 if merge else None, outbox_size=1000, outbox_bytes=8 << 20)

    async def main() -> None:
        async with stalled_group(transport, 1, config, receive_buffer=None) as (server, room, (member,)):
            (session,) = server.sessions.values()
            for seq, size in enumerate(sizes):
                body = {"s": seq, "p": "y" * size}
                if seq % 2:
                    room.group.broadcast("onB", body)
                else:
                    session.push("onP", body)
            packets = await member.packets(len(sizes))
            got = [CODEC.decode(packet.body) for packet in packets]
            assert [(m.route, len(m.body)) for m in got] == [  # type: ignore[union-attr]
                ("onB" if seq % 2 else "onP", len(b'{"s":%d,"p":""}' % seq) + size) for seq, size in enumerate(sizes)
            ]
            assert server.statistics().dropped_slow == 0

    trio.run(main)
