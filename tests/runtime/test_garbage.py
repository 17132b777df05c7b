"""A closed connection leaves nothing for the cyclic garbage collector: whichever way it ends,
its objects (agent, session, wire connection, stream, outbox) are freed by reference counting.

Otherwise each closed connection waits, with its buffers, for a collection of the oldest
generation, which ``trionano.tune_gc`` makes rare, and makes each of them longer: measured
before the fix, 20 objects per TCP connection and 36 per WebSocket (the agent and its session
held each other, and a WebSocket stream held the agent's frame checker).

The server runs in a process of its own with the collector off (``_garbage_server``); after
each way of ending connections it collects with ``gc.DEBUG_SAVEALL`` and reports what it
found. Public API only, on both sides.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import trio
import wsproto
import wsproto.events

from trionano import wire
from trionano.client import open_client, open_websocket_client
from trionano.testing import RawConnection, open_raw_connection

from .test_churn import HANDSHAKE, RawWebSocket, open_raw_websocket, reset_on_close

ROOT: Final = Path(__file__).resolve().parents[2]
HOST: Final = "127.0.0.1"
CONNECTIONS: Final = 20  # per way of ending, 10 at a time
#: Objects the collector may find per way of ending: fewer than one per connection (before
#: the fix: at least 20 per connection, 400 in all).
BOUND: Final = CONNECTIONS
CODEC: Final = wire.MessageCodec()


def request(mid: int, route: str, body: bytes = b"{}") -> bytes:
    return CODEC.request_packet(mid, route, body)


class GarbageServer:
    """The server process: its ports, and :meth:`collect`."""

    def __init__(self, process: trio.Process, lines: AsyncIterator[bytes]) -> None:
        self.process = process
        self.lines = lines
        self.tcp_port = 0
        self.ws_port = 0

    async def collect(self) -> dict[str, Any]:
        """What the server's collector finds once every connection has closed."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"collect\n")
        result: dict[str, Any] = json.loads(await anext(self.lines))
        return result


async def read_lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytes]:
    pending = b""
    while True:
        while b"\n" not in pending:
            data = await stream.receive_some()
            if not data:
                return
            pending += data
        line, pending = pending.split(b"\n", 1)
        yield line


