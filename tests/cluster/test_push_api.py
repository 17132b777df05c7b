"""The HTTP push API's ASGI application, request by request (its validation, its answers), and
served by Hypercorn's Trio worker on loopback (hostile HTTP never reaches it or stops it)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trionano import MessageTooLarge, SerializeError
from trionano.cluster import Audience
from trionano.cluster.push_api import MAX_BODY, BadRequest, PushAPI, parse_push, serve_push_api

JSON = [(b"content-type", b"application/json")]


@attrs.define
class Recording:
    """A pusher that keeps what it is given (and raises ``fail`` when set)."""

    pushes: list[tuple[str, object, Audience]] = attrs.Factory(list)
    gates: int = 2
    fail: Exception | None = None

    def push(self, route: str, value: object, audience: Audience) -> int:
        if self.fail is not None:
            raise self.fail
        self.pushes.append((route, value, audience))
        return self.gates


async def call(
    app: PushAPI,
    body: bytes | list[bytes] = b"",
    *,
    method: str = "POST",
    path: str = "/v1/push",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[bytes, bytes], Any]:
    """One request straight into the ASGI app: (status, headers, decoded JSON body)."""
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": JSON if headers is None else headers}
    await app(scope, receiving(body), send)
    start, answer = sent
    assert start["type"] == "http.response.start"
    assert answer["type"] == "http.response.body"
    return start["status"], dict(start["headers"]), json.loads(answer["body"])


def receiving(body: bytes | list[bytes]) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` giving ``body`` (in those chunks), then ``http.disconnect``."""
    chunks = [body] if isinstance(body, bytes) else body
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    return receive


#: a push request's scope (POST /v1/push, JSON)
PUSH_SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/push", "headers": JSON}


def doc(**fields: object) -> bytes:
    return json.dumps(fields).encode()


async def test_a_push_to_each_audience_is_accepted_with_the_gates_reached() -> None:
    pusher = Recording()
    app = PushAPI(pusher)
    message = {"name": "ops", "text": "héllo ✓"}
    for audience_field, audience in (
        ({"group": "room"}, Audience.of_group("room")),
        ({"uids": [7, 9, 7]}, Audience.of_uids([7, 9])),
        ({"everyone": True}, Audience.all()),
    ):
        status, headers, answer = await call(app, doc(route="onComment", message=message, **audience_field))
        assert (status, answer) == (202, {"gates": 2})
        assert headers[b"content-type"] == b"application/json"
        assert pusher.pushes.pop() == ("onComment", message, audience)
    assert app.accepted == 3


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "malformed JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"route": "a", "message": NaN, "group": "g"}', "malformed JSON"),
        (b"[" * 30_000 + b"]" * 30_000, "malformed JSON"),
        (doc(message=1, group="g"), "route: a string is required"),
        (doc(route=5, message=1, group="g"), "route: a string is required"),
        (doc(route="", message=1, group="g"), "route: a route is 1 to 255"),
        (doc(route="r" * 256, message=1, group="g"), "route: a route is 1 to 255"),
        (doc(route="onX", group="g"), "message: required"),
        (doc(route="onX", message=1), "exactly one audience"),
        (doc(route="onX", message=1, group="g", everyone=True), "exactly one audience"),
        (doc(route="onX", message=1, uids=[]), "uids: a list of 1 to 10000"),
        (doc(route="onX", message=1, uids="7"), "uids: a list"),
        (doc(route="onX", message=1, uids=[1, True]), "uids: each is an integer"),
        (doc(route="onX", message=1, uids=[0]), "uids: each is an integer"),
        (doc(route="onX", message=1, uids=[1 << 63]), "uids: each is an integer"),
        (doc(route="onX", message=1, uids=[1.5]), "uids: each is an integer"),
        (doc(route="onX", message=1, uids=list(range(1, 10_002))), "uids: a list of 1 to 10000"),
        (doc(route="onX", message=1, group=""), "group: a name of 1 to 255"),
        (doc(route="onX", message=1, group=["g"]), "group: a name"),
        (doc(route="onX", message=1, everyone=False), "everyone: true is the only value"),
        (doc(route="onX", message=1, everyone=1), "everyone: true is the only value"),
    ],
)
async def test_bad_bodies_are_answered_400_with_the_reason(body: bytes, reason: str) -> None:
    pusher = Recording()
    app = PushAPI(pusher)
    status, _, answer = await call(app, body)
    assert status == 400
    assert reason in answer["error"]
    assert pusher.pushes == []
    assert app.refused == 1


async def test_path_method_content_type_and_size_are_checked_in_that_order() -> None:
    pusher = Recording()
    app = PushAPI(pusher, max_body=100)
    good = doc(route="onX", message=1, group="g")
    status, _, answer = await call(app, good, path="/v1/pushes")
    assert (status, answer["error"]) == (404, "not found: the push API is POST /v1/push")
    status, headers, _ = await call(app, good, method="GET")
    assert (status, headers[b"allow"]) == (405, b"POST")
    status, _, _ = await call(app, good, headers=[(b"content-type", b"text/plain")])
    assert status == 415
    status, _, _ = await call(app, good, headers=[])
    assert status == 415
    for content_type in (b"application/json; charset=utf-8", b"Application/JSON", b'application/json;charset="UTF8"'):
        status, _, _ = await call(app, good, headers=[(b"content-type", content_type)])
        assert status == 202
    # JSON is UTF-8 (RFC 8259): a body declared in another charset is refused, not misread
    refused = (b"application/json; charset=latin-1", b"application/json; charset=utf-16", b"application/jsonx")
    for content_type in refused:
        status, _, answer = await call(app, good, headers=[(b"content-type", content_type)])
        assert (status, answer["error"]) == (415, "the body must be application/json (UTF-8)")
    # over the limit: by its declared length, or (chunked, no length) as it arrives
    status, _, answer = await call(app, good, headers=[*JSON, (b"content-length", b"101")])
    assert (status, answer["error"]) == (413, "the body is over 100 bytes")
    status, _, _ = await call(app, [b"{" + b" " * 60, b" " * 60 + b"}"])
    assert status == 413
    assert len(pusher.pushes) == 3  # the three accepted content types
    assert PushAPI(pusher).max_body == MAX_BODY == 64 * 1024


