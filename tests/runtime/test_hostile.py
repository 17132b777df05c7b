"""Hostile input and fairness (issue "Hostile input", items 2, 4, 5, 7, 8): one client cannot
starve, blind or exhaust the server; a bystander client is served throughout. Bounds are loose
enough for a loaded 2-core machine: what is asserted is that the bystander is served and the
server lives, never absolute speed."""

from __future__ import annotations

import errno
import functools
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from tests.runtime.apps import s_components, wait_until
from trionano import Component, Components, Config, RateLimit, Server, Session, TCPEndpoint, WebSocketEndpoint, wire
from trionano._listen import accept_forever
from trionano.client import Client, open_client
from trionano.testing import RunningServer, open_test_server

HEARTBEAT_FLOOD = bytes.fromhex("03000000") * 16_384


def notify(route: str, body: bytes = b"{}") -> bytes:
    return wire.encode_packet(wire.PacketType.DATA, wire.encode_message(wire.Notify(route, body)))


def request(mid: int, route: str, body: bytes = b"{}") -> bytes:
    return wire.encode_packet(wire.PacketType.DATA, wire.encode_message(wire.Request(mid, route, body)))


@asynccontextmanager
async def s_server(config: Config | None = None) -> AsyncIterator[RunningServer]:
    components, _, _ = s_components()
    async with open_test_server(components, config) as running:
        yield running


async def bystander_latencies(client: Client, rounds: int) -> list[float]:
    latencies = []
    for i in range(rounds):
        start = trio.current_time()
        assert await client.request("s.echo", {"i": i}, timeout=30) == {"i": i}
        latencies.append(trio.current_time() - start)
        await trio.sleep(0.01)
    return latencies


async def flood(running: RunningServer, payload: bytes, *, handshake: bool = True) -> None:
    """Send ``payload`` as fast as the server takes it until the server hangs up."""
    async with running.raw() as raw:
        if handshake:
            await raw.handshake()
        try:
            while True:
                await raw.send(payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


@pytest.mark.parametrize(
    "payload",
    [HEARTBEAT_FLOOD, notify("no.such.route") * 2_000, request(1, "no.such.route") * 2_000, notify("s.echo") * 2_000],
    ids=["heartbeats", "unknown-notify", "unknown-request", "known-notify"],
)
async def test_one_flooding_client_starves_no_one(payload: bytes) -> None:
    async with s_server() as running, running.connect() as bystander:
        idle = await bystander_latencies(bystander, 20)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood, running, payload)
            await trio.sleep(0.2)
            under_flood = await bystander_latencies(bystander, 50)
            # the flooder is kicked: it stays over its limit
            await wait_until(lambda: running.server.statistics().kicks.get("rate limit", 0) >= 1, timeout=30)
        stats = running.server.statistics()
        assert stats.dropped_rate > 0
        assert max(under_flood) < 2.0 + 2 * max(idle), (max(idle), sorted(under_flood)[-5:])


async def test_a_login_burst_is_within_the_default_rate_limit() -> None:
    async with s_server() as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(b"".join(request(mid, "s.echo") for mid in range(1, 1001)))
        with trio.fail_after(20):
            answers = [await raw.receive_response() for _ in range(1000)]
        assert [m.id for m in answers] == list(range(1, 1001))
        assert running.server.statistics().dropped_rate == 0


async def test_requests_over_the_rate_limit_are_answered_429() -> None:
    config = Config(rate_limit=RateLimit(rate=10, burst=20, kick_after=1000))
    async with s_server(config) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(b"".join(request(mid, "s.echo") for mid in range(1, 101)))
        with trio.fail_after(20):
            answers = [await raw.receive_response() for _ in range(100)]
        codes = [m.body for m in answers]
        assert sorted(m.id for m in answers) == list(range(1, 101))  # every request answered
        refused = [body for body in codes if b'"code":429' in body]
        assert 60 <= len(refused) <= 90
        assert running.server.statistics().dropped_rate == len(refused)


