"""Heartbeats over real sockets with trio's MockClock: a 30 s interval takes milliseconds."""

from __future__ import annotations

import contextlib
import functools
import math
import os

import pytest
import trio
import trio.testing

from tests.runtime.apps import echo_components, wait_until
from trionano import Config, wire
from trionano.testing import RawConnection, open_test_server


async def test_server_heartbeats_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server(echo_components(), Config(heartbeat=30)) as running, running.raw() as raw:
        await raw.handshake()
        start = trio.current_time()
        times = []
        for _ in range(3):
            # keep the connection alive, as a client answering heartbeats would
            packet = await raw.receive_packet()
            assert packet.type is wire.PacketType.HEARTBEAT
            times.append(trio.current_time() - start)
            await raw.send(wire.encode_packet(wire.PacketType.HEARTBEAT))
        gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
        assert all(30 <= gap <= 30 * 1.125 + 0.01 for gap in gaps[1:]), gaps


async def test_silent_client_is_closed_after_two_and_a_half_intervals(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server(echo_components(), Config(heartbeat=30)) as running, running.raw() as raw:
        await raw.handshake()
        start = trio.current_time()
        packets = await raw.receive_until_closed()
        elapsed = trio.current_time() - start
        assert 75 <= elapsed <= 75 + 30 / 8 + 0.01, elapsed
        assert [p.type for p in packets[:-1]] == [wire.PacketType.HEARTBEAT] * (len(packets) - 1)
        assert packets[-1].type is wire.PacketType.KICK
        assert wire.Kick.parse(packets[-1].body).reason == "heartbeat timeout"
        await wait_until(lambda: not running.server.sessions)


async def answer_like_the_official_js_client(raw: RawConnection, interval: float, until: float) -> int:
    """pomelo-jsclient-websocket and nano's starx client: answer each server heartbeat exactly
    one interval after it arrives, ignore the ones that arrive while an answer is pending,
    send nothing else (nano.md §3.4). Returns how many answers were sent."""
    answers = 0
    answer_at = math.inf
    while trio.current_time() < until:
        with trio.move_on_at(min(answer_at, until)):
            packet = await raw.receive_packet()
            assert packet.type is wire.PacketType.HEARTBEAT, packet
            if answer_at == math.inf:
                answer_at = trio.current_time() + interval
            continue
        if trio.current_time() >= answer_at:
            await raw.send(wire.encode_packet(wire.PacketType.HEARTBEAT))
            answers += 1
            answer_at = math.inf
    return answers


async def test_an_idle_official_client_is_never_kicked_at_the_default_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # the raw timeline: 01 00 00 02 7b 7d, 02 00 00 00, then heartbeats answered late
    async with open_test_server(echo_components()) as running, running.raw() as raw:
        await raw.send(bytes.fromhex("01000002 7b7d".replace(" ", "")))
        assert (await raw.receive_packet()).type is wire.PacketType.HANDSHAKE
        await raw.send(bytes.fromhex("02000000"))
        start = trio.current_time()
        answers = await answer_like_the_official_js_client(raw, 30.0, start + 30 * 40)
        assert answers >= 20
        assert len(running.server.sessions) == 1  # forty intervals idle, still connected
        assert running.server.statistics().kicks == {}


async def test_a_client_that_answers_stays(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server(echo_components(), Config(heartbeat=5)) as running, running.connect() as client:
        await trio.sleep(60)  # twelve intervals
        assert client.heartbeats_received >= 10
        assert await client.request("echo.json", {"still": "here"}) == {"still": "here"}


async def test_the_client_gives_up_on_a_silent_server(autojump_clock: trio.testing.MockClock) -> None:
    # a "server" that handshakes and then never says anything again
    async def mute(stream: trio.SocketStream) -> None:
        decoder = wire.PacketDecoder()
        decoder.feed(await stream.receive_some(4096))
        response = wire.HandshakeResponse(heartbeat=10).encode()
        await stream.send_all(wire.encode_packet(wire.PacketType.HANDSHAKE, response))
        await trio.sleep_forever()

    from trionano.client import open_client

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_client("127.0.0.1", port) as client:
            start = trio.current_time()
            with pytest.raises(trio.BrokenResourceError, match="heartbeat timeout"):
                await client.request("any.thing")
            assert 25 <= trio.current_time() - start <= 26  # 2.5 silent intervals
        nursery.cancel_scope.cancel()


async def test_heartbeat_zero_disables_heartbeats(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_server(echo_components(), Config(heartbeat=0)) as running, running.raw() as raw:
        response = await raw.handshake()
        assert response.heartbeat == 0
        with trio.move_on_after(3600) as scope:
            await raw.receive_packet()
        assert scope.cancelled_caught  # an hour of silence: no heartbeat, no timeout


async def test_a_starved_server_hears_what_came_before_it_judges_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # the process is starved (stopped, its loop held) for longer than the timeout while its
    # clients keep sending heartbeats: they wait in the sockets, and are not silence. Here the
    # heartbeats go into the sockets and the clock jumps 100 s before the server runs again:
    # its readers and its sweep wake in the same scheduler pass, in either order (the sweep
    # used to kick every client about every other time)
    heartbeat = wire.encode_packet(wire.PacketType.HEARTBEAT)
    async with (
        open_test_server(echo_components(), Config(heartbeat=30)) as running,
        contextlib.AsyncExitStack() as stack,
    ):
        raws = [await stack.enter_async_context(running.raw()) for _ in range(4)]
        for raw in raws:
            await raw.handshake()
        for _ in range(8):
            for raw in raws:  # written at once: no checkpoint between these and the jump
                assert os.write(raw.stream.socket.fileno(), heartbeat) == len(heartbeat)
            autojump_clock.jump(100)  # 100 s pass with nothing run: past the 75 s timeout
            await trio.sleep(5)
            assert running.server.statistics().kicks == {}
        assert len(running.server.sessions) == 4
        # and silence is still silence: no heartbeat for 2.5 intervals is kicked
        await trio.sleep(100)
        assert running.server.statistics().kicks == {"heartbeat timeout": 4}
