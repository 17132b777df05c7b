"""Faults found in the push API, each kept as a test of its kind: text that cannot be UTF-8
(refused at the origin, never ending a sender), HTTP/2 answered early (never ending the
node), a push that reaches no gate (503, not success), slow bodies (408) and too many requests
at once (503)."""

from __future__ import annotations

import functools
import json
from contextlib import AsyncExitStack
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
import pytest
import trio
import trio.testing

from trionano import Components, Config, SerializeError, TCPEndpoint
from trionano.cluster import Audience, Bridge, ClusterConfig, Node, run
from trionano.cluster.push_api import PushAPI, serve_push_api

from .test_call import address
from .test_push import clients, gate
from .test_push_api import Recording

SURROGATE = "\ud800"


def test_text_that_cannot_be_utf8_is_refused_at_the_origin_and_never_ends_a_sender() -> None:
    """The attacker's input: ``{"route": "\\ud800", "message": 1, "group": "room"}`` (and the
    same in ``group``) was answered 202 and then ended the node from its gate link."""
    master_address = address()
    logic = Node(Components(), ClusterConfig(service_address=master_address, is_master=True), Config(heartbeat=0))
    gate_a, gate_b = gate(master_address, 2), gate(master_address, 3)
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            await nursery.start(functools.partial(logic.run, bridge))
            (port_a,) = await nursery.start(functools.partial(gate_a.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            (port_b,) = await nursery.start(functools.partial(gate_b.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            on_a = await clients(port_a, [1], stack)
            on_b = await clients(port_b, [2], stack)
            stop = trio.Event()
            api = await nursery.start(lambda task_status: serve_push_api(logic, shutdown=stop, task_status=task_status))
            url = f"http://127.0.0.1:{api}/v1/push"
            statuses = []
            with trio.fail_after(30):
                async with httpx.AsyncClient() as http:
                    for body in (
                        '{"route":"\\ud800","message":1,"group":"room"}',
                        '{"route":"onComment","message":1,"group":"\\ud800"}',
                        '{"route":"onComment","message":"\\udfff","group":"room"}',
                        '{"route":"onComment","message":{"\\ud800":1},"everyone":true}',
                        '{"route":"a\\udc80b","message":1,"uids":[1,2]}',
                    ):
                        response = await http.post(url, content=body, headers={"content-type": "application/json"})
                        statuses.append((response.status_code, response.json()["error"][:6]))
                    # from Python: ValueError (route, group), SerializeError (message text)
                    with pytest.raises(ValueError, match="UTF-8"):
                        logic.push(SURROGATE, 1, Audience.all())
                    with pytest.raises(ValueError, match="UTF-8"):
                        Audience.of_group(f"room{SURROGATE}")
                    with pytest.raises(ValueError, match="UTF-8"):
                        logic.group(SURROGATE)
                    with pytest.raises(SerializeError):
                        logic.push("onX", {"text": SURROGATE}, Audience.all())
                    # an item is encoded once, at the origin: one that cannot be is refused
                    # there, before any sender holds it; the link goes on with the others
                    link = logic._push._link(gate_a.address)  # the sender under test
                    assert link is not None
                    assert link.put(Audience.of_group("room").encode("onComment", b'"before"'))
                    with pytest.raises(UnicodeEncodeError):
                        Audience.of_group("room").encode(SURROGATE, b"1")
                    assert link.put(Audience.of_group("room").encode("onComment", b'"after"'))
                    assert await on_a[0].receive_push("onComment") == "before"
                    assert await on_a[0].receive_push("onComment") == "after"
                    seen["failed"] = logic.push_statistics().failed
                    response = await http.post(url, json={"route": "onComment", "message": "ok", "group": "room"})
                    assert (response.status_code, response.json()) == (202, {"gates": 2})
                    for client in on_a + on_b:
                        assert await client.receive_push("onComment") == "ok"
            seen["statuses"] = statuses
            api = logic.push_statistics()
            seen["api"] = (api.api_accepted, api.api_refused, api.api_unreached)
            stop.set()
            for node in (gate_a, gate_b, logic):
                node.server.shutdown()

    run(main)
    assert seen["statuses"] == [
        (400, "route:"),
        (400, "group:"),
        (400, "messag"),
        (400, "messag"),
        (400, "route:"),
    ]
    assert seen["failed"] == 0
    assert seen["api"] == (1, 5, 0)  # the push API's answers, counted on the node


async def h2_post(port: int, body: bytes, *, after_answer: int) -> int | None:
    """One POST over HTTP/2 with prior knowledge (h2c); once answered, up to ``after_answer``
    more bytes of the body are sent (the late DATA frames). The status, or None."""
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            break
        except OSError:  # restarting after Hypercorn failed
            await trio.sleep(0.1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    headers = [
        (":method", "POST"),
        (":path", "/v1/push"),
        (":scheme", "http"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/json"),
    ]
    conn.send_headers(sid, headers)
    sent, status, late = 0, None, 0
    async with stream:
        try:
            while True:
                while sent < len(body) and (status is None or late < after_answer):
                    size = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(body) - sent)
                    if size <= 0:
                        break
                    try:
                        conn.send_data(sid, body[sent : sent + size], end_stream=sent + size == len(body))
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        sent = len(body)
                        break
                    sent += size
                    if status is not None:
                        late += size
                await stream.send_all(conn.data_to_send())
                if status is not None and (sent >= len(body) or late >= after_answer):
                    return status
                data = await stream.receive_some(65536)
                if not data:
                    return status
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = int(dict(event.headers)[b":status"])
                await stream.send_all(conn.data_to_send())
        except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.ProtocolError):
            return status


async def test_http2_answered_early_never_ends_the_server() -> None:
    """The attacker's input: an h2c POST of a 200 KB body without the token (401) or over
    ``max_body`` (413); Hypercorn 0.18 raised KeyError on the late DATA frames
    (pgjones/hypercorn#329). Bodies beyond what the app drains still reach that race."""
    pusher = Recording(gates=1)
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        port = await nursery.start(
            lambda task_status: serve_push_api(pusher, token="t0k", shutdown=stop, task_status=task_status)
        )
        body = json.dumps({"route": "a", "group": "room", "message": "x" * 200_000}).encode()
        huge = b"x" * 1_500_000
        with trio.fail_after(120):
            for _ in range(12):
                assert await h2_post(port, body, after_answer=len(body)) in (401, None)
            for _ in range(4):
                await h2_post(port, huge, after_answer=300_000)
            # the server answers (restarted if Hypercorn failed meanwhile), the caller never saw it fail
            async with httpx.AsyncClient() as http:
                while True:
                    try:
                        response = await http.post(
                            f"http://127.0.0.1:{port}/v1/push",
                            json={"route": "onX", "message": 1, "everyone": True},
                            headers={"authorization": "Bearer t0k"},
                        )
                    except httpx.TransportError:
                        await trio.sleep(0.2)
                        continue
                    break
            assert (response.status_code, response.json()) == (202, {"gates": 1})
        stop.set()
    assert pusher.pushes == [("onX", 1, Audience.all())]


async def test_a_push_that_reaches_no_gate_is_answered_503_and_counted() -> None:
    pusher = Recording(gates=0)
    app = PushAPI(pusher, retry_after=2)
    sent: list[dict[str, Any]] = []
    body = json.dumps({"route": "onX", "message": 1, "group": "room"}).encode()
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/push", "headers": [(b"content-type", b"application/json")]}
    await app(scope, receive, send)
    start, answer = sent
    assert start["status"] == 503
    assert dict(start["headers"])[b"retry-after"] == b"2"
    assert "no gate" in json.loads(answer["body"])["error"]
    assert (app.accepted, app.refused, app.unreached) == (0, 0, 1)


async def test_too_many_requests_at_once_are_answered_503() -> None:
    app = PushAPI(Recording(), max_requests=1)
    scope = {"type": "http", "method": "POST", "path": "/v1/push", "headers": [(b"content-type", b"application/json")]}
    hold = trio.Event()
    statuses: list[int] = []

    async def slow_receive() -> dict[str, Any]:
        await hold.wait()
        return {"type": "http.request", "body": b'{"route":"a","message":1,"everyone":true}', "more_body": False}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, slow_receive, send)
        await trio.testing.wait_all_tasks_blocked()
        await app(scope, receive, send)
        hold.set()
    assert statuses == [503, 202]


async def test_a_slow_body_is_answered_408() -> None:
    """The attacker trickled a body at 1 byte / 2 s on 1,500 connections: none was ever closed."""
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        port = await nursery.start(
            lambda task_status: serve_push_api(Recording(), body_timeout=1.0, shutdown=stop, task_status=task_status)
        )
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        answer = b""
        with trio.fail_after(60):
            async with stream:
                await stream.send_all(
                    b"POST /v1/push HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                )

                async def trickle() -> None:
                    try:
                        while True:
                            await stream.send_all(b" ")
                            await trio.sleep(0.2)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

                async with trio.open_nursery() as inner:
                    inner.start_soon(trickle)
                    while b"\r\n\r\n" not in answer:
                        data = await stream.receive_some(4096)
                        if not data:
                            break
                        answer += data
                    inner.cancel_scope.cancel()
        stop.set()
    assert answer.startswith(b"HTTP/1.1 408")
