"""Connection churn: thousands of clients that hang up abruptly, over TCP and WebSocket at once,
must neither stop the server nor disturb a client that stays.

Public API only (Server, Components, Component, the endpoints, trionano.client, trionano.testing
and the sans-IO trionano.wire; and a group's documented slack), so the tests outlive changes to
the runtime's internals.
Bounded in count and in time; the figures it reaches are printed (``pytest -s``).
"""

from __future__ import annotations

import faulthandler
import itertools
import socket
import struct
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import pytest
import trio
import wsproto
import wsproto.events

from trionano import (
    Component,
    Components,
    Config,
    Group,
    RateLimit,
    Server,
    Session,
    TCPEndpoint,
    WebSocketEndpoint,
    wire,
)
from trionano._group import PRUNE_SLACK
from trionano.client import open_client, open_websocket_client
from trionano.testing import RawConnection, open_raw_connection

HOST: Final = "127.0.0.1"
WORKERS: Final = 50  # concurrent churning clients, each cycling through the scenarios
MAX_CYCLES: Final = 6000  # connections opened and dropped, at most
MIN_CYCLES: Final = 1500  # fewer and the test proves too little
TIME_LIMIT: Final = 25.0  # seconds of churn, or more until MIN_CYCLES are done (a loaded machine)
HARD_LIMIT: Final = 240.0  # seconds of churn at most, MIN_CYCLES done or not
CYCLE_TIMEOUT: Final = 30.0
WEDGED: Final = 400.0

HANDSHAKE: Final = wire.encode_packet(wire.PacketType.HANDSHAKE, b'{"sys":{"type":"churn"}}')
ACK: Final = wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
REQUEST: Final = wire.MessageCodec().request_packet(1, "churn.echo", b'{"n":1}')


class Churn(Component):
    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return msg


# -- TCP scenarios (each opens a connection and drops it) ----------------------------------


async def tcp_connect_and_close(port: int) -> None:
    stream = await trio.open_tcp_stream(HOST, port)
    await stream.aclose()


