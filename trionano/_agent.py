"""The agent: one client connection. Its task reads; one writer task owns the stream.

::

    Server.serve_connection  (a task in the server's connections nursery)
    └── Agent.run: nursery
        ├── reader: this task: receive, let the wire.Connection decode, hand each Request or
        │           Notify to the router (waiting only when its lane is full); a read of whole
        │           Requests (the common case) takes the fused path: receive_requests decodes
        │           them at once, Router.dispatch_request queues each handler call
        └── writer: drain the outbox, writing what is queued at once (vectored, or joined
                    when small: JOIN_BELOW); it waits for the outbox in
                    trio.lowlevel.wait_task_rescheduled, and whatever queues on the outbox or
                    closes it wakes it (Agent._wake; why: Agent._writer)

A merge window (``Config.merge_window``) holds Pushes in a list beside the outbox, without
waking the writer; when the window ends (the server's MergeClock, or a packet that must not
wait: a Response, heartbeat or Kick) the list goes onto the outbox as one item, behind what
was queued before it and ahead of what follows, so order is kept.

Every packet in either direction goes through the connection's ``wire.Connection``, so nothing
reaches the client out of protocol order (no Push before the handshake response). Everything
that sends to the client (handlers, broadcasts, the heartbeat sweeper, the reader's handshake
answer) puts whole packets on the outbox without waiting: FIFO order needs no lock.

Slow consumers are judged by what the client fails to read, never by what the server has not
had a chance to write yet: the policy applies to a Push when ``outbox_size`` messages or
``outbox_bytes`` bytes are queued *while a write has waited on the client for
``slow_consumer_after`` seconds*; under the kick policy the server's clock judges that wait
when its time comes, even if nothing more is queued for the client. Responses, heartbeats and
Kicks are never dropped that way; the only other bound is memory: past ``max_outbox_bytes``
queued, whatever the reason, a Push meets the policy (kicked "slow consumer", or dropped
under the drop policy). A Response, heartbeat or Kick still queues past it, by up to what
the Requests the reader has taken may be answered with (``max_pending_requests`` packets):
Pushes that filled the outbox never cost a client its answers; past that it is kicked.

A client's own Requests are paced rather than judged (backpressure): before taking a Request,
the reader waits while ``outbox_bytes`` are queued for the client (resuming below half of it)
or ``max_pending_requests`` of its Requests are unanswered; the client's next bytes wait in the
socket and TCP's flow control holds it back. So an honest client pipelining more answers than
``max_outbox_bytes`` is served as fast as it reads. Meanwhile its silence counts against it only
once the writer has waited on it for the heartbeat timeout; under the kick policy, a writer
waiting ``slow_consumer_after`` with the outbox over its soft bounds kicks it "slow consumer".
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ._config import Config, SlowConsumerPolicy
from ._errors import HandshakeRejected, MessageTooLarge
from ._fdstream import coalesce
from ._log import RateLimitedLog
from ._merge import MergeClock
from ._pipeline import PipelineMessage
from ._ratelimit import RateLimiter, Verdict
from ._router import CODE_RATE_LIMITED, Router
from ._session import Broadcast, Session
from ._stats import Counters
from ._util import call_user, passes_through
from .wire import (
    CODE_OK,
    CODE_SERVER_ERROR,
    TIMEOUT_INTERVALS,
    ConnectionClosed,
    Handshake,
    HandshakeAck,
    HandshakeResponse,
    Heartbeat,
    Kick,
    LocalProtocolError,
    MessageCodec,
    MessageType,
    Notify,
    RemoteProtocolError,
    Request,
    Role,
    State,
)
from .wire import Connection as WireConnection

__all__ = ["EVICTED", "JOIN_BELOW", "MAX_WRITE", "Agent", "fitting_kick"]

#: The most bytes the writer joins into one write: over WebSocket, one message. Every client
#: trionano ships accepts messages of 4 * 64 KiB + 64 bytes; a single packet larger than this
#: (with a raised ``max_packet_size``) is written alone.
MAX_WRITE: Final = 256 * 1024
#: The most bytes of several packets the writer joins into one buffer of its own: more are
#: written vectored (``writev``, FdStream's ``send_parts_nowait``/``send_all_parts``), as the
#: packets themselves, when the stream can; a stream that cannot (TLS) is handed them in
#: turns, runs of small ones joined up to this. A writer waiting for a client that does not
#: read so holds at most this much memory of its own beside the packets it writes (and, over
#: TLS, their encryption), which a broadcast shares among its members (1,000 stalled members of a group once held 1,000
#: joined copies of up to MAX_WRITE each: 256 MB).
JOIN_BELOW: Final = 16 * 1024
#: Events the reader handles per wake-up before it lets other tasks run.
EVENTS_PER_WAKEUP: Final = 64
#: Writes the writer makes in a row without waiting before it lets other tasks run.
WRITES_PER_CHECKPOINT: Final = 16
#: The Kick reason (and ``statistics().kicks`` key) of a connection evicted from its handshake.
EVICTED: Final = "handshake evicted"
_HEARTBEAT: Final = Heartbeat()
_WORKING: Final = State.WORKING
_NEVER: Final = math.inf  # no queued packet has asked for a merge window


def fitting_kick(reason: str, max_body: int) -> Kick:
    """A Kick with ``reason``, or with its longest prefix whose Kick fits ``max_body`` bytes
    and ``...`` after it (a JSON escape takes at most 12 bytes per character)."""
    kick = Kick(reason)
    if len(reason) * 12 + 16 <= max_body or len(kick.encode()) <= max_body:
        return kick
    fits, too_long = 0, len(reason)  # a bisection: the encoding grows with the prefix
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if len(Kick(reason[:middle] + "...").encode()) <= max_body:
            fits = middle
        else:
            too_long = middle
    return Kick(reason[:fits] + "...")


class _OverRate(Exception):
    """A connection's WebSocket control frames went over its rate limit for good: kick it."""


