"""What a client (honest or not) must get from the server, of five kinds: a route in CESU-8
(the official pomelo client's encoding) routed, never kicked; a log that no traffic can flood,
its suppressed counts reported when the window ends; a dropped deferred answer answered 500;
a large pipelined burst paced by backpressure, never kicked as a slow consumer; small
contracts of sessions (a long kick reason, an answer after an answer)."""

from __future__ import annotations

import functools
import gc
import json
import logging
import re
import shutil
from typing import Any

import pytest
import trio
import trio.lowlevel

from tests.runtime.apps import s_components, wait_until
from tests.runtime.test_browser import HAVE_POMELO, JS_DIR, require
from trionano import (
    Component,
    Components,
    Config,
    DeferredResponse,
    Server,
    Session,
    WebSocketEndpoint,
    wire,
)
from trionano.client import Client
from trionano.testing import RunningServer, open_test_server

# -- 1. CESU-8 routes ----------------------------------------------------------------------------


def cesu8(text: str) -> bytes:
    """``text`` as pomelo's JS client encodes it: each UTF-16 code unit on its own."""
    units = text.encode("utf-16-le")
    return "".join(chr(int.from_bytes(units[i : i + 2], "little")) for i in range(0, len(units), 2)).encode(
        "utf-8", "surrogatepass"
    )


def request(mid: int, route: str, body: bytes = b"{}") -> bytes:
    return wire.encode_packet(wire.PacketType.DATA, wire.encode_message(wire.Request(mid, route, body)))


def cesu8_request(mid: int, route: str, body: bytes = b"{}") -> bytes:
    raw = cesu8(route)
    message = bytes((0, mid)) + bytes((len(raw),)) + raw + body
    return wire.encode_packet(wire.PacketType.DATA, message)


async def test_a_cesu8_route_is_routed_like_its_utf8_spelling_not_kicked() -> None:
    components, _, _ = s_components()
    async with open_test_server(components) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(cesu8_request(1, "s.\U0001f600") + cesu8_request(2, "s.echo", b'{"a":1}'))
        first = await raw.receive_response()
        assert (first.id, json.loads(first.body)["code"]) == (1, 404)
        second = await raw.receive_response()
        assert (second.id, json.loads(second.body)) == (2, {"a": 1})
        assert running.server.statistics().protocol_errors == 0


async def test_the_official_client_requesting_a_non_bmp_route_gets_404_and_its_next_answers() -> None:
    node = shutil.which("node")
    require(node is not None, "node")
    require(HAVE_POMELO, "tests/js node_modules (npm ci)")
    assert node is not None
    components, _, _ = s_components()
    server = Server(components)
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, WebSocketEndpoint("127.0.0.1"))
        with trio.fail_after(60):
            done = await trio.run_process(
                [node, str(JS_DIR / "pomelo_emoji_route.cjs"), "127.0.0.1", str(port)], capture_stdout=True, check=True
            )
        server.shutdown()
    (line,) = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    seen = json.loads(line)
    assert seen["events"] == [], seen
    routes = [route for route, _ in seen["answers"]]
    assert routes == ["s.\U0001f600", "s.\u00e9", "s.echo"], seen
    assert [answer.get("code") for _, answer in seen["answers"][:2]] == [404, 404]
    assert seen["answers"][2][1] == {"ok": 1}


# -- 5. small contracts of sessions -------------------------------------------------------------