async def tcp_close_before_ack(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.send(HANDSHAKE)
        packet = await raw.receive_packet()
        assert packet.type is wire.PacketType.HANDSHAKE


async def tcp_close_mid_packet(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.handshake()
        await raw.send(REQUEST[: len(REQUEST) // 2])


async def tcp_close_after_request(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.handshake()
        await raw.send(REQUEST)  # and never read the answer


async def tcp_reset_after_request(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.handshake()
        await raw.send(REQUEST)
        reset_on_close(raw.stream.socket)


async def tcp_full_session(port: int) -> None:
    async with open_client(HOST, port) as client:
        assert await client.request("churn.echo", {"n": 2}) == {"n": 2}


def reset_on_close(sock: trio.socket.SocketType) -> None:
    """SO_LINGER 0: closing sends a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- WebSocket scenarios -------------------------------------------------------------------


class RawWebSocket:
    """A client WebSocket over a plain TCP stream (wsproto), to hang up at any byte."""

    def __init__(self, stream: trio.SocketStream, port: int) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.upgrade = self.ws.send(wsproto.events.Request(host=f"{HOST}:{port}", target="/"))

    async def accept(self) -> None:
        await self.stream.send_all(self.upgrade)
        await self._until(wsproto.events.AcceptConnection)

    def frame(self, data: bytes) -> bytes:
        return self.ws.send(wsproto.events.BytesMessage(data=data))

    async def handshake(self, *, ack: bool = True) -> None:
        await self.stream.send_all(self.frame(HANDSHAKE))
        await self._until(wsproto.events.BytesMessage)
        if ack:
            await self.stream.send_all(self.frame(ACK))

    async def _until(self, kind: type[wsproto.events.Event]) -> None:
        while True:
            for event in self.ws.events():
                if isinstance(event, kind):
                    return
            data = await self.stream.receive_some(65536)
            assert data, "the server closed the connection"
            self.ws.receive_data(data)


async def open_raw_websocket(port: int) -> tuple[trio.SocketStream, RawWebSocket]:
    stream = await trio.open_tcp_stream(HOST, port)
    return stream, RawWebSocket(stream, port)


async def ws_close_mid_upgrade(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await stream.send_all(ws.upgrade[: len(ws.upgrade) // 2])


async def ws_close_before_handshake(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()


async def ws_close_before_ack(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake(ack=False)


async def ws_close_mid_frame(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake()
        frame = ws.frame(REQUEST)
        await stream.send_all(frame[: len(frame) // 2])


async def ws_close_after_request(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake()
        await stream.send_all(ws.frame(REQUEST))  # no close frame, no read


async def ws_reset_after_request(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake()
        await stream.send_all(ws.frame(REQUEST))
        reset_on_close(stream.socket)


async def ws_full_session(port: int) -> None:
    async with open_websocket_client(f"ws://{HOST}:{port}/") as client:
        assert await client.request("churn.echo", {"n": 3}) == {"n": 3}


Scenario = Callable[[int], Awaitable[None]]
TCP_SCENARIOS: Final[list[Scenario]] = [
    tcp_connect_and_close,
    tcp_close_before_ack,
    tcp_close_mid_packet,
    tcp_close_after_request,
    tcp_reset_after_request,
    tcp_full_session,
]
WS_SCENARIOS: Final[list[Scenario]] = [
    ws_close_mid_upgrade,
    ws_close_before_handshake,
    ws_close_before_ack,
    ws_close_mid_frame,
    ws_close_after_request,
    ws_reset_after_request,
    ws_full_session,
    ws_full_session,  # the churn first reported: connect, handshake, ack, request, close
]


@pytest.fixture
def exit_if_wedged() -> Iterator[None]:
    """The bug this file guards against can block the whole process in ``os.read`` on a
    descriptor reused by a blocking socket, where no trio timeout fires: dump the stacks and
    exit rather than hang."""
    faulthandler.dump_traceback_later(WEDGED, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.mark.usefixtures("exit_if_wedged")
async def test_churn_never_stops_the_server_or_disturbs_a_bystander() -> None:
    components = Components()
    components.register(Churn(), name="churn")
    server = Server(components)
    served = trio.Event()
    outcome: list[BaseException | None] = []

    async def serve(task_status: trio.TaskStatus[list[int]]) -> None:
        try:
            await server.serve(TCPEndpoint(HOST), WebSocketEndpoint(HOST), task_status=task_status)
        except BaseException as exc:
            outcome.append(exc)
            raise
        else:
            outcome.append(None)
        finally:
            served.set()

    cycles = itertools.count()
    done: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    slowest = 0.0
    started_churn = trio.current_time()
    churning = trio.Event()

    def churned_enough() -> bool:
        """TIME_LIMIT seconds and MIN_CYCLES connections, or HARD_LIMIT seconds: not a speed
        check (1,127 in 25 s on a loaded 2-core machine), the test's size."""
        elapsed = trio.current_time() - started_churn
        return elapsed >= HARD_LIMIT or (elapsed >= TIME_LIMIT and sum(done.values()) >= MIN_CYCLES)

    async def worker(index: int, port: int, scenarios: list[Scenario]) -> None:
        for turn in itertools.count(index):
            if next(cycles) >= MAX_CYCLES or churned_enough():
                return
            scenario = scenarios[turn % len(scenarios)]
            with trio.fail_after(CYCLE_TIMEOUT):
                await scenario(port)
            done[scenario.__name__] += 1

    async def bystander(name: str, connect: Callable[[], Any]) -> None:
        nonlocal slowest
        async with connect() as client:
            for n in itertools.count():
                if churning.is_set():
                    return
                start = trio.current_time()
                with trio.fail_after(CYCLE_TIMEOUT):
                    assert await client.request("churn.echo", {"n": n}) == {"n": n}
                slowest = max(slowest, trio.current_time() - start)
                answered[name] += 1
                await trio.sleep(0.005)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        tcp_port, ws_port = await nursery.start(serve)
        async with trio.open_nursery() as clients:
            clients.start_soon(bystander, "tcp", lambda: open_client(HOST, tcp_port))
            clients.start_soon(bystander, "ws", lambda: open_websocket_client(f"ws://{HOST}:{ws_port}/"))
            async with trio.open_nursery() as workers:
                for index in range(WORKERS):
                    tcp = index % 2 == 0
                    workers.start_soon(
                        worker, index, tcp_port if tcp else ws_port, TCP_SCENARIOS if tcp else WS_SCENARIOS
                    )
            churning.set()
        total = sum(done.values())
        elapsed = time.perf_counter() - started
        print(
            f"\n{total} connections dropped in {elapsed:.1f} s; bystanders answered {dict(answered)},"
            f" slowest answer {slowest * 1000:.0f} ms"
        )
        print(dict(sorted(done.items())))

        assert not served.is_set(), f"the server stopped: {outcome}"
        with trio.fail_after(CYCLE_TIMEOUT):  # every dropped connection's session ends
            while len(server.sessions) > 0:  # noqa: ASYNC110 - no event for "sessions closed"
                await trio.sleep(0.01)
        async with open_client(HOST, tcp_port) as client:  # still serving
            assert await client.request("churn.echo", {"after": total}) == {"after": total}
        async with open_websocket_client(f"ws://{HOST}:{ws_port}/") as client:
            assert await client.request("churn.echo", {"after": total}) == {"after": total}
        server.shutdown()
    assert outcome == [None]
    assert total >= MIN_CYCLES, f"only {total} connections churned in {HARD_LIMIT} s"
    assert answered["tcp"] > 0
    assert answered["ws"] > 0
    stats = server.statistics()
    assert stats.sessions_opened == stats.sessions_closed
    assert stats.sessions_open == 0
    assert stats.connections_open == 0
    assert stats.connections_handshaking == 0


# -- what a churn leaves behind: the server's tables ----------------------------------------

TABLES_CYCLES: Final = 2000  # connections opened and dropped
TABLES_WORKERS: Final = 40
#: A limit that refills in a second: a flooder's spent budget is remembered that long.
TABLES_RATE: Final = RateLimit(rate=25, burst=25, kick_after=25)
FLOOD_HOSTS: Final = [f"127.0.0.{n}" for n in range(2, 10)]  # one remembered budget each


class Lobby(Component):
    """A group joined and never left or broadcast to; every session seen, weakly."""

    def __init__(self) -> None:
        self.group = Group("lobby")
        self.seen: list[weakref.ref[Session]] = []

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.group.add(session)
        self.seen.append(weakref.ref(session))
        return msg


async def tcp_join(port: int) -> None:
    async with open_client(HOST, port) as client:
        assert await client.request("lobby.join", {"n": 1}) == {"n": 1}


async def ws_join(port: int) -> None:
    async with open_websocket_client(f"ws://{HOST}:{port}/") as client:
        assert await client.request("lobby.join", {"n": 2}) == {"n": 2}


async def tcp_flood(port: int, host: str) -> None:
    """From ``host``: a flood of Requests, refused past the burst and kicked "rate limit"."""
    stream = await trio.open_tcp_stream(HOST, port, local_address=host)
    async with stream:
        raw = RawConnection(stream)
        await raw.handshake()
        request = wire.MessageCodec().request_packet(1, "churn.echo", b"{}")
        try:
            await raw.send(request * 400)
        except trio.BrokenResourceError:
            pass
        await raw.receive_until_closed()


@pytest.mark.usefixtures("exit_if_wedged")
async def test_churn_leaves_the_servers_tables_as_they_were() -> None:
    """Thousands of connections ended every way (including clients that join a group and never
    leave it, and floods from several hosts) leave the server's sessions, connections,
    handshaking (admission) and rate-limit tables as before, and no session alive but the
    group's few."""
    components = Components()
    lobby = Lobby()
    components.register(lobby, name="lobby")
    components.register(Churn(), name="churn")
    server = Server(components, Config(rate_limit=TABLES_RATE))
    cycles = itertools.count()
    scenarios = [*TCP_SCENARIOS, *WS_SCENARIOS, tcp_join, ws_join]

    async def worker(index: int, tcp_port: int, ws_port: int) -> None:
        for turn in itertools.count(index):
            if next(cycles) >= TABLES_CYCLES:
                return
            scenario = scenarios[turn % len(scenarios)]
            with trio.fail_after(CYCLE_TIMEOUT):
                await scenario(ws_port if scenario in WS_SCENARIOS or scenario is ws_join else tcp_port)

    async with trio.open_nursery() as nursery:
        tcp_port, ws_port = await nursery.start(
            lambda task_status: server.serve(TCPEndpoint(HOST), WebSocketEndpoint(HOST), task_status=task_status)
        )
        before = server.statistics()
        async with trio.open_nursery() as workers:
            for index in range(TABLES_WORKERS):
                workers.start_soon(worker, index, tcp_port, ws_port)
        async with trio.open_nursery() as floods:  # last: their budgets are still remembered
            for host in FLOOD_HOSTS:
                floods.start_soon(tcp_flood, tcp_port, host)
        with trio.fail_after(CYCLE_TIMEOUT):  # every connection's end is seen by the server
            while server.statistics().connections_open:  # noqa: ASYNC110 - no event for it
                await trio.sleep(0.01)
        after = server.statistics()
        held = sum(ref() is not None for ref in lobby.seen)
        await trio.sleep(2 * TABLES_RATE.burst / TABLES_RATE.rate)  # the floods' budgets refill
        async with open_client(HOST, tcp_port) as client:  # its connection forgets them
            assert await client.request("churn.echo", {}) == {}
        forgotten = server.statistics().rate_limited_peers
        server.shutdown()

    print(
        f"\n{after.connections_accepted} connections; kicks {dict(after.kicks)}; sessions of the group"
        f" still alive {held} of {len(lobby.seen)}; budgets remembered {after.rate_limited_peers}, then {forgotten}"
    )
    assert (before.connections_open, before.connections_handshaking, before.rate_limited_peers) == (0, 0, 0)
    assert after.connections_accepted >= TABLES_CYCLES * 0.8  # but those dropped mid-upgrade
    assert (after.connections_open, after.connections_handshaking, after.sessions_open) == (0, 0, 0)
    assert dict(server.sessions) == {}
    assert after.kicks.get("rate limit", 0) == len(FLOOD_HOSTS)
    assert 0 < after.rate_limited_peers <= len(FLOOD_HOSTS)  # some may have been forgotten already
    assert forgotten == 0
    assert len(lobby.seen) >= TABLES_CYCLES // len(scenarios)
    # the group holds at most twice its largest membership (a join per worker) plus its slack;
    # a few more may be held for a moment by the server's tasks
    assert held <= 2 * TABLES_WORKERS + PRUNE_SLACK + 8
    assert len(lobby.group) == 0
