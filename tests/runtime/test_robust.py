"""What one client cannot do to a server, of five kinds: leave a Request unanswered by giving it
id 0; lock others out with connections that never handshake; reset its rate budget by
reconnecting; stop the server from a handler (SystemExit); flood the log by churning
connections. Distinct peers are distinct loopback addresses (127.0.0.2, ...); a bystander on
127.0.0.1 must stay served throughout."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from tests.runtime.apps import s_components, wait_until
from trionano import (
    Component,
    Components,
    Config,
    HandshakeRejected,
    Pipeline,
    RateLimit,
    Server,
    Session,
    WebSocketEndpoint,
    wire,
)
from trionano.client import open_websocket_client
from trionano.testing import RawConnection, RunningServer, open_test_server


def request(mid: int, route: str, body: bytes = b"{}") -> bytes:
    return wire.encode_packet(wire.PacketType.DATA, wire.encode_message(wire.Request(mid, route, body)))


HEARTBEAT = wire.encode_packet(wire.PacketType.HEARTBEAT)


@asynccontextmanager
async def s_server(config: Config | None = None) -> AsyncIterator[RunningServer]:
    components, _, _ = s_components()
    async with open_test_server(components, config) as running:
        yield running


@asynccontextmanager
async def raw_from(running: RunningServer, address: str) -> AsyncIterator[RawConnection]:
    """A raw connection to ``running`` from the local address ``address`` (a distinct peer)."""
    stream = await trio.open_tcp_stream(running.host, running.port, local_address=address)
    async with stream:
        yield RawConnection(stream)


async def served(running: RunningServer, rounds: int = 3) -> None:
    """A bystander from 127.0.0.1 connects, handshakes and is answered ``rounds`` times."""
    with trio.fail_after(30):
        async with running.connect() as client:
            for i in range(rounds):
                assert await client.request("s.echo", {"i": i}, timeout=30) == {"i": i}


# -- 1. a Request with id 0 ---------------------------------------------------------------------


@pytest.mark.parametrize("route", ["s.echo", "s.silent", "no.such.route"])
@pytest.mark.parametrize("path", ["alone", "behind-a-heartbeat"])  # the fused read path, and the full one
async def test_a_request_with_id_0_is_answered_400_with_id_0(route: str, path: str) -> None:
    async with s_server() as running, running.raw() as raw:
        await raw.handshake()
        await raw.send((HEARTBEAT if path == "behind-a-heartbeat" else b"") + request(0, route) + request(1, "s.echo"))
        with trio.fail_after(10):
            first, second = await raw.receive_response(), await raw.receive_response()
        assert first.id == 0
        assert first.body.startswith(b'{"code":400,')
        assert b"id 0" in first.body
        assert (second.id, second.body) == (1, b"{}")  # the connection goes on
        stats = running.server.statistics()
        assert stats.error_responses.get(400) == 1
        assert stats.protocol_errors == 0  # not kicked: answered


# -- 2. connections that never handshake ----------------------------------------------------------


async def test_silent_sockets_cannot_lock_out_a_client() -> None:
    """One peer fills max_connections with sockets that never handshake: once they have been
    silent a second, a newcomer takes the oldest one's place, long before the handshake
    deadline."""
    async with s_server(Config(max_connections=5, handshake_timeout=60)) as running:
        async with trio.open_nursery() as nursery:
            closed = 0

            async def silent() -> None:
                nonlocal closed
                async with raw_from(running, "127.0.0.2") as raw:
                    packets = await raw.receive_until_closed()
                    assert [wire.Kick.parse(p.body).reason for p in packets] == ["handshake evicted"]
                    closed += 1

            for _ in range(5):
                nursery.start_soon(silent)
            await wait_until(lambda: running.server.statistics().connections_accepted == 5)
            await trio.sleep(1.5)  # HANDSHAKE_GRACE
            start = trio.current_time()
            async with running.connect() as one, running.connect() as two, running.connect() as three:
                for client in (one, two, three):  # each took a silent socket's place
                    assert await client.request("s.echo", {}, timeout=30) == {}
            assert trio.current_time() - start < 30  # not held until the 60 s handshake deadline
            await wait_until(lambda: closed == 3)
            nursery.cancel_scope.cancel()
        stats = running.server.statistics()
        assert stats.kicks["handshake evicted"] == 3
        assert stats.connections_refused == 0


async def test_a_handshake_storm_is_refused_not_evicted() -> None:
    """Connections younger than the grace are never evicted: a newcomer at a bound is refused
    instead (a storm of logins cannot evict one another forever)."""
    async with s_server(Config(max_connections=3, handshake_timeout=60)) as running:
        async with raw_from(running, "127.0.0.2"), raw_from(running, "127.0.0.3"), raw_from(running, "127.0.0.4"):
            await wait_until(lambda: running.server.statistics().connections_accepted == 3)
            async with raw_from(running, "127.0.0.5") as fourth:
                packets = await fourth.receive_until_closed()
                assert [wire.Kick.parse(p.body).reason for p in packets] == ["server full"]
        assert running.server.statistics().kicks.get("handshake evicted", 0) == 0


async def test_a_server_full_of_sessions_still_refuses_and_keeps_its_sessions() -> None:
    async with (
        s_server(Config(max_connections=2)) as running,
        running.connect() as one,
        running.connect() as two,
        running.raw() as third,
    ):
        packets = await third.receive_until_closed()
        assert [wire.Kick.parse(p.body).reason for p in packets] == ["server full"]
        for client in (one, two):  # a handshaken session is never evicted
            assert await client.request("s.echo", {}, timeout=10) == {}


async def test_one_peer_holds_at_most_its_share_of_handshaking_connections() -> None:
    config = Config(max_handshaking_per_host=4, handshake_timeout=60)
    async with s_server(config) as running, trio.open_nursery() as nursery:
        open_now = 0

        async def silent() -> None:
            nonlocal open_now
            async with raw_from(running, "127.0.0.3") as raw:
                open_now += 1
                await raw.receive_until_closed()
                open_now -= 1

        for _ in range(20):
            nursery.start_soon(silent)
        await wait_until(lambda: running.server.statistics().connections_accepted == 4, timeout=30)
        await wait_until(lambda: running.server.statistics().connections_refused == 16, timeout=30)
        await wait_until(lambda: open_now == 4, timeout=30)  # young: newcomers refused "server busy"
        await served(running)  # another peer is not affected
        await trio.sleep(1.5)  # HANDSHAKE_GRACE: now each newcomer evicts the peer's oldest
        for _ in range(6):
            nursery.start_soon(silent)
        await wait_until(lambda: running.server.statistics().kicks.get("handshake evicted", 0) == 4, timeout=30)
        await wait_until(lambda: open_now == 4, timeout=30)
        await served(running)
        nursery.cancel_scope.cancel()


async def test_handshaking_connections_are_bounded_across_peers() -> None:
    config = Config(max_handshaking=6, handshake_timeout=60)
    async with s_server(config) as running, trio.open_nursery() as nursery:
        open_now = 0

        async def silent(address: str) -> None:
            nonlocal open_now
            async with raw_from(running, address) as raw:
                open_now += 1
                await raw.receive_until_closed()
                open_now -= 1

        for i in range(12):
            nursery.start_soon(silent, f"127.0.0.{10 + i}")
        await wait_until(lambda: running.server.statistics().connections_refused == 6, timeout=30)
        await wait_until(lambda: open_now == 6, timeout=30)
        await trio.sleep(1.5)  # HANDSHAKE_GRACE
        await served(running)  # evicts one
        assert running.server.statistics().kicks["handshake evicted"] == 1
        nursery.cancel_scope.cancel()


# -- 3. a flooder that reconnects -----------------------------------------------------------------


async def flood_once(running: RunningServer, address: str, count: int) -> int:
    """Connect from ``address``, send ``count`` requests at once, read until closed or all are
    answered; the number answered with a value (not refused)."""
    answered = 0
    try:
        async with raw_from(running, address) as raw:
            await raw.handshake()
            await raw.send(b"".join(request(mid, "s.echo") for mid in range(1, count + 1)))
            with trio.move_on_after(10):
                for _ in range(count):
                    response = await raw.receive_response()
                    if response.body == b"{}":
                        answered += 1
    except (EOFError, AssertionError, trio.BrokenResourceError, OSError):
        pass  # kicked: the Kick packet, or a reset
    return answered


async def test_reconnecting_does_not_refill_a_peers_rate_budget() -> None:
    limit = RateLimit(rate=20, burst=100, kick_after=100)
    async with s_server(Config(rate_limit=limit)) as running:
        start = trio.current_time()
        answered = 0
        for _ in range(15):
            answered += await flood_once(running, "127.0.0.2", 300)
        elapsed = trio.current_time() - start
        # one budget for the peer: a burst, then the rate (each connection's own fresh budget
        # would have answered 15 x 100)
        assert answered <= 100 + 20 * elapsed + 20, (answered, elapsed)
        assert running.server.statistics().kicks.get("rate limit", 0) >= 1
        # another peer has its own budget: a burst is answered in full (the handshake took two tokens)
        assert await flood_once(running, "127.0.0.3", 90) == 90
        await served(running, rounds=20)


async def test_a_peers_budget_is_forgotten_once_refilled() -> None:
    limit = RateLimit(rate=100, burst=100, kick_after=100)
    async with s_server(Config(rate_limit=limit)) as running:
        await flood_once(running, "127.0.0.2", 300)
        assert running.server.statistics().kicks["rate limit"] == 1
        await trio.sleep(1.5)  # both buckets refilled after a second
        assert await flood_once(running, "127.0.0.2", 90) == 90


# -- 4. a handler that raises SystemExit ---------------------------------------------------------


class Exits(Component):
    def sync(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        raise SystemExit(3)

    async def async_(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        raise SystemExit(4)

    def exit_later(self, session: Session, msg: dict[str, Any]) -> dict[str, bool]:
        def boom() -> None:
            raise SystemExit(5)

        self.server.scheduler.after(0.01, boom)
        return {"ok": True}

    def interrupt(self, session: Session, msg: dict[str, Any]) -> None:
        raise KeyboardInterrupt


def exits_components() -> Components:
    components, _, _ = s_components()
    components.register(Exits(), name="exits")
    return components


@pytest.mark.parametrize("route", ["exits.sync", "exits.async_"])
async def test_a_handler_raising_system_exit_is_answered_500_and_the_server_serves_on(
    route: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionano")
    async with open_test_server(exits_components()) as running, running.connect() as client:
        for _ in range(3):
            with pytest.raises(Exception, match="internal error"):
                await client.request(route, {}, timeout=10, check=True)
        await served(running)
        assert running.server.is_running
    failures = [r for r in caplog.records if "SystemExit" in (r.exc_text or "") or r.exc_info]
    assert 1 <= len(failures) <= 3


async def test_a_timer_raising_system_exit_does_not_stop_the_server() -> None:
    config = Config(timer_precision=0.01)
    async with open_test_server(exits_components(), config) as running, running.connect() as client:
        assert await client.request("exits.exit_later", {}, timeout=10) == {"ok": True}
        await trio.sleep(0.5)
        await served(running)


async def test_system_exit_from_a_validator_a_pipeline_or_a_close_hook_does_not_stop_the_server() -> None:
    def validator(session: Session, handshake: wire.Handshake) -> None:
        if handshake.user == {"exit": True}:
            raise SystemExit(6)

    def inbound(session: Session, message: Any) -> None:
        if message.route == "s.say":
            raise SystemExit(7)

    pipeline = Pipeline()
    pipeline.inbound.push_back(inbound)
    server = Server(exits_components(), Config(handshake_validator=validator, pipeline=pipeline))

    def hook(session: Session) -> None:
        raise SystemExit(8)

    server.on_session_closed(hook)
    async with open_test_server(server) as running:
        with pytest.raises(HandshakeRejected):
            async with running.connect(user={"exit": True}):
                pass
        async with running.connect() as client:
            with pytest.raises(Exception, match="400"):
                await client.request("s.say", {}, timeout=10, check=True)
        await trio.sleep(0.2)  # the close hook has run
        await served(running)
        assert running.server.is_running


async def interrupted_by_a_handler() -> None:
    async with open_test_server(exits_components()) as running, running.connect() as client:
        await client.notify("exits.interrupt", {})
        await trio.sleep(30)


async def test_keyboard_interrupt_from_a_handler_still_stops_the_server() -> None:
    with pytest.raises(BaseException) as info:  # noqa: PT011 - a KeyboardInterrupt, maybe in a group
        await interrupted_by_a_handler()
    error = info.value
    assert isinstance(error, KeyboardInterrupt) or (
        isinstance(error, BaseExceptionGroup) and error.subgroup(KeyboardInterrupt) is not None
    ), repr(error)


# -- 5. the log under connection churn ----------------------------------------------------------


async def test_connection_churn_writes_no_info_lines_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trionano")
    async with s_server() as running:
        caplog.clear()
        for _ in range(40):
            async with running.connect() as client:
                await client.request("s.echo", {}, timeout=10)
        await wait_until(lambda: running.server.statistics().sessions_closed == 40)
        stats = running.server.statistics()
        assert (stats.connections_accepted, stats.sessions_opened) == (40, 40)  # what operators see instead
    per_connection = [r for r in caplog.records if r.levelno >= logging.INFO and "session" in r.getMessage()]
    assert per_connection == []


async def test_silent_sockets_before_a_websocket_upgrade_are_bounded_too() -> None:
    """The HTTP upgrade comes before the server's handshake accounting: a WebSocket endpoint
    bounds the sockets still in it the same way, per peer and in all."""
    endpoint = WebSocketEndpoint("127.0.0.1", handshake_timeout=60, max_upgrading=8, max_upgrading_per_host=3)
    server = Server(s_components()[0])
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, endpoint)
        open_now = 0

        async def silent(address: str) -> None:
            nonlocal open_now
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=address)
            async with stream:
                open_now += 1
                try:
                    while await stream.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass
                open_now -= 1

        async with trio.open_nursery() as silents:
            for _ in range(10):  # one peer: 3 kept, the rest refused at once
                silents.start_soon(silent, "127.0.0.2")
            await wait_until(lambda: endpoint.upgrades_refused == 7, timeout=30)
            await wait_until(lambda: open_now == 3, timeout=30)
            for i in range(10):  # all peers: 8 in all
                silents.start_soon(silent, f"127.0.0.{20 + i}")
            await wait_until(lambda: endpoint.upgrades_refused == 12, timeout=30)
            await trio.sleep(1.5)  # HANDSHAKE_GRACE: now a newcomer evicts the oldest
            async with open_websocket_client(f"ws://127.0.0.1:{port}/") as client:
                assert await client.request("s.echo", {}, timeout=30) == {}
            assert endpoint.upgrades_evicted == 1
            silents.cancel_scope.cancel()
        server.shutdown()


async def test_an_endpoints_suppressed_log_records_are_reported_on_their_own_and_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The kind of attack5's finding (a flood's suppressed records never reported, on the
    cluster's loggers): a WebSocket endpoint's refused upgrades are logged 10 per 10 s window,
    and the rest was reported only by the next record of that kind, never if the flood
    stopped, not even at shutdown. Now the endpoint reports them within about a second of the
    window's end, and what is still pending when it closes."""
    endpoint = WebSocketEndpoint("127.0.0.1", handshake_timeout=60, max_upgrading=64, max_upgrading_per_host=1)
    server = Server(s_components()[0])
    caplog.set_level(logging.INFO, logger="trionano.websocket")

    def summaries() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "trionano.websocket" and "similar messages suppressed" in r.getMessage()
        ]

    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, endpoint)

        async def silent() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                try:
                    while await stream.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass

        async with trio.open_nursery() as silents:
            for _ in range(40):  # one peer, one upgrade at a time: the others refused or evicting
                silents.start_soon(silent)
            await wait_until(lambda: endpoint.upgrades_refused + endpoint.upgrades_evicted >= 39, timeout=60)
            flood = endpoint.upgrades_refused
            assert flood >= 20
            # the window (10 s) ends with no record of its kind after it: reported on its own
            await wait_until(lambda: any("(upgrade refused)" in s for s in summaries()), timeout=60)
            reported = sum(int(s.split()[0]) for s in summaries() if "(upgrade refused)" in s)
            logged = [r for r in caplog.records if r.getMessage().startswith("WebSocket from")]
            assert reported + len(logged) == flood
            for _ in range(30):  # a second flood, then the server stops: reported at its close
                silents.start_soon(silent)
            await wait_until(lambda: endpoint.upgrades_refused + endpoint.upgrades_evicted >= 39 + 30, timeout=60)
            server.shutdown()
            await server.wait_stopped()
            assert endpoint.upgrades_refused > flood
            reported = sum(int(s.split()[0]) for s in summaries() if "(upgrade refused)" in s)
            logged = [r for r in caplog.records if r.getMessage().startswith("WebSocket from")]
            assert reported + len(logged) == endpoint.upgrades_refused
            silents.cancel_scope.cancel()