async def test_a_bearer_token_is_required_when_configured() -> None:
    pusher = Recording()
    app = PushAPI(pusher, token="s3cret-token")
    good = doc(route="onX", message=1, group="g")
    for authorization in (None, b"Bearer wrong", b"Bearer s3cret-toke", b"Basic s3cret-token", b"s3cret-token"):
        headers = JSON if authorization is None else [*JSON, (b"authorization", authorization)]
        status, answer_headers, answer = await call(app, good, headers=headers)
        assert (status, answer_headers[b"www-authenticate"]) == (401, b"Bearer")
        assert answer == {"error": "a valid bearer token is required"}
    for authorization in (b"Bearer s3cret-token", b"bearer s3cret-token"):
        status, _, _ = await call(app, good, headers=[*JSON, (b"authorization", authorization)])
        assert status == 202
    assert len(pusher.pushes) == 2
    with pytest.raises(ValueError, match="printable ASCII"):
        PushAPI(pusher, token="two words")


async def test_what_the_pusher_raises_is_answered_never_raised() -> None:
    pusher = Recording()
    app = PushAPI(pusher)
    good = doc(route="onX", message=1, group="g")
    for error, status in (
        (SerializeError("no JSON for this"), 400),
        (MessageTooLarge(70_000, 65_536), 413),
        (ValueError("a route is 1 to 255 UTF-8 bytes"), 400),
        (RuntimeError("a bug"), 500),
    ):
        pusher.fail = error
        answered, _, answer = await call(app, good)
        assert answered == status
        assert answer["error"]
    assert app.refused == 4


async def test_the_lifespan_protocol_is_answered() -> None:
    app = PushAPI(Recording())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> Any:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["route", "message", "uids", "group", "everyone", "x"]), inner)
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_any_body_parses_or_is_refused_with_400(body: bytes) -> None:
    try:
        route, _, audience = parse_push(body)
    except BadRequest as exc:
        status = exc.status
    else:
        status = 202
        assert 1 <= len(route.encode("utf-8", "surrogatepass")) <= 255
        assert isinstance(audience, Audience)
    assert status in (202, 400)


async def test_served_by_hypercorn_hostile_http_never_stops_it() -> None:
    pusher = Recording(gates=1)
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        port = await nursery.start(lambda task_status: serve_push_api(pusher, shutdown=stop, task_status=task_status))
        url = f"http://127.0.0.1:{port}/v1/push"
        hostile = [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
            b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"POST /v1/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 100_000 + b"\r\n\r\n",
            b"\r\n\r\n\r\n",
        ]
        with trio.fail_after(30):
            for data in hostile:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    try:
                        await stream.send_all(data)
                        await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        pass
            async with httpx.AsyncClient() as http:
                response = await http.post(url, json={"route": "onX", "message": {"a": 1}, "everyone": True})
                assert (response.status_code, response.json()) == (202, {"gates": 1})
                response = await http.post(
                    url, content=b"x" * (MAX_BODY + 1), headers={"content-type": "application/json"}
                )
                assert response.status_code == 413
        stop.set()
    assert pusher.pushes == [("onX", {"a": 1}, Audience.all())]


async def test_a_push_made_is_answered_even_if_the_request_is_cancelled_meanwhile() -> None:
    """The server stopping cancels the requests still running past its grace: one cancelled
    after its push was made, while its answer was being written, went unanswered (the caller
    could not tell it had been pushed)."""
    pushed = trio.Event()

    class Signalling(Recording):
        def push(self, route: str, value: object, audience: Audience) -> int:
            pushed.set()
            return super().push(route, value, audience)

    app = PushAPI(Signalling())
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        await trio.sleep(0.01)  # a write that waits for the socket
        sent.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, PUSH_SCOPE, receiving(doc(route="onX", message=1, everyone=True)), send)
        await pushed.wait()
        nursery.cancel_scope.cancel()  # the server's grace is over
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 202


async def test_a_push_answer_is_not_cut_short_when_the_process_stalls(mock_clock: trio.testing.MockClock) -> None:
    """attack7b freeze_api.sh: the push API's process stopped (SIGSTOP) 1-11 s under 20 posters:
    1-2 pushes made were answered with the head and no body, and 2 requests never at all, their
    connections held open: the answer was written under a deadline of ours (1 s) that the stall
    passed, and its cancellation cut Hypercorn's writing short. The answer to a push made has
    no deadline of ours now. The stall is Trio's mock clock jumping 5 s between the answer's
    head and body."""
    app = PushAPI(Recording())
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        await trio.lowlevel.checkpoint()
        sent.append(message)
        if message["type"] == "http.response.start":
            mock_clock.jump(5)

    await app(PUSH_SCOPE, receiving(doc(route="onX", message=1, everyone=True)), send)
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