@asynccontextmanager
async def garbage_server() -> AsyncIterator[GarbageServer]:
    command = [sys.executable, "-m", "tests.runtime._garbage_server"]
    process = await trio.lowlevel.open_process(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        server = GarbageServer(process, read_lines(process.stdout))
        with trio.fail_after(60):
            server.tcp_port, server.ws_port = json.loads(await anext(server.lines))
        yield server
    finally:
        await process.stdin.aclose()
        with trio.move_on_after(20):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- the ways a TCP connection ends --------------------------------------------------------


async def tcp_client_closes(port: int) -> None:
    async with open_client(HOST, port) as client:
        assert await client.request("churn.echo", {"n": 1}) == {"n": 1}


async def tcp_client_closes_after_errors(port: int) -> None:
    """A group joined (left by the close hook), a handler error, a dropped promise."""
    async with open_client(HOST, port) as client:
        assert "members" in await client.request("churn.join", {"n": 1})
        assert (await client.request("churn.boom"))["code"] == 500
        assert (await client.request("churn.promise"))["code"] == 500


async def tcp_kicked(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.handshake()
        await raw.send(request(1, "churn.kick"))
        await raw.receive_until_closed()


async def tcp_heartbeat_timeout(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.handshake()
        await raw.receive_until_closed()  # silent: kicked after 2.5 heartbeats


async def tcp_reset(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.handshake()
        await raw.send(request(1, "churn.echo"))
        await raw.receive_response()
        await raw.send(request(2, "churn.echo"))  # unanswered when the RST arrives
        reset_on_close(raw.stream.socket)


async def tcp_closes_mid_handshake(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.send(HANDSHAKE)
        assert (await raw.receive_packet()).type is wire.PacketType.HANDSHAKE  # and no ack


async def tcp_handshake_rejected(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.send(wire.encode_packet(wire.PacketType.HANDSHAKE, b'{"user":{"reject":true}}'))
        await raw.receive_until_closed()


async def tcp_rate_limited(port: int) -> None:
    async with open_raw_connection(HOST, port) as raw:
        await raw.handshake()
        await flood(raw)


async def flood(raw: RawConnection) -> None:
    try:
        for mid in range(1, 200):
            await raw.send(request(mid, "churn.echo"))
    except trio.BrokenResourceError:
        pass  # kicked "rate limit" and closed
    await raw.receive_until_closed()


# -- the ways a WebSocket connection ends --------------------------------------------------


async def ws_client_closes(port: int) -> None:
    async with open_websocket_client(f"ws://{HOST}:{port}/") as client:
        assert "members" in await client.request("churn.join", {"n": 1})
        assert (await client.request("churn.boom"))["code"] == 500


async def ws_kicked(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake()
        await stream.send_all(ws.frame(request(1, "churn.kick")))
        await until_closed(stream, ws)


async def ws_heartbeat_timeout(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake()
        await until_closed(stream, ws)


async def ws_reset(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake()
        await stream.send_all(ws.frame(request(1, "churn.echo")))
        reset_on_close(stream.socket)


async def ws_closes_mid_upgrade(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await stream.send_all(ws.upgrade[: len(ws.upgrade) // 2])


async def ws_closes_mid_handshake(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake(ack=False)


async def ws_rate_limited(port: int) -> None:
    stream, ws = await open_raw_websocket(port)
    async with stream:
        await ws.accept()
        await ws.handshake()
        try:
            await stream.send_all(b"".join(ws.frame(request(mid, "churn.echo")) for mid in range(1, 200)))
        except trio.BrokenResourceError:
            return
        await until_closed(stream, ws)


async def until_closed(stream: trio.SocketStream, ws: RawWebSocket) -> None:
    """Read until the server closes the WebSocket, answering its close frame."""
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return
        if not data:
            return
        ws.ws.receive_data(data)
        for event in ws.ws.events():
            if isinstance(event, wsproto.events.CloseConnection):
                await stream.send_all(ws.ws.send(event.response()))


Ending = Callable[[int], Awaitable[None]]
TCP_ENDINGS: Final[list[Ending]] = [
    tcp_client_closes,
    tcp_client_closes_after_errors,
    tcp_kicked,
    tcp_heartbeat_timeout,
    tcp_reset,
    tcp_closes_mid_handshake,
    tcp_handshake_rejected,
    tcp_rate_limited,
]
WS_ENDINGS: Final[list[Ending]] = [
    ws_client_closes,
    ws_kicked,
    ws_heartbeat_timeout,
    ws_reset,
    ws_closes_mid_upgrade,
    ws_closes_mid_handshake,
    ws_rate_limited,
]


async def end_connections(ending: Ending, port: int) -> None:
    limit = trio.CapacityLimiter(10)

    async def one() -> None:
        async with limit:
            with trio.fail_after(30):
                await ending(port)

    async with trio.open_nursery() as nursery:
        for _ in range(CONNECTIONS):
            nursery.start_soon(one)


async def tcp_session_in_a_cycle(port: int) -> None:
    """The control: the application keeps the session in a cycle of its own making."""
    async with open_client(HOST, port) as client:
        assert await client.request("churn.cycle") == {}


async def test_closed_connections_leave_no_garbage_in_cycles() -> None:
    found: dict[str, dict[str, Any]] = {}
    async with garbage_server() as server:
        baseline = await server.collect()
        for endings, port in ((TCP_ENDINGS, server.tcp_port), (WS_ENDINGS, server.ws_port)):
            for ending in endings:
                await end_connections(ending, port)
                found[ending.__name__] = await server.collect()
        await end_connections(tcp_session_in_a_cycle, server.tcp_port)
        control = await server.collect()
    print(f"\nobjects found by the server's collector after {CONNECTIONS} connections each:")
    for name, result in [*found.items(), ("control: a session in a cycle", control)]:
        commonest = dict(list(result["types"].items())[:6])
        print(f"  {name:<32} {result['garbage']:>5}  {commonest or ''}")
    assert baseline["garbage"] == 0
    for name, result in found.items():
        assert result["connections_open"] == 0, name
        assert result["garbage"] < BOUND, f"{name}: {result}"
    # the check sees what it looks for: each such session, its data and its agent
    assert control["garbage"] >= 3 * CONNECTIONS, control
    assert control["types"].get("trionano.Session", 0) >= CONNECTIONS // 2, control  # a few may still be held
