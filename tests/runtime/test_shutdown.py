"""A graceful shutdown with thousands of real loopback clients: every client reads its Kick
"shutdown", the Requests read before the stop are answered before it, and serve returns
within ``shutdown_timeout`` (plus the shutdown hooks' second) whatever the clients and the
push load, cutting the connections still open then.

The input is a newcomer's: 13,000 idle TCP sessions in one group, then SIGTERM; the process
took 23 s (the limit is ``shutdown_timeout``, 5 s) and 510 clients read a Kick: the others'
writers had not run when the connections were cancelled. The clients here are plain sockets
of the test's own process (no task each): what they read is in their receive buffers.
"""

from __future__ import annotations

import json
import logging
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.runtime.apps import Lines, wait_until
from trionano import Component, Components, Config, Group, Server, Session, TCPEndpoint, WebSocketEndpoint, wire
from trionano.testing import open_raw_connection

HANDSHAKE = wire.encode_packet(wire.PacketType.HANDSHAKE, b"") + wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
JOIN = wire.encode_packet(wire.PacketType.DATA, wire.MessageCodec().encode(wire.Request(1, "room.join", b"{}")))
WANTED = 4000  # clients; two descriptors each in this process
ROOT = Path(__file__).resolve().parent.parent.parent


class Room(Component):
    def __init__(self) -> None:
        self.group = Group("all")

    def join(self, session: Session, msg: bytes) -> dict[str, int]:
        self.group.add(session)
        session.bind(session.id + 10_000)
        return {"n": self.group.count()}

    async def slow(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep(msg["seconds"])
        return {"slept": msg["seconds"]}


@contextmanager
def descriptors(wanted: int) -> Iterator[int]:
    """Raise RLIMIT_NOFILE to its hard limit for the block; how many clients it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        top = hard if hard != resource.RLIM_INFINITY else 1 << 20
        yield min(wanted, (top - 500) // 2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@asynccontextmanager
async def joined_clients(server: Server, room: Room, count: int) -> AsyncIterator[list[socket.socket]]:
    """Serve ``server`` and connect ``count`` raw clients, each handshaken and in the group
    (with a bound uid); yields their sockets once all joined, closes them at the end."""
    sockets: list[socket.socket] = []

    async def connect(port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(HANDSHAKE + JOIN)
        sockets.append(socket.socket(fileno=stream.socket.detach()))

    try:
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(server.serve, TCPEndpoint("127.0.0.1", 0))
            with trio.fail_after(300):
                for start in range(0, count, 100):  # within the server's handshake admission
                    async with trio.open_nursery() as batch:
                        for _ in range(min(100, count - start)):
                            batch.start_soon(connect, port)
                    await wait_until(lambda: room.group.count() >= len(sockets), timeout=120)
            yield sockets
    finally:
        for sock in sockets:
            sock.close()


def packets_read(sock: socket.socket) -> list[wire.Packet]:
    """Every packet the server sent ``sock`` (the connection has ended: EOF, or a reset after it)."""
    sock.settimeout(10)
    decoder = wire.PacketDecoder()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        decoder.feed(data)
    packets = []
    while (packet := decoder.next_packet()) is not None:
        packets.append(packet)
    return packets


def kick_reasons(sock: socket.socket) -> list[str]:
    return [wire.Kick.parse(p.body).reason for p in packets_read(sock) if p.type is wire.PacketType.KICK]


@pytest.mark.parametrize(("limit", "wanted"), [(60.0, WANTED), (0.01, WANTED // 2)])
async def test_thousands_of_clients_each_read_the_kick_and_serve_returns(
    limit: float, wanted: int, caplog: pytest.LogCaptureFixture
) -> None:
    # 60 s: the stop ends by itself (every connection closed), long before its timeout; 0.01 s:
    # the timeout cuts the close short, and every client has its Kick all the same (written
    # when the shutdown kicks it, not when its connection's writer gets to run)
    room = Room()
    components = Components()
    components.register(room, name="room")
    server = Server(components, Config(shutdown_timeout=limit))
    caplog.set_level(logging.WARNING, logger="trionano.server")
    with descriptors(wanted) as count:
        assert count >= 1000, "too few file descriptors for the test"
        async with joined_clients(server, room, count) as clients:
            start = trio.current_time()
            server.shutdown()
            with trio.fail_after(120):
                await server.wait_stopped()
            elapsed = trio.current_time() - start
            reasons = [kick_reasons(sock) for sock in clients]
    assert sum(r == ["shutdown"] for r in reasons) == count, [r for r in reasons if r != ["shutdown"]][:5]
    stats = server.statistics()
    assert stats.kicks["shutdown"] == count
    assert stats.sessions_closed == count
    assert len(server.sessions) == 0
    assert room.group.count() == 0  # every closed session left its group
    if limit == 60.0:  # the connections closed by themselves: no cancel, well within the limit
        assert "took over shutdown_timeout" not in caplog.text
        assert elapsed < limit


async def test_requests_read_before_the_stop_are_answered_before_the_kick() -> None:
    room = Room()
    components = Components()
    components.register(room, name="room")
    codec = wire.MessageCodec()
    server = Server(components, Config(shutdown_timeout=4))
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, TCPEndpoint("127.0.0.1", 0))
        async with open_raw_connection("127.0.0.1", port) as idle, open_raw_connection("127.0.0.1", port) as stuck:
            async with open_raw_connection("127.0.0.1", port) as busy:
                for client in (idle, stuck, busy):
                    await client.handshake()
                for mid in range(1, 21):  # in flight when the stop comes: each gets its answer
                    body = b'{"seconds": %.2f}' % (0.005 * mid)  # one after another: 1.05 s
                    await busy.send(
                        wire.encode_packet(wire.PacketType.DATA, codec.encode(wire.Request(mid, "room.slow", body)))
                    )
                # a handler that outlasts the shutdown: its client is kicked when time runs out
                forever = codec.encode(wire.Request(1, "room.slow", b'{"seconds": 1000}'))
                await stuck.send(wire.encode_packet(wire.PacketType.DATA, forever))
                await wait_until(lambda: server.statistics().routes["room.slow"].requests == 21, timeout=10)
                server.shutdown()
                with trio.fail_after(30):
                    busy_packets = await busy.receive_until_closed()
                    stuck_packets = await stuck.receive_until_closed()
                    idle_packets = await idle.receive_until_closed()
            await server.wait_stopped()
    answered = [codec.decode(p.body) for p in busy_packets if p.type is wire.PacketType.DATA]
    assert sorted(m.id for m in answered if isinstance(m, wire.Response)) == list(range(1, 21))
    assert busy_packets[-1].type is wire.PacketType.KICK  # the Kick comes after every answer
    assert wire.Kick.parse(busy_packets[-1].body).reason == "shutdown"
    for packets in (stuck_packets, idle_packets):
        assert [wire.Kick.parse(p.body).reason for p in packets if p.type is wire.PacketType.KICK] == ["shutdown"]
    assert server.statistics().kicks["shutdown"] == 3


async def test_the_broadcasts_accepted_before_the_stop_reach_every_member_before_its_kick() -> None:
    # a newcomer's viewers ended with 2 to 150 of 150 broadcasts accepted a moment before the
    # stop: the Kicks overtook what the fan-out had still to deliver (a Kick waits behind a
    # broadcast on its way, as documented: at shutdown too)
    room = Room()
    components = Components()
    components.register(room, name="room")
    server = Server(components, Config(shutdown_timeout=60))
    with descriptors(500) as count:
        async with joined_clients(server, room, count) as clients:
            accepted = [room.group.broadcast("onShow", {"n": n}) for n in range(30)]
            assert accepted == [count] * 30
            server.shutdown()
            with trio.fail_after(120):
                await server.wait_stopped()
            codec = wire.MessageCodec()
            streams = []
            for sock in clients:
                packets = packets_read(sock)
                assert packets[-1].type is wire.PacketType.KICK
                messages = [codec.decode(p.body) for p in packets if p.type is wire.PacketType.DATA]
                streams.append([m.body for m in messages if isinstance(m, wire.Push)])
    assert all(stream == [b'{"n":%d}' % n for n in range(30)] for stream in streams), {len(s) for s in streams}


# -- the deadline: shutdown_timeout, whatever the clients and the load ---------------------------

ALLOWANCE = 5.0  # a bound on hanging, not a speed: the deadline, the cut and a loaded machine's lag


class LoadRoom(Component):
    """Viewers join with their number as uid; ``stuck`` never answers (a handler waiting on a
    backend that is gone), and holds the main lane, where the lifecycle hooks run."""

    def __init__(self) -> None:
        self.group = Group("all")

    def join(self, session: Session, msg: dict[str, int]) -> dict[str, int]:
        session.bind(msg["uid"])
        self.group.add(session)
        return {"n": self.group.count()}

    async def stuck(self, session: Session, msg: bytes) -> None:
        await trio.sleep_forever()


async def _push_load(server: Server, room: LoadRoom, idle: Group) -> None:
    """What a live room pushes: a comment to everyone and 8 KiB to the idle clients (whose
    buffers fill), every 50 ms, until the server has stopped."""
    big = "x" * 8192
    number = 0
    while server.is_running:
        number += 1
        room.group.broadcast("onLoad", {"n": number})
        idle.broadcast("onLoad", {"n": number, "p": big})
        await trio.sleep(0.05)


async def test_under_push_load_the_shutdown_ends_within_shutdown_timeout_and_cuts_what_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the input: a live-room gate with 2,000-3,000 WebSocket viewers under push load took
    # 7.8-19 s to exit with shutdown_timeout 5 s: each stage of the stop had its own timeout
    # (hooks, kicked clients leaving, shutdown hooks: up to 3 times it, plus a second for each
    # WebSocket's close handshake), and the fan-out's drain waited for broadcasts that kept
    # coming. Here: TCP and WebSocket clients (their own process), a fifth of them not reading
    # (buffers full: no Kick, no close handshake can reach them), a push load running, and a
    # handler that holds the main lane (the hooks wait behind it). 6 s: the hooks wait behind
    # the stuck handler until half of it, then the Kicks go; the other half is the readers' to
    # read them on a loaded machine
    timeout = 6.0
    room = LoadRoom()
    components = Components()
    components.register(room, name="room")
    # outbox_size 16: an idle client's pushes are dropped (and counted) once 16 wait
    server = Server(components, Config(shutdown_timeout=timeout, outbox_size=16))
    caplog.set_level(logging.WARNING, logger="trionano.server")
    codec = wire.MessageCodec()
    stuck_request = wire.encode_packet(wire.PacketType.DATA, codec.encode(wire.Request(1, "room.stuck", b"{}")))
    with descriptors(2000) as count:
        readers, idle_count = count * 2 // 5, count // 10  # of each transport
        async with trio.open_nursery() as nursery:
            tcp_port, ws_port = await nursery.start(
                server.serve, TCPEndpoint("127.0.0.1", 0), WebSocketEndpoint("127.0.0.1", 0)
            )
            command = [sys.executable, "-m", "tests.runtime._shutdown_clients", "127.0.0.1", str(tcp_port)]
            command += [str(n) for n in (ws_port, readers, readers, idle_count, idle_count)]
            clients = await trio.lowlevel.open_process(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            try:
                assert clients.stdin is not None
                assert clients.stdout is not None
                lines = Lines(clients.stdout)
                with trio.fail_after(300):
                    joined = json.loads(await lines.receive_line())
                total = joined["joined"]
                assert total == 2 * (readers + idle_count)
                idle = Group("idle")
                for session in server.sessions_of_any(joined["idle"]):
                    idle.add(session)
                nursery.start_soon(_push_load, server, room, idle)
                async with open_raw_connection("127.0.0.1", tcp_port) as stuck:
                    await stuck.handshake()
                    await stuck.send(stuck_request)
                    await wait_until(lambda: server.statistics().routes["room.stuck"].requests == 1, timeout=30)
                    await wait_until(lambda: server.statistics().dropped_slow > 0, timeout=60)  # buffers full
                    start = trio.current_time()
                    server.shutdown()
                    with trio.fail_after(120):
                        await server.wait_stopped()
                    elapsed = trio.current_time() - start
                    stuck_packets = await stuck.receive_until_closed()
                await clients.stdin.aclose()
                with trio.fail_after(120):
                    report = json.loads(await lines.receive_line())
            finally:
                if clients.returncode is None:
                    clients.kill()
                await clients.wait()
    assert elapsed < timeout + ALLOWANCE, elapsed
    for kind in ("tcp_readers", "ws_readers"):  # every client that reads has its Kick, last
        assert report[kind] == {**report[kind], "count": readers, "ended": readers, "kicked": readers}, report
    for kind in ("tcp_idle", "ws_idle"):  # closed, not waited for
        assert report[kind]["ended"] == idle_count, report
    assert [wire.Kick.parse(p.body).reason for p in stuck_packets if p.type is wire.PacketType.KICK] == ["shutdown"]
    stats = server.statistics()
    assert stats.kicks["shutdown"] == total + 1
    assert stats.sessions_closed == total + 1
    assert stats.connections_cut >= 1  # an idle client whose pushes were dropped: its Kick could not be written
    assert caplog.text.count("connections cut") == 1  # logged once, with how many
    assert f"{stats.connections_cut} connections cut" in caplog.text