# -- logs an attacker controls -----------------------------------------------------------


async def test_client_text_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trionano")
    forged = "x\n2099-01-01 00:00:00 trionano ERROR admin login from 6.6.6.6"
    async with s_server() as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(request(1, forged))
        answer = await raw.receive_message()
        assert b"404" in answer.body
    lines = [record.getMessage() for record in caplog.records]
    assert any("6.6.6.6" in line for line in lines)
    assert all("\n" not in line for line in lines)


async def test_distinct_unknown_routes_write_a_bounded_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trionano")
    config = Config(rate_limit=None)
    async with s_server(config) as running, running.raw() as raw, running.connect() as bystander:
        await raw.handshake()
        for start in range(0, 20_000, 1_000):
            await raw.send(b"".join(notify(f"no.route{n}") for n in range(start, start + 1_000)))
        await wait_until(lambda: running.server.statistics().unknown_routes == 20_000, timeout=30)
        assert await bystander.request("s.echo", {"ok": 1}, timeout=10) == {"ok": 1}
    unknown = [record for record in caplog.records if "unknown route" in record.getMessage()]
    assert 1 <= len(unknown) <= 50


# -- mass timeouts ------------------------------------------------------------------------


async def test_a_thousand_simultaneous_heartbeat_timeouts_do_not_stall_a_bystander() -> None:
    # a 3 s interval (kicked after 7.5 s of silence): with 1 s, a loaded machine could hold
    # this one process (server, bystander and the thousand clients) long enough for the
    # bystander's own heartbeat to be read too late, and it was kicked with the others
    async with s_server(Config(heartbeat=3)) as running, running.connect() as bystander:
        async with trio.open_nursery() as nursery:
            ready = 0

            async def silent() -> None:
                nonlocal ready
                async with running.raw() as raw:
                    await raw.handshake()
                    ready += 1
                    await raw.receive_until_closed()

            for _ in range(1000):
                nursery.start_soon(silent)
            await wait_until(lambda: ready == 1000, timeout=60)
            latencies = []
            with trio.fail_after(60):  # served all through their timeouts
                while running.server.statistics().kicks.get("heartbeat timeout", 0) < 1000:
                    latencies += await bystander_latencies(bystander, 5)
        assert sorted(latencies)[-2] < 2.0, sorted(latencies)[-5:]


# -- limits every server of this kind has --------------------------------------------------


async def test_connections_over_the_maximum_are_kicked_server_full() -> None:
    async with s_server(Config(max_connections=3)) as running:
        async with running.connect(), running.connect(), running.connect(), running.raw() as fourth:
            packets = await fourth.receive_until_closed()
            assert [p.type for p in packets] == [wire.PacketType.KICK]
            assert wire.Kick.parse(packets[0].body).reason == "server full"
            assert running.server.statistics().connections_refused == 1
        async with running.connect() as again:  # room again
            assert await again.request("s.echo", {}, timeout=10) == {}


async def test_a_tcp_connection_that_never_handshakes_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    async with s_server(Config(handshake_timeout=10)) as running, running.raw() as raw:
        start = trio.current_time()
        packets = await raw.receive_until_closed()
        assert 10 <= trio.current_time() - start < 11
        assert [wire.Kick.parse(p.body).reason for p in packets] == ["handshake timeout"]


async def test_a_handshake_without_an_ack_is_closed_too(autojump_clock: trio.testing.MockClock) -> None:
    async with s_server(Config(handshake_timeout=10)) as running, running.raw() as raw:
        await raw.send(wire.encode_packet(wire.PacketType.HANDSHAKE, b"{}"))
        packets = await raw.receive_until_closed()
        assert [p.type for p in packets] == [wire.PacketType.HANDSHAKE, wire.PacketType.KICK]


class FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener out of file descriptors for its first ``failures`` accepts."""

    def __init__(self, failures: int, error: int = errno.EMFILE) -> None:
        self.failures = failures
        self.error = error
        self.closed = trio.Event()

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(self.error, "Too many open files")
        await self.closed.wait()
        raise trio.ClosedResourceError

    async def aclose(self) -> None:
        self.closed.set()


async def test_accept_backs_off_at_emfile_and_logs_little(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionano")
    listener = FlakyListener(failures=600)  # a minute of EMFILE at Trio's 100 ms back-off

    async def handle(stream: trio.abc.Stream, address: str) -> None:
        raise AssertionError("nothing is accepted")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_forever, listener, handle, nursery)
        start = trio.current_time()
        await wait_until(lambda: listener.failures == 0, timeout=120)
        assert trio.current_time() - start >= 59  # it waited between attempts
        await listener.aclose()
    assert 1 <= len(caplog.records) <= 20


async def test_accept_errors_other_than_capacity_are_raised() -> None:
    listener = FlakyListener(failures=1, error=errno.EINVAL)

    async def handle(stream: trio.abc.Stream, address: str) -> None:
        raise AssertionError("nothing is accepted")

    with pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await accept_forever(listener, handle, nursery)
    assert info.group_contains(OSError, match="Too many")


# -- WebSocket close codes --------------------------------------------------------------------


@asynccontextmanager
async def ws_server(config: Config | None = None) -> AsyncIterator[tuple[Server, int]]:
    components, _, _ = s_components()
    server = Server(components, config)
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, WebSocketEndpoint("127.0.0.1"))
        yield server, port
        server.shutdown()


async def ws_handshake(connection: trio_websocket.WebSocketConnection) -> None:
    await connection.send_message(wire.encode_packet(wire.PacketType.HANDSHAKE, b"{}"))
    await connection.get_message()
    await connection.send_message(wire.encode_packet(wire.PacketType.HANDSHAKE_ACK))


async def close_code(connection: trio_websocket.WebSocketConnection) -> int:
    async def read_until_closed() -> None:
        while True:
            await connection.get_message()

    with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionClosed) as closed:
        await read_until_closed()
    reason = closed.value.reason
    assert reason is not None
    return reason.code


async def test_websocket_clients_get_a_close_frame_on_a_kick_and_on_shutdown() -> None:
    async with ws_server() as (server, port):
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as connection:
            await ws_handshake(connection)
            await wait_until(lambda: len(server.sessions) == 1)
            next(iter(server.sessions.values())).kick("bye")
            assert await close_code(connection) == 1000
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as connection:
            await ws_handshake(connection)
            await wait_until(lambda: len(server.sessions) == 1)
            server.shutdown()
            assert await close_code(connection) == 1000


async def test_websocket_invalid_text_and_oversize_messages_get_their_close_codes() -> None:
    async with ws_server() as (_, port):
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as connection:
            await ws_handshake(connection)
            await connection.send_message(b"\x00" * (4 * 64 * 1024 + 1024))
            assert await close_code(connection) == 1009
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            # a raw text frame with invalid UTF-8, after an upgrade by hand (no client library
            # sends one)
            import wsproto
            import wsproto.events

            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(ws.send(wsproto.events.Request(host="127.0.0.1", target="/")))
            while not any(isinstance(e, wsproto.events.AcceptConnection) for e in ws.events()):
                ws.receive_data(await stream.receive_some(4096))
            frame = bytes([0x81, 0x82]) + b"\x00\x00\x00\x00" + b"\xff\xfe"  # FIN+text, masked, 2 bytes
            await stream.send_all(frame)
            codes: list[int] = []
            with trio.fail_after(10):
                while not codes:
                    data = await stream.receive_some(4096)
                    if not data:
                        break
                    ws.receive_data(data)
                    codes = [e.code for e in ws.events() if isinstance(e, wsproto.events.CloseConnection)]
            assert codes == [1007]


def test_json_never_writes_infinity_or_nan() -> None:
    from trionano import JSONSerializer, SerializeError

    for serializer in (JSONSerializer(), JSONSerializer(use_orjson=False)):
        for value in (math.inf, -math.inf, math.nan):
            with pytest.raises(SerializeError):
                serializer.marshal({"x": value})


# -- a hostile server cannot crash a trionano.client reader --------------------------------


@pytest.mark.parametrize(
    ("response", "accepted"),
    [
        (b'{"code":200,"sys":{"heartbeat":1' + b"0" * 400 + b"}}", False),  # OverflowError before
        (b'{"code":200,"sys":{"heartbeat":3,"dict":{"\\ud800":1}}}', True),  # UnicodeEncodeError before
        (b'{"code":200,"sys":{"heartbeat":NaN}}', False),
        (b"\xff\xfe{", False),
    ],
    ids=["huge-heartbeat", "lone-surrogate-route", "nan", "not-utf8"],
)
async def test_a_hostile_handshake_response_is_a_clean_client_error(response: bytes, accepted: bool) -> None:
    from trionano.client import open_client

    async def hostile(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(wire.encode_packet(wire.PacketType.HANDSHAKE, response))
        await trio.sleep(5)

    async def connect(port: int) -> None:
        async with open_client("127.0.0.1", port) as client:
            assert client.handshake is not None
            if client.handshake.dictionary is not None:  # a lone surrogate reads as U+FFFD
                assert "\ufffd" in client.handshake.dictionary

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, hostile, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(10):
            if accepted:
                await connect(port)
            else:
                with pytest.raises(trio.BrokenResourceError):
                    await connect(port)
        nursery.cancel_scope.cancel()


async def test_a_websocket_client_over_the_maximum_gets_a_kick_and_a_close_frame() -> None:
    async with (
        ws_server(Config(max_connections=1)) as (server, port),
        trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as first,
    ):
        await ws_handshake(first)
        await wait_until(lambda: len(server.sessions) == 1)
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as second:
            with trio.fail_after(10):
                kick = await second.get_message()
            assert isinstance(kick, bytes)
            assert wire.Kick.parse(kick[4:]).reason == "server full"
            assert await close_code(second) == 1000


async def test_shutdown_is_bounded_by_its_timeout(autojump_clock: trio.testing.MockClock) -> None:
    class Slow(Component):
        async def work(self, session: Session, msg: dict[str, Any]) -> None:
            await trio.sleep(100)  # queued work that would hold the shutdown for minutes

    components = Components()
    components.register(Slow(), name="slow")
    server = Server(components, Config(shutdown_timeout=5))
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, TCPEndpoint("127.0.0.1"))
        async with open_client("127.0.0.1", port) as client:
            for _ in range(10):
                await client.notify("slow.work", {})
            await trio.sleep(1)
        start = trio.current_time()
        server.shutdown()
        await server.wait_stopped()
        assert trio.current_time() - start <= 3 * 5 + 1  # not 10 x 100 s


async def test_a_server_nesting_json_too_deep_for_python_cannot_crash_the_client() -> None:
    deep = b"[" * 30_000 + b"]" * 30_000

    async def hostile(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(wire.encode_packet(wire.PacketType.HANDSHAKE, b'{"code":200,"sys":{"heartbeat":3}}'))
        await stream.receive_some(4096)  # the ack
        codec = wire.MessageCodec(max_body=1 << 20)
        await stream.send_all(codec.push_packet("onDeep", deep) + codec.push_packet("onCalled", deep))
        await trio.sleep(5)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, hostile, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        called: list[object] = []
        with trio.fail_after(10):
            async with open_client("127.0.0.1", port, max_body=1 << 20) as client:
                client.on("onCalled", called.append)
                assert await client.receive_push("onDeep") == deep  # undecodable: its bytes
        nursery.cancel_scope.cancel()
