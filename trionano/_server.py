"""The server: composes the parts and owns their tasks.

::

    Server.serve(*endpoints)                 returns after shutdown(); takes task_status
    └── root nursery
        ├── scheduler (main lane, named lanes, timers)       nursery_scheduler.Scheduler.run
        ├── fan-out (large broadcasts, bucket by bucket)     _fanout.FanOut.run
        ├── merge clock (ends merge windows)                 _merge.MergeClock.run
        ├── heartbeat sweeper (one task for every session)
        └── connections nursery
            ├── accept loop per listener                     Endpoint.start
            └── one task per connection                      Agent.run (reader + writer)

A request's path: listener -> agent (reader) -> wire.Connection -> router (route table,
inbound pipeline, unmarshal, lane, the error boundary) -> lane -> handler -> session -> agent
-> wire.Connection -> outbox -> writer. Nothing lives at module level: two servers in one
``trio.run`` share nothing.
"""

from __future__ import annotations

import gc
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

import trio

from ._admission import Handshaking
from ._agent import Agent
from ._component import LIFECYCLE_HOOKS, Components
from ._config import Config
from ._errors import ComponentError
from ._fanout import FanOut
from ._listen import Endpoint, TCPEndpoint, peer_host
from ._log import RateLimitedLog
from ._merge import MergeClock
from ._ratelimit import PeerBudgets
from ._router import RemoteRouter, Router
from ._session import NetworkEntity, Session, UidIndex
from ._stats import Counters, Statistics
from ._util import call_user, call_user_logged, passes_through
from ._websocket import OriginCheck, WebSocketEndpoint
from .nursery_scheduler import Scheduler
from .wire import Connection as WireConnection
from .wire import Kick, MessageCodec, Role

__all__ = ["Component", "Server", "serve_tcp", "serve_websocket"]

CloseHook = Callable[[Session], Awaitable[None] | None]

_logger = logging.getLogger("trionano.server")

#: Seconds past ``shutdown_timeout`` a graceful shutdown may take for the ``shutdown`` hooks
#: (and the lanes' queued work ahead of them) when the connections took all of it.
SHUTDOWN_GRACE: Final = 1.0
#: What closing one connection whose goodbye is cut short costs, in seconds, with margin (about
#: 0.2 ms of CPU each, measured): a shutdown ends the goodbyes that long per connection, up to a
#: quarter of ``shutdown_timeout``, before its deadline.
CLOSE_COST: Final = 0.5e-3


