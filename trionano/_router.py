"""The router: from a decoded Request or Notify to a queued handler call, and every answer.

It owns the route table, runs the inbound pipeline, decodes the body to the handler's type,
chooses the lane, and wraps each call in the one per-request error boundary: whatever a
handler does, a Request gets exactly one Response (its value, a deferred answer, or an error
``{"code": ..., "message": ...}``):

=====  =====================================================================================
code   when
=====  =====================================================================================
400    the body cannot be decoded to the handler's type, or an inbound pipeline refused it,
       or the Request's id is 0 (answered with id 0; the handler is not called: nano and
       pomelo take such a Request for a Notify and never answer it)
404    no handler for the route (nano leaves the client waiting)
413    the answer is larger than ``max_packet_size``
429    the connection is over its rate limit (answered by the agent)
500    the handler raised (:class:`~trionano.HandlerError` chooses the code), its value cannot
       be serialized, or it returned None without answering or deferring
503    a forwarded route's cluster member failed, or the session has too many forwards
       waiting (cluster)
=====  =====================================================================================
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from functools import partial
from time import perf_counter
from typing import Final, Protocol, TypeAlias

import trio

from ._component import Handler
from ._errors import HandlerError, MessageTooLarge, SerializeError
from ._log import RateLimitedLog, client_text
from ._pipeline import Pipeline, PipelineMessage
from ._serializer import Unmarshal
from ._session import Call, Session, current_call
from ._stats import LATENCY_BOUNDS, ROUTE_FORWARDED, ROUTE_UNKNOWN, Counters, RouteCounters
from ._util import passes_through
from .nursery_scheduler import Lane, Scheduler, Task
from .wire import MessageType, Notify, Request

__all__ = [
    "CODE_BAD_REQUEST",
    "CODE_INTERNAL",
    "CODE_NOT_FOUND",
    "CODE_RATE_LIMITED",
    "CODE_TOO_LARGE",
    "CODE_UNAVAILABLE",
    "Pending",
    "RemoteRouter",
    "Router",
]

CODE_BAD_REQUEST: Final = 400
CODE_NOT_FOUND: Final = 404
CODE_TOO_LARGE: Final = 413
CODE_RATE_LIMITED: Final = 429
CODE_INTERNAL: Final = 500
CODE_UNAVAILABLE: Final = 503

_set_call: Final = current_call.set
_reset_call: Final = current_call.reset

#: A sync handler's call: ``(session, arg, mid)``.
SyncCall: TypeAlias = Callable[[Session, object, int], None]
#: What :meth:`Router.dispatch` hands back when the reader must wait: the full lane and the
#: task to push onto it.
Pending: TypeAlias = tuple[Lane, Task]


class RemoteRouter(Protocol):
    """What a cluster node gives its server: a way to run routes hosted elsewhere.

    ``forward`` never waits: it queues the message for the member that hosts its route, or
    answers a Request with an error (404: nobody hosts it; 503: the member failed or the
    session has too many messages waiting), so a slow member never stalls a reader."""

    def forward(self, session: Session, message: Request | Notify) -> None: ...

    def rpc(self, session: Session, route: str, body: bytes) -> None: ...


class Router:
    """One server's routes. Built by the server; called by its agents' readers (and a cluster
    node's member side) with each decoded message.

    ``handlers`` maps a route to its handler and body decoder; ``remote`` (a cluster node)
    takes the routes not hosted here. ``expose_errors`` sends a failing handler's exception
    text to the client (otherwise ``"internal error"``). Counts each message in by route and
    type, and times each handler call, in ``counters.routes`` (only hosted routes and the fixed
    ``"unknown"`` and ``"forwarded"``: never a client's text).
    """

    def __init__(
        self,
        handlers: Mapping[str, tuple[Handler, Unmarshal]],
        *,
        scheduler: Scheduler,
        pipeline: Pipeline,
        counters: Counters,
        log: RateLimitedLog,
        expose_errors: bool = False,
        remote: RemoteRouter | None = None,
    ) -> None:
        # route -> (handler, body decoder, counters, a sync handler's call built once: each
        # Request queues it with its arguments bound; None for an async handler)
        self._handlers: Final[dict[str, tuple[Handler, Unmarshal, RouteCounters, SyncCall | None]]] = {}
        for route, (handler, unmarshal) in handlers.items():
            counts = counters.route(route)
            call = None if handler.is_async else self._sync_call(handler, counts)
            self._handlers[route] = (handler, unmarshal, counts, call)
        self._unknown: Final = counters.route(ROUTE_UNKNOWN)
        self._forwarded: Final = counters.route(ROUTE_FORWARDED) if remote is not None else None
        self._scheduler = scheduler
        self._main: Final = scheduler.lane("")
        self._inbound: Final = pipeline.inbound
        self._counters = counters
        self._log = log
        self._expose_errors = expose_errors
        self.remote: Final = remote

    @property
    def routes(self) -> list[str]:
        """The routes hosted here, sorted."""
        return sorted(self._handlers)

    def hosts(self, route: str) -> bool:
        return route in self._handlers

    # -- dispatch (from a reader) -----------------------------------------------------------

    def dispatch(self, session: Session, message: Request | Notify) -> Pending | None:
        """Queue ``message``'s handler call (or its error answer) on its lane, or hand a route
        hosted elsewhere to the remote router. Returns None when done, or the full lane and the
        task the reader must push first (see :data:`Pending`): waiting on a full lane is
        backpressure on that connection alone; a remote route never makes it wait. Not a
        coroutine: no allocation per message for the common case. Never raises for anything
        the client sent."""
        if type(message) is Request:
            return self.dispatch_request(session, message.id, message.route, message.body)
        return self._dispatch(session, message, 0)

    def dispatch_request(self, session: Session, mid: int, route: str, body: bytes) -> Pending | None:
        """:meth:`dispatch` for Request ``mid`` to ``route`` with ``body``, without the
        Request object: the reader's fused fast path. Same returns and guarantees."""
        if not mid:
            return self._id_zero(session, route)
        entry = self._handlers.get(route)
        if entry is None or self._inbound.funcs:  # forwarded, unknown, or a pipeline to run
            return self._dispatch(session, Request(mid, route, body), mid)
        handler, unmarshal, counts, call = entry
        counts.requests += 1
        try:
            arg = unmarshal(body)
        except SerializeError as exc:
            return self._undecodable(session, route, mid, exc)
        lane = self._main if not handler.lane else self._lane(session, handler)
        task = partial(call, session, arg, mid) if call is not None else self._call(session, handler, arg, mid, counts)
        try:  # _queue, inlined: every request comes here
            lane.push_nowait(task)
        except trio.WouldBlock:
            return lane, task
        return None

    def _dispatch(self, session: Session, message: Request | Notify, mid: int) -> Pending | None:
        """:meth:`dispatch` in full: any message (``mid``: a Request's id, else 0)."""
        route = message.route
        is_request = type(message) is Request
        entry = self._handlers.get(route)
        if entry is None:
            remote = self.remote
            if remote is not None:
                if self._forwarded is not None:
                    _count_in(self._forwarded, is_request)
                remote.forward(session, message)
                return None
            _count_in(self._unknown, is_request)
            self._counters.unknown_routes += 1
            self._log.warning("unknown route", "unknown route %s from session %d", client_text(route), session.id)
            return self._refuse(session, mid, CODE_NOT_FOUND, f"route not found: {route}")
        handler, unmarshal, counts, call = entry
        _count_in(counts, is_request)
        body = message.body
        if self._inbound.funcs:
            pipeline_message = PipelineMessage(MessageType(message.type), route, body, mid)
            try:
                self._inbound.process(session, pipeline_message)
            except BaseException as exc:  # a user's pipeline function: refuse the message, go on
                if passes_through(exc):
                    raise
                self._counters.dropped_pipeline += 1
                self._log.warning("pipeline", "inbound pipeline refused %s: %r", route, exc)
                return self._refuse(session, mid, CODE_BAD_REQUEST, str(exc))
            body = pipeline_message.data
        try:
            arg = unmarshal(body)
        except SerializeError as exc:
            return self._undecodable(session, route, mid, exc)
        lane = self._main if not handler.lane else self._lane(session, handler)
        if call is None:
            return self._queue(lane, self._call(session, handler, arg, mid, counts))
        return self._queue(lane, partial(call, session, arg, mid))

    def _id_zero(self, session: Session, route: str) -> Pending | None:
        """A Request with id 0: an id no client of pomelo's or nano's sends (theirs start at 1;
        0 is a Notify's), which nano and pomelo take for a Notify, so its handler's answer is
        dropped and the client waits forever. trionano answers it instead, without calling
        the handler: a 400 Response with id 0, in order behind the session's earlier
        requests; counted with the error Responses (400) and logged (rate-limited)."""
        self._log.warning(
            "request id 0", "request with id 0 for %s from session %d: answered 400", client_text(route), session.id
        )
        text = "request id 0 is not allowed: request ids start at 1 (id 0 is a notify's)"
        return self._queue(self._main, lambda: self.answer_error(session, 0, CODE_BAD_REQUEST, text))

    def _undecodable(self, session: Session, route: str, mid: int, exc: SerializeError) -> Pending | None:
        self._log.warning("bad body", "undecodable body for %s: %s", route, client_text(str(exc)))
        return self._refuse(session, mid, CODE_BAD_REQUEST, str(exc))

    def _lane(self, session: Session, handler: Handler) -> Lane:
        own = session.get(handler.lane)
        return own if isinstance(own, Lane) else self._scheduler.lane(handler.lane)

    @staticmethod
    def _queue(lane: Lane, task: Task) -> Pending | None:
        try:
            lane.push_nowait(task)  # no task switch while the lane has room
        except trio.WouldBlock:
            return lane, task
        return None

    def _refuse(self, session: Session, mid: int, code: int, text: str) -> Pending | None:
        if not mid:
            return None
        # on the main lane, behind the session's earlier requests: answers keep their order
        return self._queue(self._main, lambda: self.answer_error(session, mid, code, text))

    def in_order(self, task: Task) -> Pending | None:
        """Queue ``task`` on the main lane, after everything queued so far."""
        return self._queue(self._main, task)

    # -- the per-request error boundary -----------------------------------------------------

    def _call(self, session: Session, handler: Handler, arg: object, mid: int, timing: RouteCounters) -> Task:
        """The task that calls async ``handler``: the per-request error boundary, with the
        common answer fused in (a value serialized and queued as the Response without a call
        of ours in between: the serializer's ``marshal`` and the entity's ``send_response``)."""
        func = handler.func
        route = handler.route
        entity = session.entity
        marshal = session.serializer.marshal
        buckets = timing.buckets  # Timing.observe, inlined below

        async def call_async() -> None:
            call = Call(route, mid)
            token = _set_call(call)
            start = perf_counter()
            try:
                result = await func(session, arg)
            except BaseException as exc:
                if passes_through(exc):
                    raise
                self._failed(session, call, exc)
            else:
                if mid and not call.answered:
                    if result is None:
                        self._answer(session, call, result)
                    else:
                        try:  # a closed session raises BrokenResourceError: _failed counts it
                            entity.send_response(session, mid, marshal(result))
                        except BaseException as exc:  # SerializeError, MessageTooLarge, closed
                            if passes_through(exc):
                                raise
                            self._failed(session, call, exc)
                        else:
                            call.answered = True
            finally:
                elapsed = perf_counter() - start
                buckets[bisect_left(LATENCY_BOUNDS, elapsed)] += 1
                timing.seconds += elapsed
                _reset_call(token)

        return call_async

    def _sync_call(self, handler: Handler, timing: RouteCounters) -> SyncCall:
        """``call(session, arg, mid)``: the twin of :meth:`_call`'s task for sync ``handler``,
        built once per route (a Request's task binds its arguments to it: no function object
        per message, no coroutine)."""
        func = handler.func
        route = handler.route
        buckets = timing.buckets  # Timing.observe, inlined below
        failed = self._failed
        answer = self._answer

        def call_sync(session: Session, arg: object, mid: int) -> None:
            call = Call(route, mid)
            token = _set_call(call)
            start = perf_counter()
            try:
                result = func(session, arg)
            except BaseException as exc:
                if passes_through(exc):
                    raise
                failed(session, call, exc)
            else:
                if mid and not call.answered:
                    if result is None:
                        answer(session, call, result)
                    else:
                        try:  # a closed session raises BrokenResourceError: _failed counts it
                            session.entity.send_response(session, mid, session.serializer.marshal(result))
                        except BaseException as exc:  # SerializeError, MessageTooLarge, closed
                            if passes_through(exc):
                                raise
                            failed(session, call, exc)
                        else:
                            call.answered = True
            finally:
                elapsed = perf_counter() - start
                buckets[bisect_left(LATENCY_BOUNDS, elapsed)] += 1
                timing.seconds += elapsed
                _reset_call(token)

        return call_sync

    def _answer(self, session: Session, call: Call, result: object) -> None:
        """A Request handler returned ``result``: make it the Response, unless answered."""
        if call.answered:
            return
        if result is None:
            if call.deferred:
                return
            self._counters.handler_errors += 1
            self._log.warning(
                "no response",
                "%s returned None for request %d without answering: answered 500 "
                "(return a value, call session.response(), or session.defer() to answer later)",
                call.route,
                call.mid,
            )
            self._answer_failure(session, call, CODE_INTERNAL, "the handler gave no response")
            return
        try:  # a closed session raises BrokenResourceError: _failed counts it as dropped
            session.respond_raw(call.mid, session.serializer.marshal(result))
        except BaseException as exc:  # SerializeError, MessageTooLarge, a broken connection
            if passes_through(exc):
                raise
            self._failed(session, call, exc)
            return
        call.answered = True

    def _failed(self, session: Session, call: Call, exc: BaseException) -> None:
        if isinstance(exc, trio.BrokenResourceError) and session.closed:
            self._counters.dropped_closed += 1  # the client left while it was being served
            return
        self._counters.handler_errors += 1
        if isinstance(exc, HandlerError):
            code, text = exc.code, exc.message
            self._log.info("handler error", "%s answered error %d: %s", call.route, code, client_text(text))
        elif isinstance(exc, MessageTooLarge):
            code, text = CODE_TOO_LARGE, str(exc)
            self._log.error("too large", "%s: %s", call.route, text)
        elif isinstance(exc, SerializeError):
            code, text = CODE_INTERNAL, "the response could not be serialized"
            self._log.error("serialize", "%s: %s", call.route, exc)
        else:
            code = CODE_INTERNAL
            text = f"{type(exc).__name__}: {exc}" if self._expose_errors else "internal error"
            self._log.exception("handler failed", "%s failed (session %d)", call.route, session.id, exc_info=exc)
        self._answer_failure(session, call, code, text)

    def _answer_failure(self, session: Session, call: Call, code: int, text: str) -> None:
        if call.mid and not call.answered:
            call.answered = True
            self.answer_error(session, call.mid, code, text)

    def answer_error(self, session: Session, mid: int, code: int, text: str) -> None:
        """Send the error Response ``{"code": code, "message": text}`` to request ``mid``
        (in the session's serializer's format). Never raises: a closed session is skipped."""
        if session.closed:
            self._counters.dropped_closed += 1
            return
        if len(text) > 1024:
            text = text[:1024] + "..."
        self._counters.answered_error(code)
        try:
            session.respond_raw(mid, session.serializer.marshal_error(code, text))
        except (trio.BrokenResourceError, MessageTooLarge, SerializeError) as exc:
            self._log.warning("error response", "error response to request %d not sent: %r", mid, exc)


def _count_in(counts: RouteCounters, is_request: bool) -> None:
    if is_request:
        counts.requests += 1
    else:
        counts.notifies += 1
