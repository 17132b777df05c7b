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
    503 {"error": "<reason>"}        nothing was delivered: retry after Retry-After seconds

Exactly one audience: ``uids`` (1 to 10,000 integers from 1 to 2**63-1: the sessions bound to
them, on any gate; the body's ``max_body`` bounds them too: 64 KiB holds 10,000 uids of up to
5 digits, about 3,900 of 14), ``group`` (a cluster-wide group's name, 1 to 255 characters) or
``everyone`` (``true``: every client session). ``route`` is 1 to 255 UTF-8 bytes; ``message``
any JSON value, serialized once by the node's serializer. Text that cannot be UTF-8 (a lone
surrogate, ``"\\ud800"``) in the route, the group or the message is refused. Errors: 400
malformed JSON, a missing field, a wrong type or value; 401 no or a wrong bearer token
(compared in constant time); 404 another path; 405 another method (a WebSocket upgrade included); 408 a body slower than
``body_timeout``, or silent for Hypercorn's ``read_timeout`` (HTTP/1.1); 413 a body over
``max_body`` (64 KiB by default) or a message over the node's packet limit; 415 a content type
other than ``application/json`` (a ``charset`` parameter, if any, must be UTF-8: RFC 8259
allows no other); 400 a body that came in over ``max_pieces`` pieces (1-byte chunks cost the
server per piece); 503 (with ``Retry-After``) no gate took the push (none known yet, as after
the node restarted, or all their queues full), over ``max_requests`` requests reading their
body at once (``max_requests_per_host`` from one peer), or over ``max_waiting`` requests whose
body has come waiting for their turn. At those two bounds on bodies being read, the oldest of
them (of that peer, or of all) that has been at it :data:`~trionano._admission.HANDSHAKE_GRACE`
(1 s) is answered 408 and makes room before a newcomer is refused 503, as the WebSocket
upgrades do: slow or held bodies cannot lock every other pusher out.

Requests are parsed and pushed one at a time, in the order their bodies came, each in a
scheduler step of its own (a 10,000-uid push costs a few milliseconds of the node's one
thread): what else the node serves (the requests its gates forward, their answers) runs
between two pushes, never behind a crowd of them. When pushes come faster than the node
parses them, the wait grows to ``max_waiting`` requests and the rest are answered 503 with
``Retry-After``: the pusher is held back, not the node's clients.