class Component:
    """Base class for components (any object with handler methods may be registered; this
    base adds lifecycle hooks and :attr:`server`). Override any hook, sync or async:

    ``init`` (all components, in registration order) then ``after_init`` run before the server
    accepts clients; ``before_shutdown`` then ``shutdown`` run in reverse order when it stops.

    Every other public method ``(self, session: Session, msg: T)`` is a handler at route
    ``"<service>.<method>"``. ``T`` decides how the body is decoded: ``bytes`` raw, a
    betterproto message, an attrs class or dataclass (JSON), ``dict``/``Any`` (JSON). A
    handler may be ``async``; it still runs alone in its lane, awaits included: an await in a
    main-lane handler holds every other client's handlers, so give slow work a lane of its own
    (``Components.register(..., lane="name")``).
    """

    _server: Server | None = None

    @property
    def server(self) -> Server:
        """The server this component is registered with (for its scheduler, timers and close
        hooks); a component belongs to one server. Raises RuntimeError before then."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not part of a server yet")
        return self._server

    def attach(self, server: Server) -> None:
        """Called by the server that runs this component. Raises ComponentError while it
        belongs to another server that is running (once that one has stopped, it may move)."""
        if self._server is not None and self._server is not server and self._server.is_running:
            raise ComponentError(f"{type(self).__name__} belongs to another server, which is running")
        self._server = server

    def init(self) -> Awaitable[None] | None:
        """Before the server accepts clients, in the main lane. What it raises stops
        :meth:`Server.serve` before it listens."""
        return None

    def after_init(self) -> Awaitable[None] | None:
        """After every component's :meth:`init`, in the main lane: the place to start timers
        and add close hooks. What it raises stops :meth:`Server.serve`."""
        return None

    def before_shutdown(self) -> Awaitable[None] | None:
        """When a graceful shutdown begins (listeners closed, sessions still open), in the main
        lane. What it raises is logged."""
        return None

    def shutdown(self) -> Awaitable[None] | None:
        """After every session has closed, in the main lane, before :meth:`Server.serve`
        returns. What it raises is logged."""
        return None


class Server:
    """A trionano server: owns its components' routes, scheduler, sessions and counters.

    Build it with the components and a :class:`Config`, then run :meth:`serve` (or
    :func:`serve_tcp`, :func:`serve_websocket`) in a nursery; :meth:`shutdown` stops it
    gracefully.

    A cluster node hands in ``session_ids`` (an iterator of ids unique across the cluster) and
    ``remote`` (the router for routes hosted by other nodes); a standalone server numbers its
    sessions from 1.

    Raises ComponentError at construction when a handler's message type cannot be decoded
    with the configured serializer, or a component already belongs to another server.
    """

    def __init__(
        self,
        components: Components,
        config: Config | None = None,
        *,
        session_ids: Iterator[int] | None = None,
        remote: RemoteRouter | None = None,
    ) -> None:
        self.config: Final = config or Config()
        self.components: Final = components
        self.serializer: Final = self.config.serializer
        self.codec: Final = MessageCodec(self.config.routes, max_body=self.config.max_packet_size)
        self._counters = Counters()
        self.scheduler: Final = Scheduler(
            backlog=self.config.scheduler_backlog,
            precision=self.config.timer_precision,
            logger=logging.getLogger("trionano.scheduler"),
        )
        self._log = RateLimitedLog(_logger)
        self._agent_log = RateLimitedLog(logging.getLogger("trionano.agent"))
        fanout_log = RateLimitedLog(logging.getLogger("trionano.fanout"))
        self._fanout = FanOut(self._counters, fanout_log, max_behind=self.config.max_fanout_backlog)
        self._merge_clock = MergeClock()
        router_log = RateLimitedLog(logging.getLogger("trionano.router"))
        #: every rate-limited log of this server: flushed every second (_flush_logs), and at the end
        self._logs: Final = (self._log, self._agent_log, fanout_log, router_log, self.scheduler.log)
        self.router: Final = Router(
            components.resolve(self.serializer),
            scheduler=self.scheduler,
            pipeline=self.config.pipeline,
            counters=self._counters,
            log=router_log,
            expose_errors=self.config.expose_errors,
            remote=remote,
        )
        self._remote = remote
        self._session_ids: Final = session_ids if session_ids is not None else itertools.count(1)
        for component in components.components:
            if isinstance(component, Component):
                component.attach(self)
        self._sessions: dict[int, Session] = {}
        self._uids: Final = UidIndex()  # uid -> its open sessions among self._sessions
        self._agents: set[Agent] = set()
        # connections still in their handshake, and what peers spent of their rate limits
        self._handshaking: Final = Handshaking[Agent](self.config.max_handshaking, self.config.max_handshaking_per_host)
        limit = self.config.rate_limit
        self._budgets: Final = (
            PeerBudgets(limit.rate, limit.burst, limit.kick_after, limit.peers) if limit is not None else None
        )
        self._close_hooks: list[CloseHook] = []
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._all_closed = trio.Event()
        self._stopping = False
        self._shutdown_deadline = float("inf")
        self._running = False
        self._nursery: trio.Nursery | None = None

    # -- public -----------------------------------------------------------------------------

    @property
    def sessions(self) -> Mapping[int, Session]:
        """Open sessions (handshake acknowledged) by id; read-only."""
        return MappingProxyType(self._sessions)

    def sessions_of(self, uid: int) -> list[Session]:
        """The open sessions (of :attr:`sessions`) bound to ``uid`` now, oldest binding first;
        empty when none. Several sessions may share a uid (one user on two devices). Kept as
        an index (updated on bind, :meth:`Session.clear` and close): the cost is that of the
        sessions found, not of every open session."""
        return self._uids.sessions(uid)

    def sessions_of_any(self, uids: Iterable[int]) -> list[Session]:
        """The open sessions bound to any of ``uids`` now, each once, uid by uid in the order
        of ``uids`` (a uid named twice counts once). For an audience of many uids (a cluster
        push names up to 10,000): the uids are looked up at C speed, and the cost in Python
        steps is that of the sessions found."""
        return self._uids.sessions_of_any(uids)

    @property
    def bound_uids(self) -> int:
        """How many distinct uids have at least one open session."""
        return len(self._uids)

    @property
    def routes(self) -> list[str]:
        """The routes hosted here, sorted."""
        return self.router.routes

    def statistics(self) -> Statistics:
        """The server's counters now, as an immutable snapshot (its outbox figures take one
        look at every connection)."""
        return self._counters.snapshot(
            len(self._sessions),
            [agent.queued for agent in self._agents],
            connections_handshaking=len(self._handshaking),
            rate_limited_peers=len(self._budgets) if self._budgets is not None else 0,
            fanout_waiting=self._fanout.waiting,
        )

    def on_session_closed(self, hook: CloseHook) -> CloseHook:
        """Run ``hook(session)`` in the scheduler's main lane when any session closes (nano's
        ``session.Lifetime.OnClosed``, but owned by this server). Usable as a decorator."""
        self._close_hooks.append(hook)
        return hook

    def make_session(self, entity: NetworkEntity) -> Session:
        """A new session for ``entity`` with this server's next session id, its serializer and
        remote router; for a cluster node's stand-ins of other gates' clients (local
        connections get theirs when they are accepted). The caller owns its life and calls
        :meth:`session_closed` when it ends."""
        return Session._create(next(self._session_ids), entity, self.serializer, self._remote, self._fanout)

    def next_id(self) -> int:
        """The next id of this server's id source (unique across a cluster when a cluster node
        gave the source)."""
        return next(self._session_ids)

    @property
    def is_running(self) -> bool:
        """Whether :meth:`serve` is running."""
        return self._running

    @property
    def is_stopping(self) -> bool:
        """Whether :meth:`shutdown` has been called."""
        return self._stop.is_set()

    @property
    def shutdown_deadline(self) -> float:
        """When the graceful shutdown under way is to have closed every connection (Trio
        time): ``shutdown_timeout`` after :meth:`serve` saw :meth:`shutdown`; inf before. A
        cluster node leaves the cluster by this deadline plus a second."""
        return self._shutdown_deadline

    async def wait_stopped(self) -> None:
        """Wait until :meth:`serve` has returned after a shutdown."""
        await self._stopped.wait()

    def shutdown(self) -> None:
        """Stop gracefully, within ``shutdown_timeout`` (T) whatever the number of clients:
        stop accepting, run the before_shutdown hooks and let the fan-out make the broadcasts
        accepted before (both within T/2; the hooks wait behind the handlers already queued),
        kick every session with reason "shutdown", wait for the connections to close, run the
        shutdown hooks, then :meth:`serve` returns. A session with Requests read and not yet
        answered reads no more and is kicked after their answers, or at 3T/4; every other
        session is kicked at once (an idle client's Kick is written then, so it has it even
        if the close is cut short). A WebSocket's close handshake is waited for up to a second
        (as at any time) and never past :data:`CLOSE_COST` per connection (at most T/4)
        before T, so that closing thousands whose peers never answer fits before T. At T the
        connections still open (a client that does not read its Kick) are cut: closed at
        once. Those closed without their goodbye are counted (``connections_cut``) and logged
        once. The
        shutdown hooks may then take :data:`SHUTDOWN_GRACE` (1 s) more; what is still running
        after that is cancelled. Idempotent."""
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
        # the cyclic collector is paused from the stop until serve returns (see _graceful_stop)
        collecting = False
        try:
            async with trio.open_nursery() as root:
                self._nursery = root
                await root.start(self.scheduler.run)
                await root.start(self._fanout.run)
                clock = trio.CancelScope()
                await root.start(self._run_clock, clock)
                flusher = trio.CancelScope()
                root.start_soon(self._flush_logs, flusher)
                await self._lifecycle("init")
                await self._lifecycle("after_init")
                sweeper = trio.CancelScope()
                root.start_soon(self._sweep, sweeper)
                cut_before: int | None = None  # connections_cut when the stop began
                try:
                    async with trio.open_nursery() as connections:
                        ports = [await endpoint.start(self.serve_connection, connections) for endpoint in endpoints]
                        _logger.info("trionano server listening on ports %s; routes %s", ports, self.routes)
                        task_status.started(ports)
                        await self._stop.wait()
                        # the connections are closed by the deadline (what is left then is cut);
                        # the shutdown hooks, behind the lanes' queued work, get SHUTDOWN_GRACE
                        # more; then whatever is left is cancelled
                        deadline = self._shutdown_deadline = trio.current_time() + self.config.shutdown_timeout
                        root.cancel_scope.deadline = deadline + SHUTDOWN_GRACE
                        collecting = gc.isenabled()
                        gc.disable()  # see _graceful_stop
                        cut_before = self._counters.connections_cut
                        await self._graceful_stop(endpoints, connections, deadline)
                finally:
                    if cut_before is not None:  # each counted itself as it closed: logged once
                        self._log_cut(self._counters.connections_cut - cut_before)
                sweeper.cancel()
                await self._lifecycle("shutdown", reverse=True)
                self.scheduler.stop()
                self._fanout.stop()
                clock.cancel()
                flusher.cancel()
            if root.cancel_scope.cancelled_caught:
                _logger.warning(
                    "shutdown took over shutdown_timeout + %g s: queued handlers and hooks were cancelled",
                    SHUTDOWN_GRACE,
                )
        finally:
            if collecting:
                gc.enable()
            for log in self._logs:  # what the last windows suppressed
                log.flush()
            self._running = False
            self._nursery = None
            self._stopped.set()

    def _log_cut(self, cut: int) -> None:
        if cut:
            _logger.warning(
                "shutdown: %d connections cut (closed without their goodbye: their Kick not written by "
                "shutdown_timeout, %g s, or their WebSocket close handshake not answered in time)",
                cut,
                self.config.shutdown_timeout,
            )

    async def _graceful_stop(self, endpoints: tuple[Endpoint, ...], connections: trio.Nursery, deadline: float) -> None:
        """Stop accepting, run the before_shutdown hooks, let the fan-out make the deliveries
        it was handed (both within half of ``shutdown_timeout``), kick every client, wait for
        the connections to close until ``deadline`` (Trio time), cut those left.

        The cost is linear and small per connection: the kicks are made in one pass (an idle
        client's written at once), then each connection's tasks end; every connection's
        goodbye (a WebSocket's close handshake) ends by ``deadline``, so the cut costs no
        wait. serve() pauses the cyclic garbage collector meanwhile, and until it returns: the
        closing connections' objects are freed by reference counting, while each full
        collection would walk every object the server still holds (measured: 13,000 sessions
        closing took 5 full collections, 5.8 s of the 8.5 CPU-s of the stop), and a collection
        as soon as the connections had closed walked what the stop had allocated and the server
        still held (a gate's queued pushes: 0.7 s of a loaded gate's stop, finding nothing);
        once serve has let go of it, little is left to walk."""
        self._stopping = True
        timeout = self.config.shutdown_timeout
        start = deadline - timeout
        for endpoint in endpoints:
            await endpoint.aclose()
        with trio.move_on_at(start + timeout / 2):
            await self._lifecycle("before_shutdown", reverse=True)  # behind the lanes' queued work
            # the broadcasts accepted so far reach every member before its Kick (a Kick waits
            # behind a broadcast on its way); those accepted meanwhile are not waited for
            await self._fanout.drained()
        # the goodbyes (WebSocket close handshakes) end early enough that closing the connections
        # still in one fits before the deadline on a loaded machine
        close_by = deadline - min(timeout / 4, len(self._agents) * CLOSE_COST)
        # every client is kicked in one go, without a checkpoint: no deadline can cancel a
        # connection before its Kick; an idle client has it written now (Agent._write_now,
        # tens of microseconds each), the others when their writers run
        for agent in list(self._agents):
            agent.shutdown(close_by=close_by)
        # what the fan-out still has would reach members after their Kicks (dropped one by one,
        # a microsecond each: a saturated fan-out holds a million): dropped now, its task ends
        self._fanout.stop()
        if self._agents:
            # the Requests read before the stop are answered before the Kick, while time allows
            with trio.move_on_at(start + timeout * 3 / 4):
                await self._all_closed.wait()
            for agent in list(self._agents):
                agent.shutdown(answers_first=False)
            with trio.move_on_at(deadline):
                await self._all_closed.wait()
        # those left (their Kick not written) are cut: each counts itself in connections_cut
        connections.cancel_scope.cancel()

    # -- connections ------------------------------------------------------------------------

    async def serve_connection(self, stream: trio.abc.Stream, remote_address: str) -> None:
        """Serve one accepted connection until it closes (the :data:`ConnectionHandler` every
        endpoint is started with; usable for custom transports). Owns ``stream``. Never raises
        for anything the peer does."""
        counters = self._counters
        if self._stopping:
            counters.connections_refused += 1
            await self._refuse(stream, "shutdown")
            return
        host = peer_host(remote_address)
        now = trio.current_time()
        room = self._handshaking.make_room(
            host, now, connections=len(self._agents), max_connections=self.config.max_connections
        )
        if room.refuse is not None:
            counters.connections_refused += 1
            await self._refuse(stream, room.refuse)
            return
        for victim in room.evict:  # its place is the newcomer's from now on
            self._agents.discard(victim)
            self._log.warning(
                "handshake evicted",
                "connection from %s evicted: still in its handshake when %s connected",
                victim.remote_address,
                remote_address,
            )
            victim.evict()
        counters.connections_accepted += 1
        budgets = self._budgets
        try:
            agent = Agent(
                stream,
                remote_address,
                config=self.config,
                codec=self.codec,
                router=self.router,
                counters=counters,
                log=self._agent_log,
                make_session=self._make_session,
                on_working=self._session_opened,
                on_ended=self._session_ended,
                clock=self._merge_clock,
                limiter=budgets.opened(host, now) if budgets is not None else None,
            )
        except BaseException as exc:  # the last guard, as below
            if passes_through(exc):
                raise
            self._log.exception("connection failed", "connection from %s failed", remote_address, exc_info=exc)
            await trio.aclose_forcefully(stream)
            return
        self._agents.add(agent)
        self._handshaking.add(agent, host, now)
        session = agent.session  # the agent lets go of it when run() returns
        try:
            await agent.run()
        except BaseException as exc:  # the last guard: nothing one client does ends the server
            if passes_through(exc):
                raise
            self._log.exception("connection failed", "connection from %s failed", remote_address, exc_info=exc)
        finally:
            self._connection_closed(agent, session)
            limiter = agent.limiter
            if budgets is not None and limiter is not None:
                budgets.closed(host, limiter, trio.current_time())

    async def _refuse(self, stream: trio.abc.Stream, reason: str) -> None:
        self._log.warning("refused", "connection refused: %s", reason)
        packet = WireConnection(Role.SERVER).send(Kick(reason))
        with trio.move_on_after(1.0) as scope:
            try:
                await stream.send_all(packet)
                await stream.aclose()  # a WebSocket says goodbye with a close frame
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        if scope.cancelled_caught:
            await trio.aclose_forcefully(stream)

    def _make_session(self, agent: Agent) -> Session:
        return self.make_session(agent)

    def _session_opened(self, agent: Agent) -> None:
        self._handshaking.remove(agent)
        session = agent.session
        self._sessions[session.id] = session
        self._uids.add(session)
        self._counters.sessions_opened += 1
        # DEBUG: a churn of connections must not flood the log; operators count them instead
        # (statistics(): connections_accepted, sessions_opened, sessions_closed)
        _logger.debug("session %d opened from %s", session.id, agent.remote_address)

    def _session_ended(self, agent: Agent) -> None:
        """The connection's tasks have ended: its session is over (its close hooks queued now,
        not after a WebSocket's goodbye: at a shutdown, thousands of peers that never answer
        the close frame would have them all run after the cut)."""
        self._end_session(agent, agent.session)

    def _connection_closed(self, agent: Agent, session: Session) -> None:
        self._agents.discard(agent)
        self._handshaking.remove(agent)
        self._end_session(agent, session)  # if the agent ended without saying so (it failed)
        if self._stopping and not self._agents:
            self._all_closed.set()

    def _end_session(self, agent: Agent, session: Session) -> None:
        if self._sessions.pop(session.id, None) is not None:
            self._uids.remove(session)
            self._counters.sessions_closed += 1
            _logger.debug("session %d (uid %d) from %s closed", session.id, session.uid, agent.remote_address)
            self.session_closed(session)

    def session_closed(self, session: Session) -> None:
        """Queue the close hooks for ``session`` on the main lane (never waits). Called by the
        server for its own sessions and by a cluster node for the remote sessions it ends."""
        if not self._close_hooks:
            return
        hooks = list(self._close_hooks)

        async def run_hooks() -> None:
            for hook in hooks:
                await call_user_logged(self._log, "session close hook", hook, session)

        try:
            self.scheduler.push_nowait(run_hooks)
        except trio.WouldBlock:
            if self._nursery is not None:
                self._nursery.start_soon(self.scheduler.push, run_hooks)
        except (trio.ClosedResourceError, trio.BrokenResourceError):  # stopped, or cancelled
            self._log.warning(
                "close hooks skipped", "the scheduler has stopped: close hooks of session %d skipped", session.id
            )

    # -- the scheduler side -----------------------------------------------------------------

    async def _lifecycle(self, hook: str, *, reverse: bool = False) -> None:
        """Run a lifecycle hook of every component, in the main lane (so it never races a
        handler), and wait for them. init and after_init failures are raised."""
        assert hook in LIFECYCLE_HOOKS
        components = self.components.components
        done = trio.Event()
        errors: list[Exception] = []
        strict = hook in ("init", "after_init")

        async def run_hooks() -> None:
            try:
                for component in reversed(components) if reverse else components:
                    method = getattr(component, hook, None)
                    if method is None:
                        continue
                    if not strict:
                        await call_user_logged(self._log, f"{type(component).__name__}.{hook}", method)
                        continue
                    try:
                        await call_user(method)
                    except Exception as exc:
                        errors.append(exc)
                        return
            finally:
                done.set()

        await self.scheduler.push(run_hooks)
        await done.wait()
        if errors:
            raise errors[0]

    async def _run_clock(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await self._merge_clock.run(task_status=task_status)

    async def _flush_logs(self, scope: trio.CancelScope) -> None:
        """Every second, report what the rate-limited logs suppressed in windows that have
        ended (:meth:`RateLimitedLog.flush_due`): a flood that stops is reported within a
        second of its window's end, not at the next record of its kind, which may never come.
        A comparison per log when there is nothing to report."""
        with scope:
            while True:
                await trio.sleep(1.0)
                for log in self._logs:
                    log.flush_due()

    async def _sweep(self, scope: trio.CancelScope) -> None:
        """One task for every connection: every interval/8, send the heartbeats that are due
        and kick the peers silent past their deadline; yields between slices, so even
        thousands of simultaneous timeouts never stall other tasks for long.

        Silence is judged only over time the server could hear: a sweep that wakes late (the
        process was starved of CPU, stopped, or the loop held) first lets two scheduler
        passes go by, so the readers take the packets waiting in their sockets (a heartbeat
        that came while nothing ran is not silence), then judges."""
        interval = self.config.heartbeat
        if not interval:
            return
        period = interval / 8
        with scope:
            while True:
                asleep = trio.current_time()
                await trio.sleep(period)
                if trio.current_time() - asleep > 2 * period:  # woke late: readers first
                    await trio.lowlevel.checkpoint()  # the readers made runnable by what came
                    await trio.lowlevel.checkpoint()  # have run once this returns
                now = trio.current_time()
                work = 0
                for agent in list(self._agents):
                    # a kick tears a connection down (more tasks to run) and costs ~16 heartbeats
                    work += 16 if agent.heartbeat(now) else 1
                    if work >= 256:
                        work = 0
                        await trio.lowlevel.checkpoint()


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
    await _serve_one(server, TCPEndpoint(host, port, ssl_context), task_status)


async def serve_websocket(
    server: Server,
    port: int = 0,
    *,
    host: str | None = None,
    path: str = "/",
    ssl_context: ssl.SSLContext | None = None,
    check_origin: OriginCheck | None = None,
    static_dir: Path | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``server`` over WebSocket (WSS with ``ssl_context``) until it is shut down;
    ``task_status.started`` gets the bound port. To serve TCP as well, run
    ``server.serve(TCPEndpoint(...), WebSocketEndpoint(...))``."""
    endpoint = WebSocketEndpoint(host, port, path, ssl_context, check_origin, static_dir)
    await _serve_one(server, endpoint, task_status)


async def _serve_one(server: Server, endpoint: Endpoint, task_status: trio.TaskStatus[int]) -> None:
    async def serve(task_status: trio.TaskStatus[list[int]]) -> None:
        await server.serve(endpoint, task_status=task_status)

    async with trio.open_nursery() as nursery:
        ports: list[int] = await nursery.start(serve)
        task_status.started(ports[0])