class Agent:
    """A connection's reader, writer and outbox; the :class:`~trionano.Session`'s network
    entity. Built and run by its server (``make_session`` gives it its session); never by
    users. ``on_working(agent)`` runs when the client acknowledges the handshake, ``on_ended(agent)``
    once the connection's tasks have ended (the session is over: nothing more is read or sent),
    before a WebSocket's goodbye (its close handshake, up to a second, or to the shutdown's
    cut); ``limiter`` (default: a fresh one of ``config.rate_limit``) is its inbound rate limiter."""

    __slots__ = (
        "_clock",
        "_close_by",
        "_codec",
        "_config",
        "_counters",
        "_draining",
        "_final",
        "_finished",
        "_flush_at",
        "_flushed",
        "_goodbye",
        "_held",
        "_held_bytes",
        "_held_window",
        "_judge_at",
        "_kick",
        "_limiter",
        "_log",
        "_low_bytes",
        "_max_bytes",
        "_max_kept_bytes",
        "_max_pending",
        "_on_ended",
        "_on_working",
        "_outbound_pipeline",
        "_parked",
        "_pending",
        "_queued",
        "_queued_bytes",
        "_reader_scope",
        "_receive",
        "_resume",
        "_router",
        "_send",
        "_session",
        "_session_id",
        "_slow_after",
        "_soft_bytes",
        "_soft_limit",
        "_stream",
        "_timeout_span",
        "_window",
        "_write_started",
        "_writer_scope",
        "_writing",
        "closed",
        "conn",
        "remote_address",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        remote_address: str,
        *,
        config: Config,
        codec: MessageCodec,
        router: Router,
        counters: Counters,
        log: RateLimitedLog,
        make_session: Callable[[Agent], Session],
        on_working: Callable[[Agent], None],
        on_ended: Callable[[Agent], None],
        clock: MergeClock | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._stream = stream
        self.remote_address: Final = remote_address
        self._config = config
        self._codec = codec
        self._router = router
        self._counters = counters
        self._log = log
        self._on_working = on_working
        self._on_ended = on_ended
        self._outbound_pipeline = config.pipeline.outbound  # its .funcs: tested on every answer
        self.conn: Final = WireConnection(Role.SERVER, heartbeat=config.heartbeat, codec=codec, now=trio.current_time())
        # the outbox: a packet, or the packets a merge window held (written in one write)
        self._send, self._receive = trio.open_memory_channel[bytes | list[bytes]](float("inf"))
        # the writer, while it waits for the outbox (see _writer); whatever queues or closes
        # wakes it (_wake)
        self._parked: trio.lowlevel.Task | None = None
        self._queued = 0  # packets in the outbox (and held for a merge window)
        self._queued_bytes = 0  # and their bytes
        self._writing = False  # a write is under way (it may be waiting for the client)
        self._write_started = 0.0
        self._soft_limit = config.outbox_size
        self._soft_bytes = config.outbox_bytes
        self._max_bytes = config.max_outbox_bytes
        # what a Response, heartbeat or Kick may still queue past max_outbox_bytes: the answers
        # of the Requests the reader has taken (at most max_pending_requests, each at most a
        # packet): Pushes that filled the outbox must not cost a client its answers
        self._max_kept_bytes = config.max_outbox_bytes + config.max_pending_requests * (config.max_packet_size + 64)
        self._kick = config.slow_consumer is SlowConsumerPolicy.KICK
        self._judge_at = _NEVER  # under the kick policy, when the writer's wait is to be judged
        # backpressure on Requests (see the module docstring): the reader waits on _resume
        self._pending = 0  # Requests read and not yet answered
        self._max_pending = config.max_pending_requests
        self._low_bytes = config.outbox_bytes // 2  # the reader resumes below this
        self._resume: trio.Event | None = None  # set while the reader waits
        self._timeout_span = TIMEOUT_INTERVALS * config.heartbeat  # a writer stuck this long: gone
        self._slow_after = config.slow_consumer_after
        limit = config.rate_limit
        if limiter is None and limit is not None:
            limiter = RateLimiter(limit.rate, limit.burst, limit.kick_after)
        self._limiter = limiter if limit is not None else None
        # a WebSocket's frames without pomelo data (pings, pongs, empty messages) are charged
        # to the same limit as packets
        limit_frames: Callable[[Callable[[], bool]], None] | None = getattr(stream, "limit_frames", None)
        if limit_frames is not None and self._limiter is not None:
            limit_frames(self._charge_frame)
        self.closed = False  # no more messages are accepted
        self._final: bytes | None = None  # a Kick, written after the outbox drains
        self._draining = False  # shutting down: reading has stopped, the Kick waits for the answers
        self._finished = False  # the closing sequence has begun
        self._flushed = False  # the writer wrote all it was given, its Kick last (or the peer left)
        self._close_by = _NEVER  # the goodbye (a WebSocket's close handshake) ends by then (Trio time)
        self._goodbye: trio.CancelScope | None = None  # the goodbye, while it is under way
        self._reader_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        # merge window (Config.merge_window): Pushes held here, off the outbox, until _flush_at
        self._window = config.merge_window or 0.0  # what a Push asks for
        self._held: list[bytes] = []  # the packets held for the window, in order (after the outbox's)
        self._held_bytes = 0
        self._held_window = 0.0  # the window the first held packet asked for
        self._flush_at = _NEVER  # the earliest deadline the held packets asked for
        self._clock = clock  # the server's MergeClock, which ends a window (flush_due)
        # the session's entity is this agent: the agent forgets it once run() ends, so a closed
        # connection is freed by reference counting (no cycle for the garbage collector)
        self._session: Session | None = make_session(self)
        self._session_id: Final = self._session.id

    def __repr__(self) -> str:
        return f"<Agent session={self._session_id} {self.remote_address} {self.conn.state.name}>"

    @property
    def session(self) -> Session:
        """The connection's session, until :meth:`run` has returned (the agent then lets go of
        it: a closed connection leaves no reference cycle behind; the session, which users may
        keep, still reaches this agent, closed). Raises RuntimeError after that."""
        session = self._session
        if session is None:
            raise RuntimeError(f"connection {self._session_id} from {self.remote_address} has ended")
        return session

    @property
    def limiter(self) -> RateLimiter | None:
        """The connection's inbound rate limiter (None: unlimited); its server's to remember."""
        return self._limiter

    @property
    def queued(self) -> int:
        """Packets in the outbox now."""
        return self._queued

    # -- life -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until either side closes it. Never raises for the peer's
        misbehaviour: protocol errors are kicked, transport errors end the connection."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery.cancel_scope, name=f"trionano writer {self.remote_address}")
                outcome: Kick | None = None
                with self._reader_scope:
                    outcome = await self._reader()
                if self._draining:  # shutting down: the Requests read are answered, then the Kick
                    await self._answered()
                    if not self._finished:
                        self._counters.kicked("shutdown")
                        self._send_kick(Kick("shutdown"))
                elif outcome is None:
                    self._finish(None, discard=False)  # the peer hung up: flush what is queued, briefly
                elif not self._finished:
                    # Kick from the main lane, behind the requests decoded before, so their
                    # responses go out first; reading has stopped already.
                    kick = outcome
                    pending = self._router.in_order(lambda: self._send_kick(kick))
                    if pending is not None:
                        lane, task = pending
                        try:
                            await lane.push(task)
                        except trio.ClosedResourceError:
                            self._send_kick(kick)
        finally:
            self._closing()
            self._on_ended(self)  # the session's end: its close hooks need not wait for the goodbye
            self._session = None  # nothing of the connection needs it any more: no cycle is left
            # a WebSocket says goodbye (close frame, the peer's), for a second at most, and
            # never past the shutdown's deadline (close_by): a connection cut then closes at once
            said = False  # the goodbye was not cut short
            try:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = min(trio.current_time() + min(self._config.close_timeout, 1.0), self._close_by)
                    self._goodbye = scope
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        await self._stream.aclose()
                self._goodbye = None
                said = not scope.cancelled_caught
                if not said:
                    await trio.aclose_forcefully(self._stream)
            finally:  # counted even when the stop's cancellation (its grace over) ends this close
                if self._close_by != _NEVER and not (said and self._flushed):
                    self._counters.connections_cut += 1  # a shutdown closed it without its goodbye

    async def _reader(self) -> Kick | None:
        """Read until the peer hangs up (None) or must be kicked (the Kick to send)."""
        conn = self.conn
        receive_some = self._stream.receive_some
        read_size = self._config.read_size
        dispatch = self._router.dispatch
        session = self.session
        limiter = self._limiter
        current_time = trio.lowlevel.current_clock().current_time  # trio.current_time, two calls fewer
        receive_requests = conn.receive_requests
        dispatch_request = self._router.dispatch_request
        handshake_scope = trio.CancelScope(deadline=current_time() + self._config.handshake_timeout)
        try:
            with handshake_scope:
                while True:
                    data = await receive_some(read_size)
                    now = current_time()
                    budget = EVENTS_PER_WAKEUP
                    requests = receive_requests(data, now)
                    if requests is not None:
                        # the fused fast path: only whole Requests were read (the common case),
                        # decoded without event objects, each handed to the router at once
                        for mid, route, body in requests:
                            if self._pending >= self._max_pending or self._queued_bytes >= self._soft_bytes:
                                await self._backpressure()
                            self._pending += 1
                            if limiter is not None:
                                verdict = limiter.check(now)
                                if verdict is not Verdict.OK:
                                    if verdict is Verdict.KICK:
                                        return self._rate_kick()
                                    self._counters.dropped_rate += 1
                                    self._router.answer_error(session, mid, CODE_RATE_LIMITED, "rate limit exceeded")
                                    continue
                            pending = dispatch_request(session, mid, route, body)
                            if pending is not None:
                                await pending[0].push(pending[1])  # the lane is full: wait for room
                            budget -= 1
                            if not budget:
                                budget = EVENTS_PER_WAKEUP
                                await trio.lowlevel.checkpoint()
                        continue
                    conn.receive_data(data, now)
                    while True:
                        event = conn.next_event()
                        if event is None:
                            break
                        kind = type(event)
                        if kind is Request:
                            if self._pending >= self._max_pending or self._queued_bytes >= self._soft_bytes:
                                await self._backpressure()
                            self._pending += 1
                        # the handshake's two packets are not rate-limited: a connection makes
                        # them once (again is a protocol error), and one that inherits its
                        # peer's spent budget (PeerBudgets) must still be answered or kicked
                        if limiter is not None and kind is not Handshake and kind is not HandshakeAck:
                            verdict = limiter.check(now)
                            if verdict is not Verdict.OK:
                                if verdict is Verdict.KICK:
                                    return self._rate_kick()
                                self._refuse(event)
                                continue
                        if kind is Request or kind is Notify:
                            pending = dispatch(session, event)  # type: ignore[arg-type]
                            if pending is not None:
                                await pending[0].push(pending[1])  # the lane is full: wait for room
                        elif kind is Handshake:
                            await self._handshake(event)  # type: ignore[arg-type]
                        elif kind is HandshakeAck:
                            handshake_scope.deadline = float("inf")
                            self._on_working(self)
                        elif kind is ConnectionClosed:
                            return None
                        budget -= 1
                        if not budget:  # bounded work per wake-up: a flood cannot starve others
                            budget = EVENTS_PER_WAKEUP
                            await trio.lowlevel.checkpoint()
                    if not data:
                        return None
        except RemoteProtocolError as exc:
            self._counters.protocol_errors += 1
            self._log.info("protocol error", "protocol error from %s: %s; kicking", self.remote_address, exc)
            return exc.event_hint if isinstance(exc.event_hint, Kick) else Kick("protocol error")
        except _OverRate:  # a WebSocket's control frames (_charge_frame)
            return self._rate_kick()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None  # reset by peer, or closed under us
        # only the handshake deadline gets here
        self._log.info("handshake timeout", "%s did not complete a handshake in time", self.remote_address)
        self._counters.kicked("handshake timeout")
        return Kick("handshake timeout")

    async def _backpressure(self) -> None:
        """Take no Request until the outbox is under half its ``outbox_bytes`` watermark and
        fewer than ``max_pending_requests`` are unanswered: the client's next bytes stay in
        the socket, and TCP's flow control holds it back. While the reader waits, the
        client's silence is not held against it as long as the writer makes progress (see
        :meth:`heartbeat`); under the kick policy, a writer that has waited
        ``slow_consumer_after`` on the client with the outbox over its soft bounds kicks it
        "slow consumer", as a Push queued then would."""
        kick = self._config.slow_consumer is SlowConsumerPolicy.KICK
        try:
            while self._pending >= self._max_pending or self._queued_bytes >= self._low_bytes:
                resume = self._resume = trio.Event()
                with trio.move_on_after(self._slow_after):
                    await resume.wait()
                if (  # under the kick policy, a client that does not read what it asked for is judged too
                    kick
                    and not resume.is_set()
                    and self._writing
                    and trio.current_time() - self._write_started >= self._slow_after
                    and (self._queued >= self._soft_limit or self._queued_bytes >= self._soft_bytes)
                ):
                    self._slow_consumer(droppable=False)  # kicks; the reader is cancelled
                    await trio.lowlevel.checkpoint()
        finally:
            self._resume = None

    def _maybe_resume(self) -> None:
        """Wake the reader waiting in :meth:`_backpressure` once it may take Requests again."""
        if self._pending < self._max_pending and self._queued_bytes < self._low_bytes:
            self._resume.set()  # type: ignore[union-attr]

    def _rate_kick(self) -> Kick:
        self._log.warning(
            "rate limit", "session %d from %s kicked: over its rate limit", self._session_id, self.remote_address
        )
        self._counters.kicked("rate limit")
        return Kick("rate limit")

    def _charge_frame(self) -> bool:
        """A WebSocket frame that carries no pomelo data (a ping, a pong, an empty message; the
        stream's ``limit_frames``) charged to the rate limit like a packet: True to take it,
        False when refused (dropped and counted: a ping goes unanswered); raises _OverRate
        once the connection is to be kicked (the reader kicks it)."""
        verdict = self._limiter.check(trio.current_time())  # type: ignore[union-attr]  # set when called
        if verdict is Verdict.OK:
            return True
        if verdict is Verdict.KICK:
            raise _OverRate
        self._counters.dropped_rate += 1
        return False

    def _refuse(self, event: object) -> None:
        """A packet over the rate limit: dropped and counted; a Request is answered 429."""
        self._counters.dropped_rate += 1
        if type(event) is Request and self.conn.state is _WORKING:
            self._router.answer_error(self.session, event.id, CODE_RATE_LIMITED, "rate limit exceeded")

    async def _handshake(self, handshake: Handshake) -> None:
        code = CODE_OK
        validator = self._config.handshake_validator
        if validator is not None:
            try:
                await call_user(validator, self.session, handshake)
            except HandshakeRejected as exc:
                code = exc.code
                self._log.info("handshake rejected", "handshake from %s rejected: %s", self.remote_address, exc)
            except BaseException as exc:  # a user's validator: refuse this client, serve on
                if passes_through(exc):
                    raise
                code = CODE_SERVER_ERROR
                self._log.exception(
                    "handshake validator", "handshake validator failed for %s", self.remote_address, exc_info=exc
                )
        if self.conn.state is State.CLOSED:
            return  # closed (kicked, shut down) while the validator ran
        if code != CODE_OK:
            self._enqueue(self.conn.send(HandshakeResponse(code=code)), droppable=False)
            self._finish(None, discard=False)
            self._reader_scope.cancel()
            return
        config = self._config
        response = HandshakeResponse(
            heartbeat=config.heartbeat,
            servertime=int(time.time()),  # now, not the startup time nano caches
            dictionary=config.routes or None,
            pomelo=config.pomelo_handshake,
        )
        self._enqueue(self.conn.send(response), droppable=False)

    async def _writer(self, agent_scope: trio.CancelScope) -> None:
        """Drain the outbox until it is closed and empty, writing what is queued (at most
        MAX_WRITE) at once, then write the final Kick, if any. Up to JOIN_BELOW bytes of
        packets are joined into one write; more are handed to a stream that writes vectored
        as the packets themselves: a broadcast's packets are shared by every member, and a
        client that does not read never has a joined copy of them waiting for it.

        It waits for the outbox with ``trio.lowlevel.wait_task_rescheduled`` and an abort
        function bound once per agent, and whatever queues on the outbox or closes it wakes
        it (:meth:`_wake`), rather than in ``MemoryReceiveChannel.receive``: a task waiting
        there holds nine new objects the cyclic collector tracks (two coroutines, the abort
        closure, its cells and tuple, the trap and its ``__dict__``, a generator) until its
        next packet, this wait four; with 50,000 members waiting for a broadcast, what the
        collector walks (bench/push.py, buckets)."""
        receive = self._receive
        task = trio.lowlevel.current_task()
        abort = self._unpark  # bound once, in the writer (the agent holding it would be a cycle)
        wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
        stream = self._stream
        write = stream.send_all
        # a stream that can write without waiting (FdStream) is tried first: no coroutine, no
        # checkpoint per write while the client reads; every WRITES_PER_CHECKPOINT writes in a
        # row without a wait, the writer lets other tasks run
        write_nowait: Callable[[bytes], int] | None = getattr(stream, "send_some_nowait", None)
        # ... and one that writes vectored (FdStream, the WebSocket over it) is handed the
        # packets themselves, not a copy joined for this connection (see JOIN_BELOW)
        write_parts_nowait: Callable[[list[bytes]], int] | None = getattr(stream, "send_parts_nowait", None)
        write_parts: Callable[[list[bytes], int], Awaitable[None]] | None = getattr(stream, "send_all_parts", None)
        if write_parts is None:
            write_parts_nowait = None
        budget = WRITES_PER_CHECKPOINT
        carry: bytes | list[bytes] | None = None
        carry_size = 0
        item: bytes | list[bytes]
        more: bytes | list[bytes]
        try:
            with self._writer_scope:
                while True:
                    if carry is not None:
                        item, size, carry = carry, carry_size, None
                    else:
                        try:
                            while True:
                                try:
                                    item = receive.receive_nowait()
                                    break
                                except trio.WouldBlock:
                                    pass
                                # wait for _wake (see the docstring), outside the except
                                # clause (an await inside it keeps the exception, its
                                # traceback and frame alive); a wait lets others run
                                budget = WRITES_PER_CHECKPOINT
                                self._parked = task
                                await wait_task_rescheduled(abort)
                        except trio.EndOfChannel:
                            break
                        if type(item) is list:  # a merge window's packets (at most MAX_WRITE)
                            self._queued -= len(item)
                            size = sum(map(len, item))
                        else:
                            self._queued -= 1
                            size = len(item)
                        self._queued_bytes -= size
                    # what is queued, up to MAX_WRITE, as references to the packets (a
                    # broadcast's are shared by every member: never copied while they wait here)
                    parts: list[bytes] | None = item if type(item) is list else None
                    while self._queued > len(self._held):
                        try:
                            more = receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        if type(more) is list:
                            self._queued -= len(more)
                            more_size = sum(map(len, more))
                        else:
                            self._queued -= 1
                            more_size = len(more)
                        self._queued_bytes -= more_size
                        if size + more_size > MAX_WRITE:
                            carry, carry_size = more, more_size
                            break
                        if parts is None:
                            parts = [item]  # type: ignore[list-item]
                        if type(more) is list:
                            parts += more
                        else:
                            parts.append(more)  # type: ignore[arg-type]
                        size += more_size
                    if self._resume is not None:  # the reader waits for the outbox to drain
                        self._maybe_resume()
                    self._counters.writes += 1
                    if parts is None:
                        data: bytes = item  # type: ignore[assignment]
                    elif size <= JOIN_BELOW:
                        data = b"".join(parts)  # small: one buffer is cheaper than several
                    elif write_parts_nowait is None:  # no vectored writes (TLS): in turns, none large
                        self._writing = True
                        self._write_started = trio.current_time()
                        if self._kick and self._judge_at == _NEVER and self._over_soft_bounds():
                            self._judge_later()
                        for chunk in coalesce(parts, JOIN_BELOW):
                            await write(chunk)
                        self._writing = False
                        budget = WRITES_PER_CHECKPOINT
                        continue
                    else:  # vectored: what waits for the client is the packets, not a copy
                        try:
                            sent = write_parts_nowait(parts)
                        except trio.WouldBlock:
                            sent = 0
                        if sent == size:
                            budget -= 1
                            if not budget:
                                budget = WRITES_PER_CHECKPOINT
                                await trio.lowlevel.checkpoint()
                            continue
                        self._writing = True
                        self._write_started = trio.current_time()
                        if self._kick and self._judge_at == _NEVER and self._over_soft_bounds():
                            self._judge_later()
                        await write_parts(parts, sent)  # type: ignore[misc]  # set with write_parts_nowait
                        self._writing = False
                        budget = WRITES_PER_CHECKPOINT
                        continue
                    if write_nowait is not None:
                        try:
                            sent = write_nowait(data)
                        except trio.WouldBlock:
                            sent = 0
                        if sent == len(data):
                            budget -= 1
                            if not budget:
                                budget = WRITES_PER_CHECKPOINT
                                await trio.lowlevel.checkpoint()
                            continue
                        data = memoryview(data)[sent:]  # type: ignore[assignment]
                    self._writing = True  # the client is not reading: what the slow-consumer rule watches
                    self._write_started = trio.current_time()
                    if self._kick and self._judge_at == _NEVER and self._over_soft_bounds():
                        self._judge_later()
                    await write(data)
                    self._writing = False
                    budget = WRITES_PER_CHECKPOINT
                if self._final is not None:
                    self._counters.writes += 1
                    await write(self._final)
            self._flushed = not self._writer_scope.cancelled_caught
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._flushed = True  # the peer is gone: nothing is cut short
        finally:
            self._writing = False
            self.closed = True
            agent_scope.cancel()

    def _wake(self) -> None:
        """Wake the writer if it waits for the outbox (call after queuing on it or closing
        it: a missed wake leaves the packet unwritten)."""
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)

    def _unpark(self, raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        """The writer's wait is cancelled: it no longer waits (its abort function)."""
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    # -- merge window ------------------------------------------------------------------------

    def _hold(self, packet: bytes, window: float) -> bool:
        """Hold ``packet`` for a merge window of ``window`` seconds, off the outbox: the writer
        is not woken for it. The window ends (:meth:`_flush_window`, which hands every held
        packet to the writer as one item) at the earliest deadline a held packet asked for
        (the server's MergeClock calls :meth:`flush_due`), or before a packet that must not
        wait (a Response, heartbeat, Kick), a full write's worth or a close. Returns False
        (the caller queues ``packet`` at once) without a running clock, or when the outbox
        has packets the writer is about to write anyway."""
        held = self._held
        size = len(packet)
        if held:
            if self._held_bytes + size <= MAX_WRITE:
                held.append(packet)
                self._queued += 1
                self._queued_bytes += size
                self._held_bytes += size
                if self._held_bytes == MAX_WRITE:  # a full write's worth: written now
                    self._flush_window()
                elif window < self._held_window:  # it may ask for an earlier deadline
                    at = trio.current_time() + window
                    if at < self._flush_at:
                        self._flush_at = at
                        self._clock.wake_at(at, self)  # type: ignore[union-attr]
                return True
            self._flush_window()  # a full write's worth: written now; this packet opens a window
            held = self._held
        elif self._queued or self.closed:
            return False
        clock = self._clock
        if clock is None or not clock.running or size >= MAX_WRITE:
            return False
        held.append(packet)
        self._held_bytes = size
        self._held_window = window
        self._queued += 1
        self._queued_bytes += size
        self._flush_at = at = trio.current_time() + window
        clock.wake_at(at, self)
        return True

    def flush_due(self, now: float) -> bool:
        """The MergeClock's call: end the window if its deadline has come by ``now``, and judge
        a writer's wait (:meth:`_judge_later`) whose time has come; returns whether it ended
        a window or kicked (False: the window had ended already, or a later one holds)."""
        done = False
        if self._held and self._flush_at <= now:
            self._flush_window()
            done = True
        if self._judge_at <= now:
            self._judge_at = _NEVER
            if self._writing and not self._finished and self._over_soft_bounds():
                if now - self._write_started >= self._slow_after:
                    self._slow_consumer(droppable=True)  # the kick policy: kicked "slow consumer"
                    return True
                self._judge_later()  # a later write waits: judged when its time comes
        return done

    def _over_soft_bounds(self) -> bool:
        return self._queued >= self._soft_limit or self._queued_bytes >= self._soft_bytes

    def _judge_later(self) -> None:
        """Under the kick policy, have the server's clock judge the writer's wait once it has
        waited ``slow_consumer_after``: a client that stops reading with its outbox over the
        soft bounds is kicked then, even if nothing more is queued for it (a Push queued
        meanwhile judges it too, in :meth:`_enqueue`)."""
        clock = self._clock
        if clock is not None and clock.running:
            self._judge_at = at = self._write_started + self._slow_after
            clock.wake_at(at, self)

    def _flush_window(self) -> None:
        """Hand the held packets to the writer, one item (written in one write)."""
        held = self._held
        self._held = []
        self._held_bytes = 0
        self._flush_at = _NEVER
        try:
            self._send.send_nowait(held if len(held) > 1 else held[0])
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._counters.dropped_closed += len(held)
            self._queued -= len(held)
            self._queued_bytes -= sum(map(len, held))
            return
        if self._parked is not None:
            self._wake()

    # -- sending (the NetworkEntity protocol) -----------------------------------------------

    def _enqueue(self, packet: bytes, *, droppable: bool = True, window: float = 0.0) -> bool:
        """Queue ``packet`` for the writer, to be written within ``window`` seconds (the merge
        window; 0: at once, after whatever a window held). A Push (``droppable``) meets the
        slow-consumer policy when the client does not read (see the module docstring);
        anything meets it past ``max_outbox_bytes``. Returns whether it was queued."""
        if self._queued >= self._soft_limit or self._queued_bytes >= self._soft_bytes:
            if self._queued_bytes >= self._max_bytes and (droppable or self._queued_bytes >= self._max_kept_bytes):
                return self._slow_consumer(droppable)
            if self._writing:
                if droppable and trio.current_time() - self._write_started >= self._slow_after:
                    return self._slow_consumer(droppable)
                if self._kick and self._judge_at == _NEVER:
                    self._judge_later()
        if window:
            if self._hold(packet, window):
                return True
        elif self._held:
            self._flush_window()  # what the window held goes first, now
        try:
            self._send.send_nowait(packet)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._counters.dropped_closed += 1
            return False
        self._queued += 1
        self._queued_bytes += len(packet)
        if self._parked is not None:
            self._wake()
        return True

    def _slow_consumer(self, droppable: bool) -> bool:
        """The client does not read what is queued: apply the policy (a message that may not be
        dropped, such as a Response, kicks under either policy). Returns False (the message
        was not queued)."""
        if self._config.slow_consumer is SlowConsumerPolicy.KICK or not droppable:
            self._log.warning("slow consumer", "session %d is a slow consumer: kicked", self._session_id)
            self._counters.kicked("slow consumer")
            self._send_kick(Kick("slow consumer"), discard=True)
            return False
        self._counters.dropped_slow += 1
        self._log.warning("slow consumer", "session %d does not read its messages: dropping", self._session_id)
        return False

    def _outbound(self, session: Session, kind: MessageType, route: str, body: bytes, mid: int = 0) -> bytes | None:
        """Run the outbound pipeline; the body to send, or None when a function refused it."""
        message = PipelineMessage(kind, route, body, mid)
        try:
            self._config.pipeline.outbound.process(session, message)
        except BaseException as exc:  # a user's pipeline function: drop the message, go on
            if passes_through(exc):
                raise
            self._counters.dropped_pipeline += 1
            self._log.warning("pipeline", "outbound pipeline refused %s for session %d: %r", route, session.id, exc)
            return None
        return message.data

    def _not_working(self) -> bool:
        """True (and counted) when the connection cannot take Data packets now (before the
        handshake is acknowledged; after its Kick). Raises trio.BrokenResourceError once
        closed."""
        if self.closed:
            raise trio.BrokenResourceError("the session is closed")
        if not self.conn.can_send_data:
            self._counters.dropped_closed += 1
            return True
        return False

    def _too_large(self, body: bytes) -> MessageTooLarge:
        return MessageTooLarge(len(body), self._codec.max_body)

    def send_push(self, session: Session, route: str, body: bytes) -> bool:
        """Queue a Push. Returns whether it was queued. Raises trio.BrokenResourceError once
        closed, MessageTooLarge."""
        if self._not_working():
            return False
        if self._config.pipeline.outbound.funcs:
            refined = self._outbound(session, MessageType.PUSH, route, body)
            if refined is None:
                return False
            body = refined
        return self._push_now(route, body, self._window)

    def send_broadcast(self, session: Session, broadcast: Broadcast) -> bool:
        """Queue one Push of a broadcast, encoded once per codec and shared. Returns whether
        it was queued. Raises trio.BrokenResourceError once closed, MessageTooLarge."""
        window = self._window if broadcast.merge_window is None else broadcast.merge_window
        if broadcast.encoder is self._codec and not self._outbound_pipeline.funcs:  # the common case
            if self.closed:
                raise trio.BrokenResourceError("the session is closed")
            try:
                packet = self.conn.send_encoded(broadcast.packet)
            except LocalProtocolError:
                if self._not_working():  # not WORKING (yet, or any more): counted, not sent
                    return False
                raise
            held = self._held
            if (
                held  # a merge window is open: joined at once (what _enqueue and _hold do, inlined)
                and window >= self._held_window
                and self._held_bytes + len(packet) < MAX_WRITE
                and self._queued < self._soft_limit
                and self._queued_bytes < self._soft_bytes
            ):
                held.append(packet)
                size = len(packet)
                self._held_bytes += size
                self._queued += 1
                self._queued_bytes += size
                self._counters.pushes_out += 1
                return True
            if self._enqueue(packet, window=window):
                self._counters.pushes_out += 1
                return True
            return False
        if self._not_working():
            return False
        if self._config.pipeline.outbound.funcs:
            refined = self._outbound(session, MessageType.PUSH, broadcast.route, broadcast.body)
            if refined is None:
                return False
            if refined is not broadcast.body:  # rewritten for this session: its own encoding
                return self._push_now(broadcast.route, refined, window)
        if broadcast.encoder is not self._codec:
            try:
                broadcast.packet = self.conn.send_push(broadcast.route, broadcast.body)
            except LocalProtocolError:
                raise self._too_large(broadcast.body) from None
            broadcast.encoder = self._codec
            self._counters.encoded += 1
            return self._enqueue_push(broadcast.packet, window)
        return self._enqueue_push(self.conn.send_encoded(broadcast.packet), window)

    def _push_now(self, route: str, body: bytes, window: float) -> bool:
        try:
            packet = self.conn.send_push(route, body)
        except LocalProtocolError:
            raise self._too_large(body) from None
        self._counters.encoded += 1
        return self._enqueue_push(packet, window)

    def _enqueue_push(self, packet: bytes, window: float) -> bool:
        if self._enqueue(packet, window=window):
            self._counters.pushes_out += 1
            return True
        return False

    def send_response(self, session: Session, mid: int, body: bytes) -> bool:
        """Queue a Response to request ``mid``. Raises trio.BrokenResourceError once closed,
        MessageTooLarge."""
        # every request's answer comes here: _not_working's checks, folded into the encoding
        if self.closed:
            raise trio.BrokenResourceError("the session is closed")
        counted = self._pending > 0
        if counted:  # one Request fewer waits for its answer
            self._pending -= 1
            if self._resume is not None:
                self._maybe_resume()
        if self._outbound_pipeline.funcs:
            if self._not_working():
                return False
            refined = self._outbound(session, MessageType.RESPONSE, "", body, mid)
            if refined is None:
                return False
            body = refined
        try:
            packet = self.conn.send_response(mid, body)
        except LocalProtocolError:
            if self._not_working():  # not WORKING (yet, or any more): counted, not sent
                return False
            if counted:  # still unanswered: its error Response (413) is what answers it
                self._pending += 1
            raise self._too_large(body) from None
        counters = self._counters
        counters.encoded += 1
        # _enqueue, inlined for the common case (the outbox under its soft limits); a
        # Response is never dropped, only the memory bound applies to it
        if self._queued >= self._soft_limit or self._queued_bytes >= self._soft_bytes:
            if not self._enqueue(packet, droppable=False):
                return False
        else:
            if self._held:  # a merge window is open: a Response ends it, after what it held
                self._flush_window()
            try:
                self._send.send_nowait(packet)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                counters.dropped_closed += 1
                return False
            self._queued += 1
            self._queued_bytes += len(packet)
            if self._parked is not None:
                self._wake()
        counters.responses_out += 1
        return True

    def heartbeat(self, now: float) -> bool:
        """Kick a peer silent past its deadline (returns True), or send the heartbeat that
        is due."""
        conn = self.conn
        if now >= conn.timeout_deadline:
            if self._resume is not None and not (self._writing and now - self._write_started >= self._timeout_span):
                # the client's next packets wait in the socket for our reader (backpressure),
                # and the writer makes progress: silence of our making is not the client's
                conn.last_received = now
                return False
            if not self._finished:
                self._log.info(
                    "heartbeat timeout", "session %d from %s: heartbeat timeout", self._session_id, self.remote_address
                )
                self._counters.kicked("heartbeat timeout")
                self._send_kick(Kick("heartbeat timeout"))
                return True
        elif now >= conn.heartbeat_deadline and not self.closed:
            try:
                self._enqueue(conn.send(_HEARTBEAT, now), droppable=False)
            except LocalProtocolError:
                pass  # closed by a protocol error: the reader is kicking it
        return False

    def kick(self, reason: str) -> None:
        """Send a Kick with ``reason`` after what is queued, then close. Idempotent. A reason
        too long for one packet (``max_packet_size`` once JSON-encoded) is cut to fit and ends
        with ``...``."""
        if not self._finished:
            self._counters.kicked("application")
            self._send_kick(fitting_kick(reason, self._codec.max_body))

    def evict(self) -> None:
        """Kick with reason "handshake evicted": a newcomer needs the place of this connection,
        still in its handshake past the grace (see :mod:`trionano._admission`)."""
        if not self._finished:
            self._counters.kicked(EVICTED)
            self._send_kick(Kick(EVICTED))

    def shutdown(self, *, answers_first: bool = True, close_by: float = _NEVER) -> None:
        """Kick with reason "shutdown" (the server is stopping). With Requests read and not
        yet answered (and ``answers_first``), reading stops now and the Kick follows their
        answers (:meth:`run` sends it); without (or called again with ``answers_first``
        False: the server's time is running out), the Kick is queued at once. The
        connection's goodbye (a WebSocket's close handshake) ends by ``close_by`` (Trio time),
        whenever it starts: a connection still open then closes without it once its tasks
        are cancelled. Idempotent."""
        if close_by < self._close_by:
            self._close_by = close_by
            goodbye = self._goodbye
            if goodbye is not None:
                goodbye.deadline = min(goodbye.deadline, close_by)
        if self._finished:
            return
        if answers_first and self._pending and self.conn.state is _WORKING:
            if not self._draining:
                self._draining = True
                self._reader_scope.cancel()
            return
        self._counters.kicked("shutdown")
        self._send_kick(Kick("shutdown"))
        if self._resume is not None:  # run() waits in _answered: it finds the Kick sent
            self._resume.set()

    async def _answered(self) -> None:
        """Wait until every Request read has been answered (or the connection is finished)."""
        try:
            while self._pending and not self._finished:
                resume = self._resume = trio.Event()  # what send_response and the writer set
                await resume.wait()
        finally:
            self._resume = None

    def _send_kick(self, kick: Kick, *, discard: bool = False) -> None:
        if self._finished:
            return
        try:
            packet: bytes | None = self.conn.send(kick)
        except LocalProtocolError:
            packet = None  # the connection is already closed: just hang up
        self._finish(packet, discard=discard)

    def close(self) -> None:
        """Close after flushing what is queued (within ``close_timeout``). Idempotent."""
        self._finish(None, discard=False)

    def _finish(self, final: bytes | None, *, discard: bool) -> None:
        if self._finished:
            return
        self._finished = True
        self.closed = True
        if final is not None and self._parked is not None and not self._queued:
            final = self._write_now(final)
        self._final = final
        held = self._held
        if held:  # a merge window ends: what it held is written before the close, or dropped
            if discard:
                self._held = []
                self._held_bytes = 0
                self._flush_at = _NEVER
                self._queued -= len(held)
                self._counters.dropped_slow += len(held)
            else:
                self._flush_window()
        # the writer waits for an empty outbox and has no Kick to write: it only has to end
        idle = self._parked is not None and not self._queued and self._final is None
        self._send.close()
        self._wake()  # to find the outbox closed (EndOfChannel), once it has written what is left
        if discard:
            while True:
                try:
                    item = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                count = len(item) if type(item) is list else 1
                self._queued -= count
                self._counters.dropped_slow += count
            self._queued_bytes = 0
        self._reader_scope.cancel()
        if not idle:  # what is left to write gets close_timeout
            scope = self._writer_scope
            scope.deadline = min(scope.deadline, trio.current_time() + self._config.close_timeout)

    def _write_now(self, packet: bytes) -> bytes | None:
        """Write ``packet`` (a Kick) at once, from the caller, when the writer waits for an
        empty outbox (nothing can be written ahead of it) and the stream writes without
        waiting (TCP's FdStream): what is left for the writer (None: all of it written, or
        the peer is gone). A server kicking thousands of clients (a shutdown) so hands each
        its Kick before any connection's tasks have run; the writer only closes."""
        write_nowait: Callable[[bytes], int] | None = getattr(self._stream, "send_some_nowait", None)
        if write_nowait is None:
            return packet
        try:
            sent = write_nowait(packet)
        except trio.WouldBlock:
            return packet
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            return None
        self._counters.writes += 1
        return packet[sent:] or None

    def _closing(self) -> None:
        self.closed = True
        self._finished = True
        self.conn.close()