What the headers alone refuse (404, 405, 401, 415, 413 by Content-Length, in that order) is
refused before the request takes one of the ``max_requests`` slots or any of its body is read,
and so is a request over ``max_requests``. Over HTTP/1.1 a refusal is answered at once with
``Connection: close`` and the connection closed (the rest of the body is never read). Over
HTTP/2 (which Hypercorn also speaks) a refused stream's DATA is read and discarded until the
stream ends (at most DRAIN_LIMIT bytes, ``max_pieces`` pieces, ``body_timeout``) and then
answered: Hypercorn 0.18 fails on DATA for a stream it has answered (pgjones/hypercorn#329),
which closes that client's connection, and only that one (see :func:`serve_push_api`).

A request whose connection ended before its body came (the client closed or reset it) is not
answered, as no answer could reach it: it is counted ``gone``, never as a refusal.

What it guarantees: 202 is queued, not delivered (a slow or gone gate drops, counted in
:meth:`Node.push_statistics`); at most once, no persistence; 503 is nothing delivered.

:class:`PushAPI` is the ASGI application; :func:`serve_push_api` serves it with Hypercorn's
Trio connection server (``pip install trionano[push]``). Hypercorn parses HTTP (malformed
requests get its 400 and never reach the app); an error in the app is logged and answered 500,
and a failure of Hypercorn itself on a connection closes that connection alone: neither is
ever raised into the node, and no client can stop the server for the others.
"""

from __future__ import annotations

import email.message
import functools
import hmac
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol, cast

import trio

from .._admission import HANDSHAKE_GRACE, Handshaking
from .._errors import MessageTooLarge, SerializeError
from .._listen import peer_host
from .._log import RateLimitedLog, client_text, flush_periodically
from ._push import Audience, check_group, check_route, valid_uids

__all__ = [
    "BACKLOG",
    "BODY_TIMEOUT",
    "DRAIN_LIMIT",
    "KEEP_ALIVE_TIMEOUT",
    "MAX_BODY",
    "MAX_GROUP_NAME",
    "MAX_PIECES",
    "MAX_REQUESTS",
    "MAX_REQUESTS_PER_HOST",
    "MAX_UIDS",
    "MAX_WAITING",
    "PATH",
    "READ_TIMEOUT",
    "RETRY_AFTER",
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
#: The default bound of reading one request's body, in seconds (then 408).
BODY_TIMEOUT: Final = 10.0
#: The default bound of requests reading their body at once (see :class:`PushAPI`).
MAX_REQUESTS: Final = 1024
#: The default bound of those from one peer (a host; an IPv6 /64).
MAX_REQUESTS_PER_HOST: Final = 128
#: The default bound of requests whose body has come, waiting for their turn to be parsed and
#: pushed (one at a time; more are answered 503).
MAX_WAITING: Final = 64
#: The default bound of the pieces a body may come in (HTTP/1.1 chunks, HTTP/2 DATA frames or
#: reads of a body with a Content-Length; more are answered 400).
MAX_PIECES: Final = 1024
#: The most bytes (and at most ``max_pieces`` pieces) of a refused HTTP/2 request's body read and
#: discarded before answering.
DRAIN_LIMIT: Final = 1024 * 1024
#: The default ``Retry-After`` of a 503, in seconds.
RETRY_AFTER: Final = 1
#: The default Hypercorn ``read_timeout``: a connection silent this long is closed, in seconds
#: (an HTTP/1.1 request whose body is that silent is answered 408 first).
READ_TIMEOUT: Final = 10
#: The listening socket's backlog (Hypercorn's default is 100: a burst of connections beyond
#: it has some reset by the kernel, whoever they come from).
BACKLOG: Final = 1024
#: The default Hypercorn ``keep_alive_timeout``, in seconds.
KEEP_ALIVE_TIMEOUT: Final = 5.0
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
        if not valid_uids(value):  # on the list: a true or a 1.0 beside a 1 is refused, not merged
            raise BadRequest(400, "uids: each is an integer from 1 to 2**63-1")
        return Audience.of_uids(value)
    if key == "group":
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_GROUP_NAME:
            raise BadRequest(400, f"group: a name of 1 to {MAX_GROUP_NAME} characters is required")
        try:
            check_group(value)
        except ValueError as exc:
            raise BadRequest(400, f"group: {exc}") from None
        return Audience.of_group(value)
    if value is not True:
        raise BadRequest(400, "everyone: true is the only value")
    return Audience.all()


class PushAPI:
    """The ASGI application of the push API (see the module). ``pusher`` receives the pushes;
    ``token``, when given, is required as ``Authorization: Bearer <token>``; ``max_body``
    bounds a request body in bytes; ``on_answer`` is told each answer ("accepted", "refused",
    "unreached"; "gone" for a request whose connection ended before its body came, not
    answered; "broken" for a connection Hypercorn failed on: :meth:`Node.count_push_api`);
    ``body_timeout`` (seconds) bounds reading one request's body (answered 408 after it);
    ``max_requests`` bounds the requests reading their body at once, and
    ``max_requests_per_host`` (None: no bound) those of one peer (a host; an IPv6 /64): at a
    bound the oldest body read that has lasted a second is answered 408 to make room, else
    the newcomer is answered 503;
    ``max_pieces`` bounds the pieces a body may come in (more are answered 400);
    ``max_waiting`` bounds the requests whose body has come waiting for their turn to be
    parsed and pushed, one at a time (more are answered 503; 0: none waits);
    ``retry_after`` (whole seconds) is the ``Retry-After`` of a 503. Owned by whoever
    serves it; it keeps only counters.

    Refusals from the headers (and 503 for too many requests) take no slot and read no body
    (HTTP/1.1: answered at once, ``Connection: close``); over HTTP/2 a refused stream's DATA is
    drained first (see the module: pgjones/hypercorn#329). An answer that cannot be sent (the
    client is gone, or Hypercorn raced on closing the connection) is counted in ``unsent``
    and logged (rate-limited), never raised.

    Hypercorn reports a client that went away and its own ``read_timeout`` alike, as
    ``http.disconnect``; served by :func:`serve_push_api`, the app tells them apart from the
    connection itself: a client still connected whose body stopped is answered 408, one that
    closed or reset its connection is counted ``gone`` and not answered (under another ASGI
    server every ``http.disconnect`` before the body has come counts as ``gone``)."""

    def __init__(
        self,
        pusher: Pusher,
        *,
        token: str | None = None,
        max_body: int = MAX_BODY,
        body_timeout: float = BODY_TIMEOUT,
        max_requests: int = MAX_REQUESTS,
        max_requests_per_host: int | None = MAX_REQUESTS_PER_HOST,
        max_pieces: int = MAX_PIECES,
        max_waiting: int = MAX_WAITING,
        retry_after: int = RETRY_AFTER,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        if max_body < 1:
            raise ValueError("max_body must be at least 1")
        if max_requests_per_host is not None and max_requests_per_host < 1:
            raise ValueError("max_requests_per_host must be None or at least 1")
        if body_timeout <= 0 or max_requests < 1 or max_pieces < 1 or max_waiting < 0 or retry_after < 0:
            raise ValueError(
                "body_timeout > 0, max_requests >= 1, max_pieces >= 1, max_waiting >= 0 and retry_after >= 0"
                " are required"
            )
        self._pusher = pusher
        if token is not None and (not token or not token.isascii() or not token.isprintable() or " " in token):
            raise ValueError("a bearer token is printable ASCII without spaces")
        self._token = None if token is None else token.encode()
        self.max_body: Final = max_body
        self.body_timeout: Final = body_timeout
        self.max_requests: Final = max_requests
        self.max_requests_per_host: Final = max_requests_per_host
        # the requests reading their body (each its body read's cancel scope), by peer: at a
        # bound the oldest past HANDSHAKE_GRACE is evicted (answered 408) before a newcomer
        # is refused, so slow bodies cannot hold every slot (one caller starving the others)
        self._receiving: Handshaking[trio.CancelScope] = Handshaking(max_requests, max_requests_per_host)
        self.max_pieces: Final = max_pieces
        self.max_waiting: Final = max_waiting
        self.retry_after: Final = retry_after
        # one request parsed and pushed at a time, each in a scheduler step of its own: a turn
        # costs up to a few milliseconds (10,000 uids), and what else the node does (the
        # requests that gates forward to it) runs between turns rather than behind all of them
        self._turn = trio.StrictFIFOLock()
        self._log = RateLimitedLog(_logger)
        self._on_answer = on_answer
        self.accepted = 0
        """Requests answered 202."""
        self.refused = 0
        """Requests answered 4xx or 500 (nothing was pushed)."""
        self.unreached = 0
        """Requests answered 503: valid, but no gate took the push, or too many requests."""
        self.unsent = 0
        """Answers that could not be sent (the connection was gone)."""
        self.evicted = 0
        """Requests answered 408 before their body had come because newer ones needed their
        slot (``max_requests`` or ``max_requests_per_host`` reading at once; counted refused
        too)."""
        self.gone = 0
        """Requests not answered: their connection ended before their body came (the client
        went away), so no answer could reach them."""
        self.failed = 0
        """Connections Hypercorn failed on, each closed alone (:func:`serve_push_api` counts them
        with :meth:`count_broken`)."""

    @property
    def log(self) -> RateLimitedLog:
        """The app's rate-limited log (``trionano.cluster.push_api``). Whoever serves the app
        reports what it suppressed: :meth:`RateLimitedLog.flush_due` every second and
        :meth:`RateLimitedLog.flush` at the end, as :func:`serve_push_api` does (it logs
        Hypercorn's records there too)."""
        return self._log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await self._refuse_upgrade(scope, send)
            return
        if scope["type"] != "http":
            return
        reader = _Reader(receive)
        http2 = scope.get("http_version") == "2"
        try:
            self._check_head(scope)
        except BadRequest as exc:  # from the headers alone: no slot taken, no body read
            self._count("refused")
            await self._refuse(http2, reader, send, exc.status, {"error": exc.reason}, exc.headers)
            return
        client = scope.get("client")
        host = peer_host(f"{client[0]}:{client[1]}") if client else None
        now = trio.current_time()
        room = self._receiving.make_room(host, now, connections=0, max_connections=1)
        if room.refuse is not None:
            self._count("unreached")
            self._log.warning(
                "push api busy",
                "the push API is at %d bodies being read (or its peer's share): one answered 503",
                self.max_requests,
            )
            await self._refuse(http2, reader, send, 503, {"error": "too many requests at once"}, self._retry_after())
            return
        for victim in room.evict:  # bodies slower than HANDSHAKE_GRACE make room: 408
            self.evicted += 1
            victim.cancel()
        reading = trio.CancelScope()
        self._receiving.add(reading, host, now)
        try:
            await self._respond(http2, _transport(scope), reader, send, reading)
        finally:
            self._receiving.remove(reading)

    async def _respond(
        self, http2: bool, transport: _Transport | None, receive: _Reader, send: Send, reading: trio.CancelScope
    ) -> None:
        try:
            with trio.fail_after(self.body_timeout), reading:
                body = await self._body(receive)
            self._receiving.remove(reading)
            if reading.cancelled_caught:  # evicted: a newer request needed its slot
                self._count("refused")
                evicted = {"error": f"the body was slower than {HANDSHAKE_GRACE:g} s while the push API was full"}
                await self._send(send, 408, evicted, () if http2 else _CLOSE)
                return
        except trio.TooSlowError:
            self._count("refused")
            slow = {"error": f"the body took over {self.body_timeout:g} s"}
            await self._send(send, 408, slow, () if http2 else _CLOSE)
            return
        except _Disconnected:
            await self._disconnected(http2, transport, send)
            return
        except BadRequest as exc:
            self._count("refused")
            await self._refuse(http2, receive, send, exc.status, {"error": exc.reason}, exc.headers)
            return
        if self._turn.locked() and self._turn.statistics().tasks_waiting >= self.max_waiting:
            self._count("unreached")
            self._log.warning(
                "push api busy", "%d pushes wait for their turn: one answered 503 (the node is busy)", self.max_waiting
            )
            await self._send(send, 503, {"error": "the push API is busy: retry later"}, self._retry_after())
            return
        try:
            async with self._turn:
                if transport is not None and not transport.answerable:
                    self._count("gone")
                    self._log.info("push api gone", "a request came as its connection was closed: not pushed")
                    return
                gates = self._push(body)  # no checkpoint since the check: a push is answerable
        except BadRequest as exc:
            self._count("refused")
            await self._send(send, exc.status, {"error": exc.reason}, exc.headers)
            return
        except Exception:
            self._count("refused")
            self._log.exception("push api", "the push API failed on a request")
            await self._send(send, 500, {"error": "internal error"})
            return
        if gates == 0:
            self._count("unreached")
            self._log.warning("push unreached", "a push reached no gate (none known yet, or all full): answered 503")
            reason = "no gate took the push (none is known yet, or their queues are full): nothing was delivered"
            await self._send(send, 503, {"error": reason}, self._retry_after())
            return
        self._count("accepted")
        # a push made is answered: the server stopping (its requests cancelled past their grace)
        # does not cut the answer short (Hypercorn writes it shielded too, with no deadline: a
        # deadline of ours that passed while the process stalled cut answers after their head)
        with trio.CancelScope(shield=True):
            await self._send(send, 202, {"gates": gates})

    async def _refuse_upgrade(self, scope: Scope, send: Send) -> None:
        """A WebSocket upgrade (a GET): 404 for another path, 405 (``Allow: POST``) for the
        push API's, with the same JSON reason as any refusal, through the ASGI
        ``websocket.http.response`` extension (Hypercorn's); under a server without it, the
        upgrade is refused with ``websocket.close`` (403 there). Counted refused. (Returning
        without either made Hypercorn answer 500.)"""
        self._count("refused")
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if scope.get("path") != PATH:
            status, reason = 404, f"not found: the push API is POST {PATH}"
        else:
            status, reason = 405, f"method not allowed: the push API takes POST {PATH}"
            headers = ((b"allow", b"POST"),)
        try:
            if "websocket.http.response" in scope.get("extensions", {}):
                body = json.dumps({"error": reason}).encode()
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                            *headers,
                        ],
                    }
                )
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": 1008})
        except Exception as exc:  # the client is gone, or the server raced on closing
            self.unsent += 1
            self._log.info(
                "push api unsent", "an answer %d was not sent (%s): the connection is gone", status, type(exc).__name__
            )

    async def _disconnected(self, http2: bool, transport: _Transport | None, send: Send) -> None:
        """Hypercorn said ``http.disconnect`` before the body had all come. Over HTTP/1.1 on a
        connection the client has not ended and Hypercorn has not closed, that was
        Hypercorn's ``read_timeout`` (it reports a silent connection as gone and closes it
        once the request is answered): the client is there, its body is slow, so it is
        answered 408. Otherwise no answer can reach it (the client ended the connection or
        reset it, Hypercorn closed it, answering malformed HTTP with its own 400, or an
        HTTP/2 stream or connection ended): it is counted ``gone``, not answered."""
        if not http2 and transport is not None and transport.open:
            self._count("refused")
            slow = {"error": "the body stopped coming (nothing for the server's read_timeout)"}
            await self._send(send, 408, slow, _CLOSE)
            return
        self._count("gone")
        self._log.info("push api gone", "a request's connection ended before its body came: not answered")

    async def _refuse(
        self,
        http2: bool,
        receive: _Reader,
        send: Send,
        status: int,
        document: object,
        headers: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        """Answer a request refused before its body was read. HTTP/1.1: at once, with
        ``Connection: close`` (Hypercorn then closes the connection: the rest of the body is
        never read). HTTP/2: once the client ended the stream (its DATA is read and
        discarded, within ``body_timeout``): Hypercorn 0.18 fails on DATA for a stream it has
        answered (pgjones/hypercorn#329), which ends that connection (see serve_push_api)."""
        if http2:
            with trio.move_on_after(self.body_timeout):
                size = pieces = 0
                while not receive.done and size <= DRAIN_LIMIT and pieces <= self.max_pieces:
                    size += len(await receive.chunk())
                    pieces += 1
        else:
            headers = (*headers, *_CLOSE)
        await self._send(send, status, document, headers)

    async def _send(
        self, send: Send, status: int, document: object, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        """Answer; a failure to send (the client is gone, or Hypercorn's own race on closing
        connection, trio.BusyResourceError) is logged (rate-limited), never raised."""
        try:
            await _answer(send, status, document, headers)
        except Exception as exc:
            self.unsent += 1
            self._log.info(
                "push api unsent", "an answer %d was not sent (%s): the connection is gone", status, type(exc).__name__
            )

    def count_broken(self) -> None:
        """Count a connection Hypercorn failed on (closed alone): ``failed``, and ``on_answer``
        is told "broken"."""
        self.failed += 1
        if self._on_answer is not None:
            self._on_answer("broken")

    def _count(self, answer: str) -> None:
        if answer == "accepted":
            self.accepted += 1
        elif answer == "refused":
            self.refused += 1
        elif answer == "gone":
            self.gone += 1
        else:
            self.unreached += 1
        if self._on_answer is not None:
            self._on_answer(answer)

    def _retry_after(self) -> tuple[tuple[bytes, bytes], ...]:
        return ((b"retry-after", str(self.retry_after).encode()),)

    def _check_head(self, scope: Scope) -> None:
        """Raises BadRequest for what the request line and headers alone refuse, in this
        order: 404 path, 405 method, 401 token, 415 content type, 413 declared length."""
        if scope.get("path") != PATH:
            raise BadRequest(404, f"not found: the push API is POST {PATH}")
        if scope.get("method") != "POST":
            raise BadRequest(405, f"method not allowed: the push API takes POST {PATH}", ((b"allow", b"POST"),))
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(bytes(name).lower(), bytes(value))
        if self._token is not None and not self._authorized(headers.get(b"authorization", b"")):
            raise BadRequest(401, "a valid bearer token is required", ((b"www-authenticate", b"Bearer"),))
        if not _is_json(headers.get(b"content-type", b"")):
            raise BadRequest(415, "the body must be application/json (UTF-8)")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise BadRequest(413, f"the body is over {self.max_body} bytes")

    def _push(self, body: bytes) -> int:
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

    async def _body(self, receive: _Reader) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while not receive.done:
            chunk = await receive.chunk()
            if receive.gone:
                raise _Disconnected
            size += len(chunk)
            if size > self.max_body:
                raise BadRequest(413, f"the body is over {self.max_body} bytes")
            chunks.append(chunk)
            if len(chunks) > self.max_pieces:  # each piece costs Hypercorn and Trio a few microseconds
                raise BadRequest(400, f"the body came in over {self.max_pieces} pieces: send it in larger ones")
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


class _Reader:
    """One request's body, a chunk at a time; ``done`` once it has all come (or the client
    went away: ``gone``), after which nothing more is read."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.done = False
        self.gone = False

    async def chunk(self) -> bytes:
        message = await self._receive()
        if message["type"] != "http.request":
            self.done = self.gone = True
            return b""
        if not message.get("more_body", False):
            self.done = True
        return bytes(message.get("body", b""))


class _Disconnected(Exception):
    """Hypercorn said ``http.disconnect`` before the body had all come."""


#: The key of a connection's :class:`_Transport` in Hypercorn's per-connection ``state``
#: (copied into each request's ``scope["state"]``).
_TRANSPORT: Final = "trionano.push_api.transport"


class _Transport(trio.abc.HalfCloseableStream):
    """A client's connection as served to Hypercorn (:func:`serve_push_api`), telling the app
    whether the client is still there: ``ended`` once a read saw its end (EOF) or a read or
    write found it reset, ``closed`` once the server closed it. Hypercorn reports its own
    ``read_timeout`` to the app as ``http.disconnect``, as it does a client that went away:
    this tells them apart. No ``do_handshake``: Hypercorn takes it for a plain (not TLS)
    stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket
        self.ended = False
        self.reset = False
        self.closed = False

    @property
    def open(self) -> bool:
        """Whether the client has not ended the connection and the server has not closed it."""
        return not self.ended and not self.closed

    @property
    def answerable(self) -> bool:
        """Whether an answer can still be written: the server has not closed the connection
        and it was not found reset (a client that only ended its side still reads).
        Hypercorn's keep-alive timer closes an idle connection from a task of its own, in
        the step its timer wakes it (its close, with nothing in flight, does not checkpoint
        before :meth:`aclose`), and is stopped before a request that came is handed to the
        app: once a request's app runs, this turns false only when the client resets the
        connection or the server stops."""
        return not self.reset and not self.closed

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError:
            self.ended = self.reset = True
            raise
        if not data:
            self.ended = True
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError:
            self.ended = self.reset = True
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self.closed = True
        await self._stream.aclose()


def _transport(scope: Scope) -> _Transport | None:
    """The request's connection when :func:`serve_push_api` serves it."""
    transport = scope.get("state", {}).get(_TRANSPORT)
    return transport if isinstance(transport, _Transport) else None


_CLOSE: Final = ((b"connection", b"close"),)


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
    read_timeout: int = READ_TIMEOUT,
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    max_requests: int = MAX_REQUESTS,
    max_requests_per_host: int | None = MAX_REQUESTS_PER_HOST,
    max_pieces: int = MAX_PIECES,
    max_waiting: int = MAX_WAITING,
    retry_after: int = RETRY_AFTER,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve :class:`PushAPI` for ``pusher`` on ``host:port`` with Hypercorn until
    ``shutdown`` is set (a graceful stop: requests in flight get 1 s) or the task is
    cancelled. ``task_status.started`` gets the bound port (``port=0`` picks one).

    Hypercorn's limits: ``read_timeout`` (whole seconds) closes a connection that sends
    nothing for that long (over HTTP/1.1 a request whose body stopped is answered 408 first:
    Hypercorn tells the app the client went away, and each connection is served through a
    thin stream that tells the app whether it did; over HTTP/2 the streams of that
    connection are counted ``gone``); ``keep_alive_timeout`` (seconds) closes an idle
    kept-alive one (a request that comes as it closes is not pushed: counted ``gone``, the
    client sees the connection closed without an answer, RFC 9112 §9.3.1; a push is always
    answered unless the client resets the connection: a stop does not cut it short).
    The app's: ``body_timeout`` (seconds) bounds reading one body (408), ``max_requests``
    and ``max_requests_per_host`` the bodies being read at once, in all and from one peer
    (the oldest past a second answered 408 to make room, else 503), ``max_pieces`` the pieces of one body (400),
    ``max_waiting`` the requests waiting for their turn to push (503), ``retry_after`` is a 503's ``Retry-After``.
    A pusher with a ``count_push_api`` method (a :class:`~trionano.cluster.Node`) has each
    answer counted there (:meth:`Node.push_statistics`, :mod:`trionano.metrics`).

    Hypercorn also speaks HTTP/2 (h2c upgrade, prior knowledge) and offers no switch to turn
    it off; the API is specified on HTTP/1.1. Connections are accepted here
    (:func:`trio.serve_listeners`) and each served by Hypercorn's per-connection server
    (``hypercorn.trio.tcp_server.TCPServer``, as ``hypercorn.trio.run.worker_serve`` does)
    under a guard: whatever Hypercorn raises on a connection (KeyError from its HTTP/2 code on
    DATA for a stream answered early, pgjones/hypercorn#329; trio.BusyResourceError from
    closing a connection while it answers) closes that connection alone, is counted
    (``PushAPI.failed``) and logged (rate-limited); the server and the other clients go on.
    Hypercorn's own error log goes to this module's logger, rate-limited and escaped, in the
    app's :attr:`PushAPI.log`: what it suppresses is reported within about a second of its
    window's end (a task of this function's), and at the end. That
    per-connection server, its ``WorkerContext`` and ``ASGIWrapper`` are Hypercorn internals:
    pyproject pins ``hypercorn>=0.18,<0.19``, the version this was written and tested against.
    Raises ImportError without Hypercorn (``pip install trionano[push]``), OSError when the
    port cannot be bound."""
    try:
        from hypercorn.app_wrappers import ASGIWrapper
        from hypercorn.config import Config as HypercornConfig
        from hypercorn.logging import Logger as HypercornLogger
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.trio.worker_context import WorkerContext
        from hypercorn.typing import ASGIFramework, ConnectionState
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the push API needs Hypercorn: pip install trionano[push]") from exc
    app = PushAPI(
        pusher,
        token=token,
        max_body=max_body,
        body_timeout=body_timeout,
        max_requests=max_requests,
        max_requests_per_host=max_requests_per_host,
        max_pieces=max_pieces,
        max_waiting=max_waiting,
        retry_after=retry_after,
        on_answer=getattr(pusher, "count_push_api", None),
    )
    stop = shutdown if shutdown is not None else trio.Event()
    log = app.log  # Hypercorn's records and the app's: reported every second, and at the end

    class RateLimitedHypercornLog(HypercornLogger):
        """Hypercorn's error log (what it logs of a connection: "Error in ASGI Framework"...),
        to this module's logger, rate-limited per level, its text escaped."""

        def __init__(self, config: HypercornConfig) -> None:  # no handlers of Hypercorn's own
            self.access_log_format = config.access_log_format
            self.access_logger = None
            self.error_logger = _logger

        async def log(self, level: int, message: str, *args: Any, **kwargs: Any) -> None:
            try:
                text = message % args if args else message
            except (TypeError, ValueError):  # a format Hypercorn got wrong: its text as it is
                text = f"{message} {args!r}"
            exc_info = sys.exc_info()[1] if kwargs.get("exc_info") else None
            name = logging.getLevelName(level).lower()
            log.log(level, "hypercorn " + name, "Hypercorn: %s", client_text(text, 300), exc_info=exc_info)

        async def critical(self, message: str, *args: Any, **kwargs: Any) -> None:
            await self.log(logging.CRITICAL, message, *args, **kwargs)

        async def error(self, message: str, *args: Any, **kwargs: Any) -> None:
            await self.log(logging.ERROR, message, *args, **kwargs)

        async def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
            await self.log(logging.WARNING, message, *args, **kwargs)

        async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
            await self.log(logging.INFO, message, *args, **kwargs)

        async def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
            await self.log(logging.DEBUG, message, *args, **kwargs)

        async def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
            await self.log(logging.ERROR, message, *args, exc_info=True)

    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = None
    config.logger_class = RateLimitedHypercornLog
    config.read_timeout = read_timeout
    config.keep_alive_timeout = keep_alive_timeout
    config.backlog = BACKLOG
    try:
        sockets = config.create_sockets()
    except OSError as exc:  # the port cannot be bound: said as a client endpoint says it
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(exc.errno, f"cannot listen on {host}:{port} (push API): {reason}") from exc
    listeners = []
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    wrapped = ASGIWrapper(cast(ASGIFramework, app))
    context = WorkerContext(None)

    async def connection(stream: trio.SocketStream) -> None:
        """One connection, served by Hypercorn; whatever Hypercorn raises ends this one only."""
        transport = _Transport(stream)
        state = ConnectionState({_TRANSPORT: transport})  # per connection: the app asks it who went away
        try:
            await TCPServer(wrapped, config, context, state, transport).run()  # type: ignore[arg-type]
        except BaseExceptionGroup as group:
            cancelled, failure = group.split(trio.Cancelled)
            if failure is not None:
                app.count_broken()
                log.warning("push api connection", "Hypercorn failed on a connection: closed it", exc_info=failure)
            if cancelled is not None:
                raise cancelled from None
        except Exception as exc:
            app.count_broken()
            log.warning("push api connection", "Hypercorn failed on a connection: closed it", exc_info=exc)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    bound = listeners[0].socket.getsockname()[1]
    _logger.info("push API on http://%s:%d%s", host, bound, PATH)
    try:
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(
                    functools.partial(trio.serve_listeners, connection, listeners, handler_nursery=handlers)
                )
                accepting.start_soon(flush_periodically, [log])
                task_status.started(bound)
                await stop.wait()
                accepting.cancel_scope.cancel()
            # a graceful stop: kept-alive connections close, requests in flight get graceful_timeout
            await context.terminated.set()
            handlers.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
    finally:
        log.flush()  # what the last windows suppressed


def _is_json(content_type: bytes) -> bool:
    """Whether a Content-Type header value is ``application/json``, with no charset or a UTF-8
    one (parsed by the standard library's MIME parser: parameters may be quoted, any case)."""
    header = email.message.Message()
    header["content-type"] = content_type.decode("latin-1")
    if header.get_content_type() != "application/json":
        return False
    charset = header.get_param("charset")
    return charset is None or (isinstance(charset, str) and charset.lower() in ("utf-8", "utf8"))
