"""A Request is always answered, in order, however it is sent and whatever its handler does
(Runtime v2 faults 2, 3, 4, 5, 6, 7, 8), always with a bystander that must stay served."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.runtime.apps import s_components, wait_until
from trionano import (
    Component,
    Components,
    Config,
    HandlerError,
    JSONSerializer,
    Server,
    Session,
    SlowConsumerPolicy,
    TCPEndpoint,
    WebSocketEndpoint,
    wire,
)
from trionano.client import open_websocket_client
from trionano.testing import RawConnection, RunningServer, open_test_server


def request(mid: int, route: str, body: bytes) -> bytes:
    return wire.encode_packet(wire.PacketType.DATA, wire.encode_message(wire.Request(mid, route, body)))


def test_the_issue_bytes_are_what_the_tests_send() -> None:
    assert request(1, "s.echo", b"{}") == bytes.fromhex("0400000b00010673 2e6563686f7b7d".replace(" ", ""))


async def responses(raw: RawConnection, count: int) -> list[wire.Response]:
    return [await raw.receive_response() for _ in range(count)]


@asynccontextmanager
async def s_server(config: Config | None = None) -> AsyncIterator[RunningServer]:
    components, _, _ = s_components()
    async with open_test_server(components, config) as running:
        yield running


async def bystander_is_served(running: RunningServer) -> None:
    async with running.connect() as client:
        assert await client.request("s.echo", {"by": "stander"}, timeout=10) == {"by": "stander"}


# -- 2. a burst of requests loses no response -----------------------------------------------


@pytest.mark.parametrize("count", [200, 1000])
@pytest.mark.parametrize("policy", list(SlowConsumerPolicy))
async def test_a_burst_of_requests_in_one_write_is_answered_in_order(count: int, policy: SlowConsumerPolicy) -> None:
    async with s_server(Config(slow_consumer=policy)) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(b"".join(request(mid, "s.echo", b"{}") for mid in range(1, count + 1)))
        with trio.fail_after(20):
            answers = await responses(raw, count)
        assert [m.id for m in answers] == list(range(1, count + 1))
        assert all(json.loads(m.body) == {} for m in answers)
        stats = running.server.statistics()
        assert stats.dropped_slow == 0
        assert stats.kicks == {}
        await bystander_is_served(running)


@pytest.mark.parametrize("policy", list(SlowConsumerPolicy))
async def test_a_handler_pushing_many_messages_to_a_reading_session_loses_none(policy: SlowConsumerPolicy) -> None:
    async with s_server(Config(slow_consumer=policy)) as running, running.connect() as client:
        assert await client.request("s.pushes", {"n": 1000}, timeout=20) == {"pushed": 1000}
        with trio.fail_after(20):
            got = [await client.receive_push("onPush") for _ in range(1000)]
        assert [m["i"] for m in got] == list(range(1000))
        assert running.server.statistics().dropped_slow == 0


@pytest.mark.parametrize("policy", list(SlowConsumerPolicy))
async def test_a_synchronous_push_storm_to_a_reading_client_loses_nothing(policy: SlowConsumerPolicy) -> None:
    # 3,000 pushes from one handler, without a checkpoint: the writer never had a chance yet
    async with s_server(Config(slow_consumer=policy)) as running, running.connect(push_backlog=5_000) as client:
        assert await client.request("s.pushes", {"n": 3000}, timeout=30) == {"pushed": 3000}
        with trio.fail_after(30):
            got = [await client.receive_push("onPush") for _ in range(3000)]
        assert [m["i"] for m in got] == list(range(3000))
        assert running.server.statistics().kicks == {}


@pytest.mark.parametrize("policy", list(SlowConsumerPolicy))
async def test_a_burst_of_large_answers_to_a_reading_client_is_all_answered(policy: SlowConsumerPolicy) -> None:
    # 1,000 requests for 8 KB answers: the kernel buffer fills, but the client reads on
    async with s_server(Config(slow_consumer=policy)) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(b"".join(request(mid, "s.sized", b'{"size": 8000}') for mid in range(1, 1001)))
        with trio.fail_after(60):
            answers = await responses(raw, 1000)
        assert [m.id for m in answers] == list(range(1, 1001))
        stats = running.server.statistics()
        assert stats.kicks == {}
        assert stats.dropped_slow == 0


@pytest.mark.parametrize("policy", list(SlowConsumerPolicy))
async def test_a_client_that_never_reads_large_answers_holds_bounded_memory(policy: SlowConsumerPolicy) -> None:
    # its answers cannot be dropped (a Request is always answered): they queue past the memory
    # bound by at most the answers of the Requests taken, and the client is reaped: kicked
    # "slow consumer" (the kick policy, or past that), or by the heartbeat timeout (its writer
    # stuck for 2.5 intervals)
    config = Config(slow_consumer=policy, max_outbox_bytes=2 << 20, heartbeat=1)
    bound = (2 << 20) + config.max_pending_requests * (config.max_packet_size + 64) + 50 * 60_100  # + one read
    async with s_server(config) as running, running.raw() as raw:
        await raw.handshake()
        with trio.fail_after(30):
            while not running.server.statistics().kicks:
                with trio.move_on_after(1):  # the server may stop reading (backpressure)
                    await raw.send(b"".join(request(mid, "s.sized", b'{"size": 60000}') for mid in range(1, 51)))
                assert running.server.statistics().outbox_max * 60_000 < bound
                await trio.sleep(0.01)
        assert set(running.server.statistics().kicks) <= {"slow consumer", "heartbeat timeout"}
        await bystander_is_served(running)


async def test_pushes_past_the_memory_bound_never_cost_a_reading_client_its_answer() -> None:
    # a handler pushes 2.4 MB to its own client, past max_outbox_bytes, before the writer runs:
    # under the drop policy the Pushes past the bound are dropped, and the Response still goes
    # (it used to meet the memory bound itself: the client, which reads, was kicked unanswered)
    config = Config(max_outbox_bytes=1 << 20)
    async with s_server(config) as running, running.connect() as client:
        answer = await client.request("s.padded", {"n": 40}, timeout=30)
        assert 0 < answer["queued"] < 40
        stats = running.server.statistics()
        assert stats.dropped_slow == 40 - answer["queued"]
        assert stats.kicks == {}
        assert await client.request("s.echo", {"still": "here"}, timeout=10) == {"still": "here"}
        await bystander_is_served(running)


async def test_under_the_kick_policy_a_wait_is_judged_even_if_nothing_more_is_queued() -> None:
    # one Request whose handler queues 12 MB of Pushes and its answer, then nothing: the client
    # never reads. The writer's wait is judged once slow_consumer_after has passed (it used to
    # be judged only when a later message was queued: the client held its outbox until the
    # heartbeat timeout, 75 s by default)
    config = Config(slow_consumer=SlowConsumerPolicy.KICK, outbox_size=16, slow_consumer_after=0.2)
    async with s_server(config) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(request(1, "s.padded", b'{"n": 200}'))
        with trio.fail_after(20):  # the heartbeat timeout (30 s intervals) cannot come first
            await wait_until(lambda: bool(running.server.statistics().kicks), timeout=20)
        assert running.server.statistics().kicks == {"slow consumer": 1}
        await bystander_is_served(running)


async def test_a_client_that_never_reads_is_still_a_slow_consumer() -> None:
    # the kind's other side: what the client fails to read is still judged
    config = Config(slow_consumer=SlowConsumerPolicy.KICK, outbox_size=16)
    async with s_server(config) as running, running.raw() as raw:
        await raw.handshake()
        with trio.fail_after(20):
            while not running.server.statistics().kicks.get("slow consumer"):
                await raw.send(request(1, "s.pads", b'{"n": 50}'))
                await trio.sleep(0.05)
        await bystander_is_served(running)


# -- 3. requests are never left unanswered --------------------------------------------------


async def test_an_answer_over_the_packet_limit_is_a_413() -> None:
    async with s_server() as running, running.connect() as client:
        answer = await client.request("s.big", {}, timeout=10)
        assert answer["code"] == 413
        assert await client.request("s.echo", {"still": "here"}, timeout=10) == {"still": "here"}
        assert running.server.statistics().error_responses.get(413) == 1


async def test_an_answer_too_large_frees_one_pending_slot_not_two() -> None:
    # max_pending_requests=2: a held Request and a 413 (its Response too large, answered with
    # an error) leave one unanswered; the next held Request fills the bound, so the echo behind
    # it waits until one is answered (the 413 used to free its slot twice: the echo went by)
    components, s, _ = s_components()
    async with open_test_server(components, Config(max_pending_requests=2)) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(
            request(1, "s.held", b"{}")
            + request(2, "s.big", b"{}")
            + request(3, "s.held", b"{}")
            + request(4, "s.echo", b'{"e": 4}')
        )
        with trio.fail_after(10):
            (too_large,) = await responses(raw, 1)
        assert (too_large.id, json.loads(too_large.body)["code"]) == (2, 413)
        with trio.move_on_after(1):  # nothing more may come while two are unanswered
            early = await raw.receive_response()
            pytest.fail(f"answered past max_pending_requests: {early}")
        await wait_until(lambda: len(s.deferred) == 2, timeout=10)
        s.deferred[0].respond({"held": 1})
        with trio.fail_after(10):
            answers = {m.id: json.loads(m.body) for m in await responses(raw, 2)}
        assert answers == {1: {"held": 1}, 4: {"e": 4}}
        s.deferred[1].respond({"held": 3})
        with trio.fail_after(10):
            (last,) = await responses(raw, 1)
        assert (last.id, json.loads(last.body)) == (3, {"held": 3})


async def test_each_unanswerable_value_gets_an_error_response(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trionano")
    async with s_server() as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(
            request(1, "s.big", b"{}") + request(2, "s.unserializable", b"{}") + request(3, "s.silent", b"{}")
        )
        with trio.fail_after(10):
            answers = {m.id: json.loads(m.body) for m in await responses(raw, 3)}
        assert answers[1]["code"] == 413
        assert answers[2]["code"] == 500
        assert answers[3]["code"] == 500
        assert any("s.silent" in record.getMessage() for record in caplog.records)  # the warning names the route


async def test_a_deferred_answer_arrives_and_nothing_else_does() -> None:
    async with s_server() as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(request(1, "s.later", b"{}") + request(2, "s.echo", b'{"n": 2}'))
        with trio.fail_after(10):
            answers = await responses(raw, 2)
        assert {m.id: json.loads(m.body) for m in answers} == {1: {"later": True}, 2: {"n": 2}}
        await raw.send(request(3, "s.echo", b'{"n": 3}'))
        with trio.fail_after(10):
            (last,) = await responses(raw, 1)
        assert last.id == 3  # no stray second answer to request 1 in between


async def test_the_client_times_out_a_request_with_no_answer() -> None:
    components, _, _ = s_components()
    server = Server(components)
    async with open_test_server(server) as running, running.connect() as client:
        with pytest.raises(TimeoutError):
            await client.request("slow.join", {}, timeout=0.05)
        assert await client.request("s.echo", {"ok": 1}, timeout=10) == {"ok": 1}


# -- 4. emoji from JS clients (CESU-8) ------------------------------------------------------

CESU8_BODY = bytes.fromhex("7b2263223a22eda0bdedb880227d")  # {"c":"<U+1F600 as two surrogates>"}


@pytest.mark.parametrize("use_orjson", [True, False], ids=["orjson", "stdlib"])
async def test_cesu8_text_from_js_clients_is_decoded(use_orjson: bool) -> None:
    config = Config(serializer=JSONSerializer(use_orjson=use_orjson))
    async with s_server(config) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(request(1, "s.echo", CESU8_BODY))
        with trio.fail_after(10):
            (answer,) = await responses(raw, 1)
        assert json.loads(answer.body) == {"c": "\U0001f600"}


async def test_cesu8_text_is_broadcast_to_everyone() -> None:
    async with s_server() as running, running.connect() as other, running.raw() as raw:
        await other.request("s.join", {}, timeout=10)
        await raw.handshake()
        await raw.send(request(1, "s.join", b"{}"))
        await raw.send(wire.encode_packet(wire.PacketType.DATA, wire.encode_message(wire.Notify("s.say", CESU8_BODY))))
        with trio.fail_after(10):
            assert await other.receive_push("onSay") == {"c": "\U0001f600"}


# -- 5. a closed session never enters application state ------------------------------------


async def test_a_session_that_left_never_joins_a_group() -> None:
    components, _, slow = s_components()
    slow.release = trio.Event()
    async with open_test_server(components) as running:
        async with running.raw() as raw:
            await raw.handshake()
            await raw.send(request(1, "slow.join", b"{}"))
            await wait_until(lambda: slow.started == 1)  # the handler waits
        await wait_until(lambda: running.server.statistics().sessions_closed == 1)  # the client left
        slow.release.set()  # the handler wakes, then binds and joins
        await wait_until(lambda: slow.finished == 1)
        assert slow.group.count() == 0
        with pytest.raises(Exception, match="member not found"):
            slow.group.member(7)
        assert slow.group.broadcast("onX", {}) == 0
        assert running.server.statistics().dropped_closed >= 0
        await bystander_is_served(running)


async def test_a_member_that_closes_leaves_lookups_and_broadcasts() -> None:
    components, s, _ = s_components()
    async with open_test_server(components) as running, running.connect() as stay:
        await stay.request("s.join", {}, timeout=10)
        async with running.connect() as leave:
            await leave.request("s.join", {}, timeout=10)
            assert s.group.count() == 2
        await wait_until(lambda: s.group.count() == 1)
        assert s.group.broadcast("onSay", {"x": 1}) == 1


# -- 6 and 7. WebSocket: bounded messages, a real remote address ----------------------------


async def test_websocket_pushes_stay_within_what_clients_accept() -> None:
    components, _, _ = s_components()
    server = Server(components)
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, WebSocketEndpoint("127.0.0.1"))
        async with open_websocket_client(f"ws://127.0.0.1:{port}/") as client:
            await client.notify("s.pads", {"n": 6})
            with trio.fail_after(10):
                got = [await client.receive_push("onPad") for _ in range(6)]
            assert [m["i"] for m in got] == list(range(6))
            assert await client.request("s.echo", {"open": True}, timeout=10) == {"open": True}
            (session,) = server.sessions.values()
            host, _, client_port = session.remote_address.rpartition(":")
            assert host == "127.0.0.1"
            assert client_port.isdigit()
        server.shutdown()


# -- 8. nothing bypasses the state machine --------------------------------------------------


async def test_a_push_before_the_handshake_completes_is_not_sent() -> None:
    pushed: list[bool] = []

    def validator(session: Session, handshake: wire.Handshake) -> None:
        pushed.append(session.push("onEarly", {"too": "early"}))

    components, _, _ = s_components()
    async with open_test_server(components, Config(handshake_validator=validator)) as running, running.raw() as raw:
        await raw.send(wire.encode_packet(wire.PacketType.HANDSHAKE, b"{}"))
        with trio.fail_after(10):
            first = await raw.receive_packet()
        assert first.type is wire.PacketType.HANDSHAKE  # the handshake response comes first
        assert pushed == [False]
        await raw.send(wire.encode_packet(wire.PacketType.HANDSHAKE_ACK) + request(1, "s.echo", b"{}"))
        with trio.fail_after(10):
            (answer,) = await responses(raw, 1)
        assert answer.id == 1


async def test_both_transports_serve_one_server_side_by_side() -> None:
    components, _, _ = s_components()
    server = Server(components)
    async with trio.open_nursery() as nursery:
        tcp, ws = await nursery.start(server.serve, TCPEndpoint("127.0.0.1"), WebSocketEndpoint("127.0.0.1"))
        async with open_websocket_client(f"ws://127.0.0.1:{ws}/") as client:
            answer: Any = await client.request("s.echo", {"ws": True}, timeout=10)
            assert answer == {"ws": True}
        assert tcp != ws
        server.shutdown()


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (HandlerError("not yours", code=403), 403, "not yours"),
        (HandlerError(404), 500, "404"),  # the code is keyword-only: an easy mistake
        (HandlerError(None), 500, "None"),
        (HandlerError("odd", code=math.nan), 500, "odd"),  # type: ignore[arg-type]
        (HandlerError("huge", code=1 << 40), 500, "huge"),
    ],
)
async def test_any_handler_error_is_answered(error: HandlerError, code: int, message: str) -> None:
    class Raises(Component):
        def fail(self, session: Session, msg: dict[str, Any]) -> None:
            raise error

    components = Components()
    components.register(Raises(), name="r")
    async with open_test_server(components) as running, running.connect() as client:
        assert await client.request("r.fail", {}, timeout=10) == {"code": code, "message": message}


@pytest.mark.parametrize(("value", "code"), [({"b": "x" * 70_000}, 413), ({"t": {1, 2}}, 500)])
async def test_a_deferred_answer_that_cannot_be_sent_is_answered_an_error(value: object, code: int) -> None:
    raised: list[BaseException] = []

    class Later(Component):
        def ask(self, session: Session, msg: dict[str, Any]) -> None:
            answer = session.defer()

            def respond() -> None:
                try:
                    answer.respond(value)
                except Exception as exc:
                    raised.append(exc)

            self.server.scheduler.after(0.01, respond)

    components = Components()
    components.register(Later(), name="later")
    async with open_test_server(components, Config(timer_precision=0.01)) as running, running.connect() as client:
        answer = await client.request("later.ask", {}, timeout=10)
        assert answer["code"] == code
    (exc,) = raised
    assert "later.ask" in " ".join(getattr(exc, "__notes__", []))


def test_a_deferred_error_code_must_be_an_int32() -> None:
    from trionano._session import Call, DeferredResponse

    with pytest.raises(ValueError, match="int32"):
        DeferredResponse(None, Call("r", 1)).error("x", code=math.inf)  # type: ignore[arg-type]


async def test_the_client_raises_error_responses_when_asked() -> None:
    from trionano import ResponseError

    async with s_server() as running, running.connect() as client:
        with pytest.raises(ResponseError) as error:
            await client.request("no.such", {}, check=True, timeout=10)
        assert error.value.code == 404
        assert "no.such" in error.value.message
        assert (await client.request("no.such", {}, timeout=10))["code"] == 404  # returned by default
        client.check = True
        assert await client.request("s.echo", {"code": 0, "message": "data"}, timeout=10) == {
            "code": 0,
            "message": "data",
        }  # code 0 is data, not an error
        with pytest.raises(ResponseError, match="error 413"):
            await client.request("s.big", {}, timeout=10)


async def test_the_client_sends_attrs_and_dataclass_values() -> None:
    from tests.runtime.apps import Note, Point, echo_components

    async with open_test_server(echo_components()) as running, running.connect() as client:
        assert await client.request("echo.point", Point(1, 2), timeout=10) == {"x": 2, "y": 1}
        assert await client.request("echo.note", Note("hi"), timeout=10) == {"text": "HI"}