class Contracts(Component):
    def kick_long(self, session: Session, msg: dict[str, Any]) -> None:
        session.kick("bye \U0001f600 \x00\n" + "k" * int(msg.get("n", 70_000)))

    def twice(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        session.response({"first": 1})
        return {"second": 2}


def contracts_components() -> Components:
    components, _, _ = s_components()
    components.register(Contracts(), name="c")
    return components


@pytest.mark.parametrize("max_packet_size", [64, 1024, 65536])
async def test_a_kick_reason_too_long_for_a_packet_is_cut_to_fit_and_sent(max_packet_size: int) -> None:
    config = Config(max_packet_size=max_packet_size)
    async with open_test_server(contracts_components(), config) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(request(1, "c.kick_long", b'{"n": 70000}'))
        packets = await raw.receive_until_closed()
    kicks = [packet for packet in packets if packet.type is wire.PacketType.KICK]
    assert len(kicks) == 1, packets
    assert len(kicks[0].body) <= max_packet_size
    reason = wire.Kick.parse(kicks[0].body).reason
    assert reason.endswith("...")
    assert "bye \U0001f600 \x00\n".startswith(reason[:-3]) or reason.startswith("bye \U0001f600 \x00\nk")


async def test_a_value_returned_after_an_answer_is_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trionano.router")
    async with open_test_server(contracts_components()) as running, running.connect() as client:
        assert await client.request("c.twice", {}, timeout=10) == {"first": 1}
        assert await client.request("s.echo", {"next": 1}, timeout=10) == {"next": 1}  # one answer each, in order
    (record,) = [r for r in caplog.records if "after answering it" in r.getMessage()]
    assert "c.twice" in record.getMessage()


# -- 2. a log no traffic can flood ----------------------------------------------------------------


class Noisy(Component):
    def defer_later_exit(self, session: Session, msg: dict[str, Any]) -> None:
        answer = session.defer()

        def boom() -> None:
            raise SystemExit(7)

        self.server.scheduler.after(0.2, boom)  # shorter than the 1 s tick: a warning each call
        self.server.scheduler.after(0.4, lambda: answer.respond({"late": 1}))


async def test_timers_from_client_traffic_cannot_flood_the_scheduler_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trionano")
    components, _, _ = s_components()
    components.register(Noisy(), name="x")
    count = 600
    started = trio.current_time()
    async with open_test_server(components) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(b"".join(request(mid, "x.defer_later_exit") for mid in range(1, count + 1)))
        with trio.fail_after(60):
            answers = [await raw.receive_response() for _ in range(count)]
        assert [json.loads(answer.body) for answer in answers] == [{"late": 1}] * count
        async with running.connect() as bystander:
            assert await bystander.request("s.echo", {"ok": 1}, timeout=30) == {"ok": 1}
    windows = int((trio.current_time() - started) // 10) + 2  # those begun, and the shutdown's flush
    scheduler = [r for r in caplog.records if r.name == "trionano.scheduler"]
    # two kinds (a timer shorter than the tick, a timer that raised), at most 10 of each per
    # 10 s, and the reports of what was suppressed (at most one per kind and window): 44 when
    # it all took under 10 s, more on a loaded machine
    assert len(scheduler) <= 2 * (10 + 1) * windows, (len(scheduler), windows)
    reported = sum(int(m.group(1)) for r in scheduler if (m := re.search(r"(\d+) similar messages", r.getMessage())))
    shown = len([r for r in scheduler if "similar messages" not in r.getMessage()])
    assert shown + reported == 3 * count  # every record is shown or counted, none lost


# -- 3. a deferred answer dropped unanswered --------------------------------------------------------


class Promises(Component):
    def __init__(self) -> None:
        self.promises: list[DeferredResponse] = []

    def dropped(self, session: Session, msg: dict[str, Any]) -> None:
        session.defer()  # the promise is dropped at once: never answered

    async def dropped_async(self, session: Session, msg: dict[str, Any]) -> None:
        answer = session.defer()
        await trio.lowlevel.checkpoint()
        del answer

    def twice_one_kept(self, session: Session, msg: dict[str, Any]) -> None:
        session.defer()  # dropped, but another promise for the same request lives on
        answer = session.defer()
        self.server.scheduler.after(0.01, lambda: answer.respond({"kept": True}))

    def kept(self, session: Session, msg: dict[str, Any]) -> None:
        self.promises.append(session.defer())

    def answer_kept(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        for answer in self.promises:
            answer.respond({"late": True})
        self.promises.clear()
        return {"answered": 1}

    def cycle(self, session: Session, msg: dict[str, Any]) -> None:
        holder: list[Any] = [session.defer()]
        holder.append(holder)  # dropped in a reference cycle: the garbage collector finds it


def promises_components() -> Components:
    components, _, _ = s_components()
    components.register(Promises(), name="p")
    return components


def handled_more_than(running: RunningServer, route: str, count: int) -> bool:
    return running.server.statistics().routes[route].handled > count


@pytest.mark.parametrize("route", ["p.dropped", "p.dropped_async", "p.cycle"])
async def test_a_deferred_answer_dropped_unanswered_is_answered_500_and_logged(
    route: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trionano")
    async with open_test_server(promises_components()) as running, running.connect() as client:
        for done in range(2):
            answers: list[Any] = []

            async def ask(client: Client = client, answers: list[Any] = answers) -> None:
                answers.append(await client.request(route, {}, timeout=30))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                # the handler has returned (a fixed 50 ms was not always enough on a loaded machine)
                await wait_until(functools.partial(handled_more_than, running, route, done))
                gc.collect()  # p.cycle: the promise is found by the garbage collector
            assert answers == [{"code": 500, "message": "internal error"}]
        assert await client.request("s.echo", {"next": 1}, timeout=10) == {"next": 1}
        assert running.server.statistics().error_responses.get(500, 0) == 2
    assert any("dropped unanswered" in r.getMessage() and route in r.getMessage() for r in caplog.records)


async def test_a_kept_or_answered_promise_is_not_answered_twice() -> None:
    async with open_test_server(promises_components()) as running, running.connect() as client:
        assert await client.request("p.twice_one_kept", {}, timeout=30) == {"kept": True}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(client.request, "p.kept", {}, timeout=30))
            await trio.sleep(0.1)
            gc.collect()  # the promise is held by the component: not dropped
            assert await client.request("p.answer_kept", {}, timeout=30) == {"answered": 1}
        assert await client.request("s.echo", {"next": 1}, timeout=10) == {"next": 1}
        assert running.server.statistics().error_responses.get(500, 0) == 0


# -- 4. backpressure on a pipelining client ---------------------------------------------------------


async def bystander_served(running: RunningServer, rounds: int = 3) -> None:
    async with running.connect() as client:
        for i in range(rounds):
            assert await client.request("s.echo", {"i": i}, timeout=60) == {"i": i}


@pytest.mark.parametrize("count", [400])
async def test_a_client_pipelining_a_large_burst_is_paced_not_kicked(count: int) -> None:
    """400 answers of 60 KB (24 MB, over max_outbox_bytes) asked at once, read as fast as the
    client can: every one answered, in order; the reader stops taking Requests while the
    answers wait, so the outbox stays bounded, and a bystander is served meanwhile."""
    components, _, _ = s_components()
    async with open_test_server(components) as running, running.raw() as raw:
        await raw.handshake()
        body = json.dumps({"size": 60_000}).encode()
        await raw.send(b"".join(request(mid, "s.sized", body) for mid in range(1, count + 1)))
        ids: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bystander_served, running)
            with trio.fail_after(120):
                for _ in range(count):
                    response = await raw.receive_response()
                    assert len(response.body) > 60_000
                    ids.append(response.id)
        assert ids == list(range(1, count + 1))
        statistics = running.server.statistics()
        assert statistics.kicks.get("slow consumer", 0) == 0


async def test_a_client_that_pipelines_and_never_reads_is_still_reaped() -> None:
    """The same burst from a client that reads nothing: the reader stops taking its Requests,
    the writer waits on it, and the heartbeat timeout reaps it; a bystander is served."""
    components, _, _ = s_components()
    async with open_test_server(components, Config(heartbeat=1)) as running, running.raw() as raw:
        await raw.handshake()
        body = json.dumps({"size": 60_000}).encode()
        await raw.send(b"".join(request(mid, "s.sized", body) for mid in range(1, 401)))
        await bystander_served(running)
        await wait_until(lambda: not running.server.sessions, timeout=60)
        kicks = running.server.statistics().kicks
        assert kicks.get("heartbeat timeout", 0) + kicks.get("slow consumer", 0) == 1, kicks


class Nap(Component):
    async def nap(self, session: Session, msg: dict[str, Any]) -> dict[str, float]:
        await trio.sleep(msg["seconds"])
        return {"slept": msg["seconds"]}


async def test_a_client_held_back_by_backpressure_is_not_timed_out_for_the_silence_it_was_made_to_keep() -> None:
    """One Request may be unanswered at a time: the reader does not read the client's next
    Request, nor the heartbeats it sends behind it, for 4 heartbeat timeouts' worth of seconds;
    the client is not kicked for that silence, and both Requests are answered."""
    components, _, _ = s_components()
    components.register(Nap(), name="nap", lane="naps")
    config = Config(heartbeat=0.5, max_pending_requests=1)
    heartbeat = wire.encode_packet(wire.PacketType.HEARTBEAT)
    async with open_test_server(components, config) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(request(1, "nap.nap", b'{"seconds": 5}') + request(2, "s.echo", b'{"after": 1}'))
        answers: list[wire.Response] = []
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:

                async def beat() -> None:
                    while True:
                        await raw.send(heartbeat)
                        await trio.sleep(0.25)

                nursery.start_soon(beat)
                while len(answers) < 2:
                    answers.append(await raw.receive_response())
                nursery.cancel_scope.cancel()
        assert [(a.id, json.loads(a.body)) for a in answers] == [(1, {"slept": 5}), (2, {"after": 1})]
        assert running.server.statistics().kicks == {}
