"""The server: components, scheduler, sessions and the transports' accept loops.

::

    Server.serve(*endpoints)                 returns after shutdown(); takes task_status
    └── root nursery
        ├── scheduler (main lane, named lanes, timers)       nursery_scheduler.Scheduler.run
        ├── heartbeat sweeper (one task for every session)
        └── connections nursery
            ├── accept loop per listener                     Endpoint.start
            └── one task per connection                      Agent.run (reader + writer)

Nothing lives at module level: two servers in one ``trio.run`` share nothing.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Protocol

import attrs
import trio

from ._agent import Agent
from ._component import Component, Components, Handler
from ._config import Config, SlowConsumerPolicy
from ._errors import HandlerError, SerializeError
from ._fdstream import FdStream
from ._pipeline import PipelineMessage
from ._serializer import Unmarshal
from ._session import Call, Session, current_call
from .nursery_scheduler import Lane, Scheduler, Task
from .wire import HandshakeResponse, MessageCodec, MessageType, Notify, Request

__all__ = ["Endpoint", "Server", "Stats", "TCPEndpoint", "serve_tcp"]

CloseHook = Callable[[Session], Awaitable[None] | None]


class RemoteRouter(Protocol):
    """What a cluster node gives its server: a way to run routes hosted elsewhere."""

    async def forward(self, session: Session, message: Request | Notify) -> None: ...

    def rpc(self, session: Session, route: str, body: bytes) -> None: ...


#: The error Response body's shape: ``{"code": <int>, "message": <str>}``.
CODE_BAD_REQUEST: Final = 400
CODE_NOT_FOUND: Final = 404
CODE_INTERNAL: Final = 500


@attrs.define
class Stats:
    """Counters of one server; read them, never reset by the server."""

    sessions_opened: int = 0
    sessions_closed: int = 0
    encoded: int = 0  # Data packets encoded (a broadcast counts one)
    dropped_slow: int = 0  # messages dropped because an outbox was full
    dropped_closed: int = 0  # messages for sessions already closing
    dropped_pipeline: int = 0  # messages a pipeline function refused
    slow_kicks: int = 0  # sessions kicked as slow consumers
    protocol_errors: int = 0
    handler_errors: int = 0
    unknown_routes: int = 0


class Endpoint(Protocol):
    """A transport a server listens on (TCP here; WebSocket in :mod:`trionano.websocket`)."""

    async def start(self, server: Server, nursery: trio.Nursery) -> int:
        """Bind, start accepting in ``nursery`` (each connection handed to
        ``server.serve_connection``), and return the bound port."""
        ...

    async def aclose(self) -> None:
        """Stop accepting. Connections already made are the server's."""
        ...


