"""The HTTP push API: business systems push to clients over plain HTTP/1.1 (issue 13; the
design of go-push and goim's ``/push`` endpoints, not part of nano).

::

    POST /v1/push
    Authorization: Bearer <token>            (when the node was given a token)
    Content-Type: application/json

    {"route": "onComment", "message": {...any JSON...}, "group": "room"}
    {"route": "onNotice",  "message": "hi",             "uids": [7, 9]}
    {"route": "onNotice",  "message": {"a": 1},         "everyone": true}

    202 {"gates": 2}                 gates the push was delivered or queued for
    4xx {"error": "<reason>"}        nothing was pushed

Exactly one audience: ``uids`` (1 to 10,000 integers from 1 to 2**63-1: the sessions bound to
them, on any gate), ``group`` (a cluster-wide group's name, 1 to 255 characters) or
``everyone`` (``true``: every client session). ``route`` is 1 to 255 UTF-8 bytes; ``message``
any JSON value, serialized once by the node's serializer. Errors: 400 malformed JSON, a
missing field, a wrong type or value; 401 no or a wrong bearer token (compared in constant
time); 404 another path; 405 another method; 413 a body over ``max_body`` (64 KiB by
default) or a message over the node's packet limit; 415 a content type other than
``application/json``.

:class:`PushAPI` is the ASGI application; :func:`serve_push_api` serves it with Hypercorn's
Trio worker (``pip install trionano[push]``). Hypercorn parses HTTP (malformed requests get
its 400 and never reach the app); an error in the app is logged and answered 500, never
raised into the node.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol, cast

import trio

from .._errors import MessageTooLarge, SerializeError
from .._log import RateLimitedLog, client_text
from ._push import MAX_UID, Audience, check_route

__all__ = [
    "MAX_BODY",
    "MAX_GROUP_NAME",
    "MAX_UIDS",
    "PATH",
    "BadRequest",
    "PushAPI",
    "Pusher",
    "parse_push",
    "serve_push_api",
]

_logger = logging.getLogger("trionano.cluster.push_api")

#: The one path served.
PATH: Final = "/v1/push"
#: The default limit of a request body, in bytes.
MAX_BODY: Final = 64 * 1024
#: The most uids one request may name.
MAX_UIDS: Final = 10_000
#: The longest group name, in characters.
MAX_GROUP_NAME: Final = 255

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Pusher(Protocol):
    """What the API pushes through: :meth:`trionano.cluster.Node.push`."""

    def push(self, route: str, value: object, audience: Audience) -> int:
        """Push ``value`` on ``route`` to ``audience``; how many gates it reached. Raises
        ValueError, SerializeError, MessageTooLarge (answered 400, 400, 413)."""
        ...


class BadRequest(Exception):
    """A request answered with ``status`` (a 4xx) and ``{"error": reason}``, plus ``headers``
    (``Allow`` for a 405, ``WWW-Authenticate`` for a 401); nothing was pushed."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_push(body: bytes) -> tuple[str, object, Audience]:
    """The route, message and audience of a request body. Raises BadRequest (400) naming
    what is wrong."""
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BadRequest(400, "the body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise BadRequest(400, f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest(400, "the body is not a JSON object")
    route = document.get("route")
    if not isinstance(route, str):
        raise BadRequest(400, "route: a string is required")
    try:
        check_route(route)
    except ValueError as exc:
        raise BadRequest(400, f"route: {exc}") from None
    if "message" not in document:
        raise BadRequest(400, "message: required (any JSON value)")
    named = [key for key in ("uids", "group", "everyone") if key in document]
    if len(named) != 1:
        raise BadRequest(400, "exactly one audience is required: uids, group or everyone")
    return route, document["message"], _audience(named[0], document[named[0]])


def _audience(key: str, value: object) -> Audience:
    if key == "uids":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_UIDS:
            raise BadRequest(400, f"uids: a list of 1 to {MAX_UIDS} integers is required")
        if not all(type(uid) is int and 1 <= uid <= MAX_UID for uid in value):
            raise BadRequest(400, "uids: each is an integer from 1 to 2**63-1")
        return Audience.of_uids(value)
    if key == "group":
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_GROUP_NAME:
            raise BadRequest(400, f"group: a name of 1 to {MAX_GROUP_NAME} characters is required")
        return Audience.of_group(value)
    if value is not True:
        raise BadRequest(400, "everyone: true is the only value")
    return Audience.all()


class PushAPI:
    """The ASGI application of the push API (see the module). ``pusher`` receives the pushes;
    ``token``, when given, is required as ``Authorization: Bearer <token>``; ``max_body``
    bounds a request body in bytes. Owned by whoever serves it; it keeps only counters."""

    def __init__(self, pusher: Pusher, *, token: str | None = None, max_body: int = MAX_BODY) -> None:
        if max_body < 1:
            raise ValueError("max_body must be at least 1")
        self._pusher = pusher
        if token is not None and (not token or not token.isascii() or not token.isprintable() or " " in token):
            raise ValueError("a bearer token is printable ASCII without spaces")
        self._token = None if token is None else token.encode()
        self.max_body: Final = max_body
        self._log = RateLimitedLog(_logger)
        self.accepted = 0
        """Requests answered 202."""
        self.refused = 0
        """Requests answered 4xx or 500."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # hypercorn answers WebSocket upgrades itself when the app does not accept
        try:
            gates = await self._handle(scope, receive)
        except BadRequest as exc:
            self.refused += 1
            await _answer(send, exc.status, {"error": exc.reason}, exc.headers)
            return
        except Exception:
            self.refused += 1
            self._log.exception("push api", "the push API failed on a request")
            await _answer(send, 500, {"error": "internal error"})
            return
        self.accepted += 1
        await _answer(send, 202, {"gates": gates})

    async def _handle(self, scope: Scope, receive: Receive) -> int:
        if scope.get("path") != PATH:
            raise BadRequest(404, f"not found: the push API is POST {PATH}")
        if scope.get("method") != "POST":
            raise BadRequest(405, f"method not allowed: POST {PATH}", ((b"allow", b"POST"),))
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(bytes(name).lower(), bytes(value))
        if self._token is not None and not self._authorized(headers.get(b"authorization", b"")):
            raise BadRequest(401, "a valid bearer token is required", ((b"www-authenticate", b"Bearer"),))
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            raise BadRequest(415, "the body must be application/json")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise BadRequest(413, f"the body is over {self.max_body} bytes")
        body = await self._body(receive)
        route, message, audience = parse_push(body)
        try:
            return self._pusher.push(route, message, audience)
        except MessageTooLarge as exc:
            raise BadRequest(413, f"message: {exc}") from None
        except SerializeError as exc:
            raise BadRequest(400, f"message: cannot be serialized: {client_text(str(exc))}") from None
        except ValueError as exc:
            raise BadRequest(400, str(exc)) from None

    def _authorized(self, header: bytes) -> bool:
        """``Bearer <token>`` (the scheme in any case, RFC 9110 §11.1), the token compared in
        constant time."""
        assert self._token is not None
        scheme, _, credentials = header.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token)

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "the client went away")
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_body:
                raise BadRequest(413, f"the body is over {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Send, status: int, document: object, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def serve_push_api(
    pusher: Pusher,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    max_body: int = MAX_BODY,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve :class:`PushAPI` for ``pusher`` on ``host:port`` with Hypercorn's Trio worker
    until ``shutdown`` is set (a graceful stop: requests in flight get 1 s) or the task is
    cancelled. ``task_status.started`` gets the bound port (``port=0`` picks one). Raises
    ImportError without Hypercorn (``pip install trionano[push]``), OSError when the port
    cannot be bound."""
    try:
        from hypercorn.config import Config as HypercornConfig
        from hypercorn.trio import serve
        from hypercorn.typing import ASGIFramework
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the push API needs Hypercorn: pip install trionano[push]") from exc
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = 1.0
    config.accesslog = None
    app = PushAPI(pusher, token=token, max_body=max_body)
    stop = shutdown if shutdown is not None else trio.Event()

    async def started(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(cast(ASGIFramework, app), config, shutdown_trigger=stop.wait, task_status=task_status, mode="asgi")

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(started)
        bound = int(binds[0].rpartition(":")[2])
        _logger.info("push API on http://%s:%d%s", host, bound, PATH)
        task_status.started(bound)
