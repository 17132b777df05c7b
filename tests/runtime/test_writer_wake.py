"""The writer's wake-ups, over TCP and WebSocket: a connection's writer waits for its outbox
with ``trio.lowlevel.wait_task_rescheduled`` and whatever queues or closes the outbox wakes it
(trionano/_agent.py, ``_writer``). A missed wake is a hang: the packet stays in the outbox.

trio's MockClock is frozen in every test, so nothing that runs on time (a heartbeat, a merge
window, ``close_timeout``) moves unless the test jumps the clock: a packet the client gets
without a jump was written because its writer was woken. Each test first lets everything
settle, so the writer is waiting when the packet is queued; a missed wake fails
:func:`settle` ("never got there"), never a timing."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from trionano import (
    Component,
    Components,
    Config,
    Group,
    Server,
    Session,
    SlowConsumerPolicy,
    TCPEndpoint,
    WebSocketEndpoint,
    wire,
)
from trionano._fanout import BUCKET_SIZE
from trionano.testing import RawConnection

TRANSPORTS = ["tcp", "ws"]
CODEC = wire.MessageCodec()


class Room(Component):
    def __init__(self) -> None:
        self.group = Group("room")

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return msg


class WebSocketPeer:
    """RawConnection's reading half over a WebSocket: packets, EOFError once closed."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.decoder = wire.PacketDecoder()

    async def send(self, data: bytes) -> None:
        await self.ws.send_message(data)

    async def receive_packet(self) -> wire.Packet:
        while (packet := self.decoder.next_packet()) is None:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                raise EOFError("the server closed the connection") from None
            self.decoder.feed(message if isinstance(message, bytes) else message.encode("latin-1"))
        return packet


Peer = RawConnection | WebSocketPeer


async def settle(predicate: Callable[[], bool] = lambda: True) -> None:
    """Let every task run until ``predicate`` holds and nothing can run (the clock frozen)."""
    for _ in range(200):
        await trio.testing.wait_all_tasks_blocked()
        if predicate():
            return
        await trio.lowlevel.checkpoint()
    raise AssertionError("the server never got there")


async def receive_message(peer: Peer) -> wire.Message:
    packet = await peer.receive_packet()
    assert packet.type is wire.PacketType.DATA, packet
    return CODEC.decode(packet.body)


async def receive_until_closed(peer: Peer) -> list[wire.Packet]:
    packets = []
    while True:
        try:
            packets.append(await peer.receive_packet())
        except (EOFError, trio.BrokenResourceError):
            return packets


@asynccontextmanager
async def connected(
    transport: str, clock: trio.testing.MockClock, config: Config, peers: int = 1
) -> AsyncIterator[tuple[Server, Room, list[Peer]]]:
    """A server on ``transport`` and ``peers`` clients that have handshaken and joined the
    room, every writer waiting (everything settled)."""
    clock.autojump_threshold = math.inf  # frozen (a test may have let it jump before)
    room = Room()
    components = Components()
    components.register(room, name="room")
    server = Server(components, config)
    endpoint = TCPEndpoint("127.0.0.1") if transport == "tcp" else WebSocketEndpoint("127.0.0.1")
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, endpoint)

        clients: list[Peer] = []

        async def connect() -> None:
            peer: Peer
            if transport == "tcp":
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    peer = RawConnection(stream)
                    await peer.handshake()
                    await join(peer)
            else:
                async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                    peer = WebSocketPeer(ws)
                    await peer.send(wire.encode_packet(wire.PacketType.HANDSHAKE))
                    assert (await peer.receive_packet()).type is wire.PacketType.HANDSHAKE
                    await peer.send(wire.encode_packet(wire.PacketType.HANDSHAKE_ACK))
                    await join(peer)

        async def join(peer: Peer) -> None:
            await peer.send(CODEC.request_packet(1, "room.join", b"{}"))
            assert isinstance(await receive_message(peer), wire.Response)
            clients.append(peer)
            await trio.sleep_forever()

        for _ in range(peers):  # one after the other: clients[i] is the group's i-th
            before = len(clients)
            nursery.start_soon(connect)
            # its handshake and its join's answer are written (a writer not woken fails here,
            # where the client's read would wait for ever: the clock is frozen)
            await settle(lambda: len(clients) > before)  # noqa: B023 - settled before the next
        await settle(lambda: server.statistics().writes == 2 * peers)
        try:
            yield server, room, clients
        finally:
            clock.autojump_threshold = 0  # let the shutdown's own timeouts pass
            nursery.cancel_scope.cancel()