def _peer(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None) or getattr(getattr(stream, "transport_stream", None), "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return "unknown"
    return f"{host}:{port}"


async def open_listeners(
    host: str | None, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[list[trio.abc.Listener[Any]], int]:
    """TCP listeners on ``host:port`` (TLS-wrapped with ``ssl_context``) and the bound port."""
    sockets = await trio.open_tcp_listeners(port, host=host)
    bound: int = sockets[0].socket.getsockname()[1]
    if ssl_context is None:
        return list(sockets), bound
    return [trio.SSLListener(sock, ssl_context) for sock in sockets], bound


async def accept_forever(
    listener: trio.abc.Listener[Any], handle: Callable[[trio.abc.Stream], Awaitable[None]], nursery: trio.Nursery
) -> None:
    """Hand every accepted connection to ``handle`` (a task in ``nursery``) until the listener
    is closed. Plain TCP streams become :class:`FdStream`; accept errors (out of file
    descriptors and the like) are logged and retried."""
    while True:
        try:
            stream = await listener.accept()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        except OSError as exc:
            logging.getLogger("trionano").error("accept failed: %s", exc)
            await trio.sleep(0.1)
            continue
        nursery.start_soon(handle, FdStream.from_stream(stream) if type(stream) is trio.SocketStream else stream)


@attrs.define(eq=False)
class TCPEndpoint:
    """Plain TCP, or TLS with ``ssl_context`` (trio.SSLStream). ``port`` 0 picks a free one.
    ``send_buffer`` sets SO_SNDBUF on each connection: a small one bounds the kernel memory a
    stalled client can pin, so the slow-consumer policy sees it sooner."""

    host: str | None = None
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    send_buffer: int | None = None
    _listeners: list[trio.abc.Listener[Any]] = attrs.field(factory=list, init=False)

    async def start(self, server: Server, nursery: trio.Nursery) -> int:
        self._listeners, port = await open_listeners(self.host, self.port, self.ssl_context)

        async def handle(stream: trio.abc.Stream) -> None:
            peer = _peer(stream)
            if self.send_buffer is not None:
                sock = getattr(stream, "socket", None) or stream.transport_stream.socket  # type: ignore[attr-defined]
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            await server.serve_connection(stream, peer)

        for listener in self._listeners:
            nursery.start_soon(accept_forever, listener, handle, nursery)
        return port

    async def aclose(self) -> None:
        for listener in self._listeners:
            await listener.aclose()


class Server:
    """A trionano server: owns its components, scheduler, sessions and counters.

    Build it with the components and a :class:`Config`, then run :meth:`serve` (or
    :func:`serve_tcp`) in a nursery; :meth:`shutdown` stops it gracefully.

    Raises ComponentError at construction when a handler's message type cannot be decoded
    with the configured serializer.
    """

    def __init__(self, components: Components, config: Config | None = None) -> None:
        self.config: Final = config or Config()
        self.components: Final = components
        self.serializer: Final = self.config.serializer
        self.codec: Final = MessageCodec(self.config.routes, max_body=self.config.max_packet_size)
        self.stats: Final = Stats()
        self._logger = logging.getLogger(self.config.logger_name)
        self.scheduler: Final = Scheduler(
            backlog=self.config.scheduler_backlog, precision=self.config.timer_precision, logger=self._logger
        )
        self._main_lane: Final = self.scheduler.lane("")
        self._handlers: dict[str, tuple[Handler, Unmarshal]] = components.resolve(self.serializer)
        for component in components.components:
            if isinstance(component, Component):
                component._attach(self)
        # the channels' own lists: a C-level truth test on every message
        self._inbound_funcs = self.config.pipeline.inbound._funcs
        self._outbound_funcs = self.config.pipeline.outbound._funcs
        self._inbound = self.config.pipeline.inbound
        self._outbound = self.config.pipeline.outbound
        self._sessions: dict[int, Session] = {}
        self._agents: set[Agent] = set()
        self._close_hooks: list[CloseHook] = []
        self._session_ids = itertools.count(1)
        self._stop = trio.Event()
        self._all_closed = trio.Event()
        self._stopping = False
        self._running = False
        self._nursery: trio.Nursery | None = None
        self._remote: RemoteRouter | None = None  # set by a cluster node

    # -- public -----------------------------------------------------------------------------

    @property
    def sessions(self) -> Mapping[int, Session]:
        """Open sessions by id (read-only)."""
        return MappingProxyType(self._sessions)

    @property
    def routes(self) -> list[str]:
        return sorted(self._handlers)

    def on_session_closed(self, hook: CloseHook) -> CloseHook:
        """Run ``hook(session)`` in the scheduler's main lane when any session closes (nano's
        ``session.Lifetime.OnClosed``, but owned by this server). Usable as a decorator."""
        self._close_hooks.append(hook)
        return hook

    def shutdown(self) -> None:
        """Stop gracefully: stop accepting, run before_shutdown hooks, kick every session with
        reason "shutdown", run shutdown hooks, then :meth:`serve` returns. Idempotent."""
        self._stop.set()

    async def serve(
        self, *endpoints: Endpoint, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run on ``endpoints`` until :meth:`shutdown`; ``task_status.started`` gets the bound
        ports, in order. Cancelling it instead closes everything at once, without hooks.

        Raises RuntimeError if the server is already running; what a component's init raises.
        """
        if self._running:
            raise RuntimeError("this server is already running")
        self._running = True
        try:
            async with trio.open_nursery() as root:
                self._nursery = root
                await root.start(self.scheduler.run)
                await self._lifecycle("init")
                await self._lifecycle("after_init")
                sweeper = trio.CancelScope()
                root.start_soon(self._sweep_heartbeats, sweeper)
                async with trio.open_nursery() as connections:
                    ports = [await endpoint.start(self, connections) for endpoint in endpoints]
                    self._logger.info("Startup trionano server on ports %s, routes %s", ports, self.routes)
                    task_status.started(ports)
                    await self._stop.wait()
                    await self._graceful_stop(endpoints, connections)
                sweeper.cancel()
                await self._lifecycle("shutdown", reverse=True)
                self.scheduler.stop()
        finally:
            self._running = False
            self._nursery = None

    async def _graceful_stop(self, endpoints: Sequence[Endpoint], connections: trio.Nursery) -> None:
        self._stopping = True
        for endpoint in endpoints:
            await endpoint.aclose()
        await self._lifecycle("before_shutdown", reverse=True)
        for agent in list(self._agents):
            agent.kick("shutdown")
        if self._agents:
            with trio.move_on_after(self.config.shutdown_timeout):
                await self._all_closed.wait()
        connections.cancel_scope.cancel()

    async def serve_connection(self, stream: trio.abc.Stream, remote_address: str) -> None:
        """Serve one accepted connection until it closes (for custom transports)."""
        if self._stopping:
            await trio.aclose_forcefully(stream)
            return
        agent = Agent(self, stream, remote_address, next(self._session_ids))
        self._agents.add(agent)
        self._sessions[agent.session.id] = agent.session
        self.stats.sessions_opened += 1
        await agent.run()

    # -- the scheduler side -----------------------------------------------------------------

    async def _lifecycle(self, hook: str, *, reverse: bool = False) -> None:
        """Run a lifecycle hook of every component, in the main lane (so it never races a
        handler), and wait for them."""
        components = self.components.components
        done = trio.Event()
        errors: list[BaseException] = []

        async def run_hooks() -> None:
            try:
                for component in reversed(components) if reverse else components:
                    method = getattr(component, hook, None)
                    if method is None:
                        continue
                    try:
                        result = method()
                        if inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        if hook in ("init", "after_init"):
                            errors.append(exc)
                            return
                        self._logger.exception("%s.%s failed", type(component).__name__, hook)
            finally:
                done.set()

        await self.scheduler.push(run_hooks)
        await done.wait()
        if errors:
            raise errors[0]

    def _lane(self, session: Session, handler: Handler) -> Lane:
        own = session.get(handler.lane)
        return own if isinstance(own, Lane) else self.scheduler.lane(handler.lane)

    def _dispatch(self, session: Session, message: Request | Notify) -> tuple[Lane | None, Task] | None:
        """From a reader: find the handler, run the inbound pipeline, decode the body, and
        queue the call. Returns ``(lane, task)`` when the lane is full: the reader then waits
        on ``lane.push(task)`` (backpressure on that connection alone), or ``(None, task)``
        for a route forwarded to another cluster node: the reader awaits ``task()``. Not a
        coroutine: no allocation per message for the common case."""
        route = message.route
        mid = message.id if type(message) is Request else 0
        entry = self._handlers.get(route)
        if entry is None and self._remote is not None:
            # a cluster node forwards what it does not host; the reader awaits the call, so a
            # connection's messages keep their order (as nano's gate does)
            remote = self._remote
            return None, lambda: remote.forward(session, message)
        if entry is None:
            self.stats.unknown_routes += 1
            self._logger.warning("nano/handler: %s not found(forgot registered?), session=%d", route, session.id)
            if mid:
                return self._queue(
                    self._main_lane, self._error_task(session, mid, CODE_NOT_FOUND, f"route not found: {route}")
                )
            return None
        handler, unmarshal = entry
        body = message.body
        if self._inbound_funcs:
            pipeline_message = PipelineMessage(MessageType(message.type), route, body, mid)
            try:
                self._inbound.process(session, pipeline_message)
            except Exception as exc:
                self.stats.dropped_pipeline += 1
                self._logger.warning("Pipeline process failed: %r (route %s)", exc, route)
                if mid:
                    return self._queue(self._main_lane, self._error_task(session, mid, CODE_BAD_REQUEST, str(exc)))
                return None
            body = pipeline_message.data
        try:
            arg = unmarshal(body)
        except SerializeError as exc:
            self._logger.warning("Deserialize failed for %s: %s", route, exc)
            if mid:
                return self._queue(self._main_lane, self._error_task(session, mid, CODE_BAD_REQUEST, str(exc)))
            return None
        lane = self._main_lane if not handler.lane else self._lane(session, handler)
        return self._queue(lane, self._call_task(session, handler, arg, mid))

    @staticmethod
    def _queue(lane: Lane, task: Task) -> tuple[Lane | None, Task] | None:
        try:
            lane.push_nowait(task)  # no task switch while the lane has room
        except trio.WouldBlock:
            return lane, task
        return None

    def _call_task(self, session: Session, handler: Handler, arg: object, mid: int) -> Task:
        func = handler.func
        if handler.is_async:

            async def call_async() -> None:
                call = Call(mid)
                token = current_call.set(call)
                try:
                    result = await func(session, arg)
                except Exception as exc:
                    self._handler_failed(session, handler, call, exc)
                else:
                    if mid and result is not None:
                        self._answer(session, call, result)
                finally:
                    current_call.reset(token)

            return call_async

        # the twin of call_async: a sync handler's call costs no coroutine per message
        def call_sync() -> None:
            call = Call(mid)
            token = current_call.set(call)
            try:
                result = func(session, arg)
            except Exception as exc:
                self._handler_failed(session, handler, call, exc)
            else:
                if mid and result is not None:
                    self._answer(session, call, result)
            finally:
                current_call.reset(token)

        return call_sync

    def _answer(self, session: Session, call: Call, result: object) -> None:
        """A request handler's return value becomes its Response (unless it responded)."""
        if call.answered or session.closed:
            return
        try:
            session.response(result, mid=call.mid)
        except SerializeError as exc:
            self._handler_failed(session, None, call, exc)
        except trio.BrokenResourceError:
            self.stats.dropped_closed += 1

    def _handler_failed(self, session: Session, handler: Handler | None, call: Call, exc: Exception) -> None:
        self.stats.handler_errors += 1
        route = handler.route if handler else "?"
        if isinstance(exc, HandlerError):
            code, text = exc.code, exc.message
            self._logger.info("Service %s answered error %d: %s", route, code, text)
        else:
            code, text = CODE_INTERNAL, f"{type(exc).__name__}: {exc}"
            self._logger.error("Service %s error (session %d)", route, session.id, exc_info=exc)
        if call.mid and not call.answered and not session.closed:
            call.answered = True
            self._send_error(session, call.mid, code, text)

    def _error_task(self, session: Session, mid: int, code: int, text: str) -> Task:
        # queued behind the session's earlier requests, so responses keep their order
        return lambda: self._send_error(session, mid, code, text)

    def _send_error(self, session: Session, mid: int, code: int, text: str) -> None:
        if session.closed:
            return
        body = {"code": code, "message": text}
        try:
            data = self.serializer.marshal(body)
        except SerializeError:
            data = json.dumps(body, separators=(",", ":")).encode()
        session._entity.send_response(session, mid, data)

    # -- the agents' side -------------------------------------------------------------------

    def _handshake_response(self) -> HandshakeResponse:
        config = self.config
        return HandshakeResponse(
            heartbeat=config.heartbeat,
            servertime=int(time.time()),  # now, not the startup time nano caches
            dictionary=config.routes or None,
            pomelo=config.pomelo_handshake,
        )

    def _encode_push(self, route: str, value: object) -> tuple[bytes, bytes]:
        """Serialize and encode a Push once: (body, whole packet)."""
        body = self.serializer.marshal(value)
        packet = self.codec.push_packet(route, body)
        self.stats.encoded += 1
        return body, packet

    def _run_outbound(self, session: Session, message: PipelineMessage) -> bool:
        try:
            self._outbound.process(session, message)
        except Exception as exc:
            self.stats.dropped_pipeline += 1
            self._logger.warning("broken pipeline: %r (session %d, route %r)", exc, session.id, message.route)
            return False
        return True

    def _slow_consumer(self, agent: Agent) -> bool:
        """An outbox is full: apply the policy. Returns False (the message was not queued)."""
        if self.config.slow_consumer is SlowConsumerPolicy.KICK:
            self.stats.slow_kicks += 1
            self._logger.warning("session %d is a slow consumer: kicked", agent.session.id)
            agent.kick("slow consumer", discard=True)
            return False
        self.stats.dropped_slow += 1
        drops = agent.count_drop()
        if drops & (drops - 1) == 0:  # 1, 2, 4, 8, ...: every drop counted, logs stay bounded
            self._logger.warning(
                "session send buffer exceed: session %d has dropped %d message(s)", agent.session.id, drops
            )
        return False

    def _agent_closed(self, agent: Agent) -> None:
        self._agents.discard(agent)
        session = agent.session
        self._sessions.pop(session.id, None)
        self.stats.sessions_closed += 1
        self._run_close_hooks(session)
        if self._stopping and not self._agents:
            self._all_closed.set()

    def _run_close_hooks(self, session: Session) -> None:
        """Queue the close hooks for ``session`` on the main lane (never waits)."""
        if not self._close_hooks:
            return
        hooks = list(self._close_hooks)

        async def run_hooks() -> None:
            for hook in hooks:
                try:
                    result = hook(session)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self._logger.exception("session close hook failed")

        try:
            self.scheduler.push_nowait(run_hooks)
        except trio.WouldBlock:
            if self._nursery is not None:
                self._nursery.start_soon(self.scheduler.push, run_hooks)
        except trio.ClosedResourceError:
            self._logger.warning("scheduler stopped: close hooks of session %d skipped", session.id)

    async def _sweep_heartbeats(self, scope: trio.CancelScope) -> None:
        """One task for every session: heartbeat those due, close those silent for 2x."""
        interval = self.config.heartbeat
        if not interval:
            return
        with scope:
            while True:
                await trio.sleep(interval / 4)
                now = trio.current_time()
                for agent in list(self._agents):
                    conn = agent.conn
                    if now >= conn.timeout_deadline:
                        self._logger.info(
                            "Session heartbeat timeout, session=%d, LastTime=%.3f, Deadline=%.3f",
                            agent.session.id,
                            conn.last_received,
                            now - 2 * interval,
                        )
                        agent.kick("heartbeat timeout")
                    elif now >= conn.heartbeat_deadline:
                        agent.send_heartbeat(now)


async def serve_tcp(
    server: Server,
    port: int = 0,
    *,
    host: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``server`` over TCP (TLS with ``ssl_context``) until it is shut down;
    ``task_status.started`` gets the bound port (use port 0 in tests)."""

    async def serve(task_status: trio.TaskStatus[list[int]]) -> None:
        await server.serve(TCPEndpoint(host, port, ssl_context), task_status=task_status)

    async with trio.open_nursery() as nursery:
        ports: list[int] = await nursery.start(serve)
        task_status.started(ports[0])