def only_session(server: Server) -> Session:
    (session,) = server.sessions.values()
    return session


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_push_wakes_the_writer(transport: str, mock_clock: trio.testing.MockClock) -> None:
    async with connected(transport, mock_clock, Config(heartbeat=0)) as (server, _room, (peer,)):
        before = server.statistics().writes
        only_session(server).push("onPush", {"n": 1})
        await settle(lambda: server.statistics().writes == before + 1)
        assert await receive_message(peer) == wire.Push("onPush", b'{"n":1}')


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_response_wakes_the_writer(transport: str, mock_clock: trio.testing.MockClock) -> None:
    async with connected(transport, mock_clock, Config(heartbeat=0)) as (server, _room, (peer,)):
        before = server.statistics().writes
        await peer.send(CODEC.request_packet(7, "room.echo", b'{"e":1}'))
        await settle(lambda: server.statistics().writes == before + 1)
        assert await receive_message(peer) == wire.Response(7, b'{"e":1}')


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_broadcasts_wake_the_writers_in_the_caller_and_through_the_fan_out(
    transport: str, mock_clock: trio.testing.MockClock
) -> None:
    many = BUCKET_SIZE + 2  # the first bucket is queued in the caller, the last two by the fan-out
    async with connected(transport, mock_clock, Config(heartbeat=0), peers=many) as (server, room, peers):
        before = server.statistics().pushes_out

        def written(pushes: int) -> Callable[[], bool]:
            def check() -> bool:
                stats = server.statistics()
                return stats.pushes_out == before + pushes and stats.outbox_queued == 0  # queued, then written

            return check

        await room.group.broadcast_and_wait("onBig", {})
        await settle(written(many))
        last = room.group.sessions()[-1]
        room.group.broadcast("onNext", {})
        assert last.fanout is not None
        assert last.fanout.behind(last)  # the fan-out has it still
        last.push("onAfter", {})  # behind the broadcast: queued by the fan-out
        await settle(written(2 * many + 1))
        for peer in peers[-2:]:
            assert [(await receive_message(peer)).route for _ in range(2)] == ["onBig", "onNext"]  # type: ignore[union-attr]
        assert (await receive_message(peers[-1])).route == "onAfter"  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_kick_wakes_the_writer_which_writes_it_then_closes(
    transport: str, mock_clock: trio.testing.MockClock
) -> None:
    # the Kick is written once the writer finds the outbox closed and empty: without a wake it
    # would wait there until close_timeout (the clock never moves), and the Kick never go
    async with connected(transport, mock_clock, Config(heartbeat=0)) as (server, _room, (peer,)):
        only_session(server).kick("bye")
        await settle(lambda: not server.sessions)  # ended: its writer wrote the Kick and returned
        packets = await receive_until_closed(peer)
        assert [packet.type for packet in packets] == [wire.PacketType.KICK], packets
        assert wire.Kick.parse(packets[0].body).reason == "bye"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_close_wakes_the_writer_which_flushes_then_ends(
    transport: str, mock_clock: trio.testing.MockClock
) -> None:
    async with connected(transport, mock_clock, Config(heartbeat=0)) as (server, _room, (peer,)):
        session = only_session(server)
        session.close()  # an empty outbox: the writer finds it closed at once
        await settle(lambda: not server.sessions)
        assert await receive_until_closed(peer) == []
    async with connected(transport, mock_clock, Config(heartbeat=0)) as (server, _room, (peer,)):
        session = only_session(server)
        session.push("onLast", {})  # wakes the writer: it runs after the close below
        session.close()
        await settle(lambda: not server.sessions)
        packets = await receive_until_closed(peer)
        assert [CODEC.decode(packet.body).route for packet in packets] == ["onLast"]  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_slow_consumer_kick_that_discards_the_outbox_wakes_the_writer(
    transport: str, mock_clock: trio.testing.MockClock
) -> None:
    # past max_outbox_bytes the session is kicked and what is queued is dropped (_finish with
    # discard): the writer, woken by the queuing and not yet run, finds only the Kick
    config = Config(heartbeat=0, outbox_bytes=1024, max_outbox_bytes=64 * 1024, slow_consumer=SlowConsumerPolicy.KICK)
    async with connected(transport, mock_clock, config) as (server, _room, (peer,)):
        session = only_session(server)
        while not session.closed:
            session.push("onFill", {"x": "x" * 500})
        await settle(lambda: not server.sessions)
        packets = await receive_until_closed(peer)
        assert [packet.type for packet in packets] == [wire.PacketType.KICK], packets
        assert wire.Kick.parse(packets[0].body).reason == "slow consumer"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_end_of_a_merge_window_wakes_the_writer(transport: str, mock_clock: trio.testing.MockClock) -> None:
    window = 0.05
    async with connected(transport, mock_clock, Config(heartbeat=0, merge_window=window)) as (server, _room, (peer,)):
        before = server.statistics().writes
        session = only_session(server)
        session.push("onA", {})
        session.push("onB", {})
        await settle()
        assert server.statistics().writes == before  # held: the writer was not woken
        mock_clock.jump(window)  # the MergeClock ends the window: its flush wakes the writer
        await settle(lambda: server.statistics().writes == before + 1)
        assert [(await receive_message(peer)).route for _ in range(2)] == ["onA", "onB"]  # type: ignore[union-attr]
        # a Response ends a window at once: its flush and the Response wake the writer
        session.push("onC", {})
        await settle()
        await peer.send(CODEC.request_packet(9, "room.echo", b"{}"))
        await settle(lambda: server.statistics().writes == before + 2)
        assert (await receive_message(peer)).route == "onC"  # type: ignore[union-attr]
        assert await receive_message(peer) == wire.Response(9, b"{}")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_heartbeat_wakes_the_writer(transport: str, mock_clock: trio.testing.MockClock) -> None:
    async with connected(transport, mock_clock, Config(heartbeat=1)) as (server, _room, (peer,)):
        before = server.statistics().writes
        start = trio.current_time()
        while server.statistics().writes == before:  # the heartbeat falls due at 1 s (swept every 1/8 s)
            assert trio.current_time() - start < 1.5
            mock_clock.jump(1 / 8)
            await settle()
        assert (await peer.receive_packet()).type is wire.PacketType.HEARTBEAT


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_writer_cancelled_while_waiting_is_not_woken_after(
    transport: str, mock_clock: trio.testing.MockClock
) -> None:
    # the server is cancelled (a hard stop) while the writer waits: its wait is aborted, and a
    # Push queued in the same step, before the connection's task has ended, must not wake it
    # again (trio would refuse: the task is no longer waiting)
    room = Room()
    components = Components()
    components.register(room, name="room")
    server = Server(components, Config(heartbeat=0))
    endpoint = TCPEndpoint("127.0.0.1") if transport == "tcp" else WebSocketEndpoint("127.0.0.1")
    with trio.fail_after(60):  # the clock is frozen: only a hang would reach it (it autojumps below)
        async with trio.open_nursery() as outer:
            served = trio.CancelScope()

            async def serve(task_status: trio.TaskStatus[list[int]]) -> None:
                with served:
                    await server.serve(endpoint, task_status=task_status)

            (port,) = await outer.start(serve)
            joined = trio.Event()

            async def client() -> None:
                if transport == "tcp":
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    async with stream:
                        raw = RawConnection(stream)
                        await raw.handshake()
                        joined.set()
                        await raw.receive_until_closed()
                else:
                    with trio.CancelScope() as scope:
                        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                            peer = WebSocketPeer(ws)
                            await peer.send(wire.encode_packet(wire.PacketType.HANDSHAKE))
                            await peer.receive_packet()
                            await peer.send(wire.encode_packet(wire.PacketType.HANDSHAKE_ACK))
                            joined.set()
                            await receive_until_closed(peer)
                            scope.cancel()

            outer.start_soon(client)
            await settle(joined.is_set)  # the clock is frozen: a hang would fail here
            await settle(lambda: len(server.sessions) == 1)
            session = only_session(server)
            served.cancel()  # aborts the writer's wait at once
            assert session.push("onAfterCancel", {}) is True  # the connection has not ended yet
            mock_clock.autojump_threshold = 0
    assert not server.sessions
