"""Forwarding: a session's messages to the nodes hosting their routes (nano.md §5.4), the
replies that come back for this node's clients, and request-style calls between nodes.

Each session that forwards gets a :class:`Forwarder`: a bounded queue with its own task,
which sends its messages in order, each answered by its deadline. The reader that hands a
message over never waits (a hung member never stops it from reading heartbeats or serving
local routes); over the bound a Request is answered 503 and counted. Error answers made here
(404, 503) keep the session's order: while earlier Requests of the session wait or are in
flight, the error answer waits behind them in the queue (see :class:`Refusal`).

Every forwarded Request, on either path (a stream, or nano's unary HandleRequest answered by
the member's HandleResponse), waits in one table under an id of the gate's (:class:`InFlight`)
from the moment the gate reads it, and :meth:`Gate.expire_requests` answers it 503 at its
deadline, whether it was sent or still waits in the queue; the first answer takes it out of
the table, so any later one is dropped and counted. A notify is never dropped for being slow:
on a stream it waits in the stream, over a unary call the call waits while the member is in
the cluster (:meth:`Gate.member_gone` ends it).

Only the gate that owns a client session announces its end (SessionClosed to every member,
after the session's forwards have gone out); a stand-in's end is never announced.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio
from grpclib.const import Status

from .._errors import MessageTooLarge
from .._log import RateLimitedLog, client_text
from .._router import CODE_NOT_FOUND, CODE_TOO_LARGE, CODE_UNAVAILABLE
from .._server import Server
from .._session import Session, SessionKey
from ..wire import Notify, Request
from . import _codec as codec
from . import _frames as frames
from ._counters import Counters
from ._errors import (
    ClusterError,
    DeadlineExceeded,
    InvalidRequest,
    NodeStopping,
    NotFound,
    ServiceNotFound,
    Unavailable,
)
from ._generated import clusterpb as pb
from ._links import Link, Links
from ._membership import Membership
from ._owed import OwedCloses
from ._peers import Peers
from ._reach import Reachability
from ._remote import RemoteEntity
from ._tasks import Tasks

__all__ = ["Forward", "Forwarder", "Gate", "InFlight", "Refusal", "RemoteRoute"]

_logger = logging.getLogger("trionano.cluster")

#: A custom member selector (nano's ``WithCustomerRemoteServiceRoute``): (service, session,
#: the members hosting it) -> the member, or None to drop the message.
RemoteRoute = Callable[[str, Session, Sequence[pb.MemberInfo]], "pb.MemberInfo | None"]

#: per session: service -> the member address it is bound to (sticky routing, nano's Router)
_BINDINGS: Final = SessionKey[dict[str, str]]("trionano.cluster.bindings")


@attrs.frozen
class Forward:
    """One message for another node on behalf of a session: a Request (``mid`` > 0) or a
    Notify, queued at ``deadline`` - ``rpc_timeout`` (trio time). A Request is in the gate's
    table of Requests waiting for their answers from the moment it is queued, under the id
    ``rid`` (see :class:`InFlight`): answered 503 at its deadline even while it still waits in
    the queue, and then skipped."""

    member: str
    service: str
    route: str
    mid: int
    body: bytes
    deadline: float
    rid: int = 0


@attrs.frozen
class Refusal:
    """An error answer to Request ``mid`` (404: nobody hosts the route; 503: too many waiting),
    queued behind the session's earlier forwards so it never overtakes their answers: the
    queue's task gives it once every earlier Request is answered."""

    mid: int
    code: int
    text: str


class Forwarder:
    """One session's forwarding state: its queue, drained by :meth:`Gate._drain` (a task of
    the node, started on the first message that must wait: for a stream to open, for a unary
    call, or for the answers of the requests in flight ahead of it, as a refusal does), and
    its requests in flight on streams. While nothing waits in the queue, a
    message for a member with a live stream goes straight onto it (same order either way).
    ``gate`` and ``sid`` are what the members see: this node and the session's id, or, for
    a stand-in, its client's gate and id there (so replies go straight to that gate)."""

    def __init__(self, gate: str, sid: int, bound: int) -> None:
        self.gate = gate
        self.sid = sid
        self.queued = 0  # in the queue (forwards and refusals), or being sent by the task
        self.refusals = 0  # refusals in the queue
        self.in_flight = 0  # requests sent on a stream, not answered yet
        self.settled: trio.Event | None = None  # set when in_flight reaches 0, if one waits
        self.started = False
        # up to ``bound`` forwards waiting plus up to ``bound`` refusals behind them
        self.send, self.receive = trio.open_memory_channel[Forward | Refusal](2 * bound)

    @property
    def pending(self) -> int:
        """Forwards waiting or in flight (refusals not counted): what the bound limits."""
        return self.in_flight + self.queued - self.refusals

    def put(self, item: Forward | Refusal) -> bool:
        """Queue ``item``; False when the queue is full or closed."""
        try:
            self.send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        self.send.close()


#: per session: its forwarding queue, made on its first forward
_FORWARDER: Final = SessionKey[Forwarder]("trionano.cluster.forwarder")


@attrs.define(eq=False)
class InFlight:
    """A client's Request ``mid`` forwarded (or queued to be), waiting for its answer until
    ``deadline`` (trio time), whichever path it takes: on a stream (``link``; failed at once
    when the link goes down) a Response or Error frame answers it; over nano's unary calls
    (``link`` None) the member's HandleResponse does. ``sent``: handed to the member (a stream,
    or a HandleRequest call it took), as opposed to waiting in the session's queue. Either way
    it carries an id of the gate's (unique on this node), never the client's: a client that
    reuses a request id still gets each answer once, and an answer that comes after the
    Request was answered (503 at its deadline) is dropped and counted, never sent twice."""

    session: Session
    forwarder: Forwarder
    mid: int
    service: str
    route: str
    member: str
    link: Link | None
    deadline: float
    sent: bool = False


class Gate:
    """The forwarding role of a node (every node forwards: a gate its clients' messages, any
    node its sessions' ``session.rpc``). It is the server's remote router (:meth:`forward`,
    :meth:`rpc`); :meth:`attach` gives it the server."""

    def __init__(
        self,
        address: str,
        membership: Membership,
        peers: Peers,
        links: Links,
        tasks: Tasks,
        reach: Reachability,
        owed: OwedCloses,
        *,
        rpc_timeout: float,
        max_pending_forwards: int,
        remote_route: RemoteRoute | None,
        counters: Counters,
        log: RateLimitedLog,
    ) -> None:
        self.address = address
        self._membership = membership
        self._peers = peers
        self._links = links
        self._tasks = tasks
        self._reach = reach
        self._owed = owed
        self._rpc_timeout = rpc_timeout
        self._bound = max_pending_forwards
        self._remote_route = remote_route
        self._counters = counters
        self._log = log
        self._server: Server | None = None
        #: False until this node has registered with the master (the master: from its start);
        #: meanwhile a route hosted by no member known is answered 503, not 404
        self.joined = False
        self._calls: dict[int, tuple[trio.Event, list[bytes]]] = {}  # call id -> (answered, [body])
        self._in_flight: dict[int, InFlight] = {}  # the gate's request id -> a request on a stream
        self._deadlines: list[tuple[float, int]] = []  # a heap of (deadline, request id)
        self._request_ids = itertools.count(1)
        self._earlier = trio.Event()  # set when a deadline earlier than every other one arrives
        self._notifying: dict[str, set[trio.CancelScope]] = {}  # member -> its unary notify calls
        self._unannounced: dict[str, list[int]] = {}  # member -> session ends waiting for a stream to it

    def attach(self, server: Server) -> None:
        self._server = server
        server.on_session_closed(self.session_closed)

    @property
    def server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the gate has no server yet")
        return self._server

    # -- the remote router (called by the server's readers and handlers; never waits) ---------

    def forward(self, session: Session, message: Request | Notify) -> None:
        """Queue a client's message for the member hosting its route. A Request that cannot be
        queued is answered now: 404 (nobody hosts it), 503 (too many waiting; or this node has
        not joined the cluster yet: the master has not answered its registration, so it
        cannot know who hosts the route)."""
        route = message.route
        mid = message.id if type(message) is Request else 0
        service, dot, _ = route.rpartition(".")
        member = self._select(service, session) if dot else None
        if member is None:
            if not self.joined:
                self._counters.forwards_refused += 1
                self._log.warning("not joined", "cluster not joined yet: %s refused", client_text(route))
                if mid:
                    self._refuse(session, mid, CODE_UNAVAILABLE, f"{service} unavailable: cluster not joined yet")
                return
            self._counters.unknown_routes += 1
            self._log.warning("no member", "nano/handler: %s not found(forgot registered?)", client_text(route))
            if mid:
                self._refuse(session, mid, CODE_NOT_FOUND, f"route not found: {route}")
            return
        if not self._queue(session, member, service, route, mid, message.body) and mid:
            self._refuse(session, mid, CODE_UNAVAILABLE, f"{service} unavailable: too many messages waiting")

    def _refuse(self, session: Session, mid: int, code: int, text: str) -> None:
        """Answer Request ``mid`` with an error, after the answers of the session's earlier
        forwarded Requests: queued behind them while any wait or are in flight, else now. Only
        a session with ``max_pending_forwards`` refusals already queued (a flood far past the
        bound) is answered at once."""
        forwarder = session.get(_FORWARDER)
        if (
            forwarder is not None
            and (forwarder.queued or forwarder.in_flight)  # in flight: sent straight onto a live stream
            and forwarder.refusals < self._bound
            and self._start(session, forwarder)
            and forwarder.put(Refusal(mid, code, text))
        ):
            forwarder.queued += 1
            forwarder.refusals += 1
            return
        self.server.router.answer_error(session, mid, code, text)

    def rpc(self, session: Session, route: str, body: bytes) -> None:
        """nano's ``session.RPC``: a Notify to the member hosting ``route``'s service, after the
        session's earlier forwards, carrying the client's gate and session id (so that
        member's pushes reach the client directly). Raises ServiceNotFound (a LookupError, and
        a HandlerError answering 503 if the handler lets it out) when no member hosts the
        service; a message over the session's bound is dropped and counted."""
        service = route.rpartition(".")[0]
        member = self._select(service, session)
        if member is None:
            raise ServiceNotFound(service)
        self._queue(session, member, service, route, 0, body)

    def _select(self, service: str, session: Session) -> str | None:
        """The member (its address) for ``service``: the session's binding, else the custom
        selector's or a random choice, which is then bound (sticky per session and service,
        as nano). Members found unreachable (:mod:`._reach`) are left out while others host
        the service, and a binding to one is chosen again (nano's PR #100 lets a session do
        so)."""
        hosting = self._membership.hosting_by_address(service)
        bindings = session.get(_BINDINGS)
        if bindings is None:
            bindings = session[_BINDINGS] = {}
        bound = bindings.get(service)
        candidates = list(hosting.values())
        if self._reach and candidates:
            reachable = [m for m in candidates if self._reach.reachable(m.service_addr)]
            if reachable:
                candidates = reachable
        if bound is not None:
            if bound in hosting and (len(candidates) == len(hosting) or self._reach.reachable(bound)):
                return bound
            del bindings[service]  # the bound member is gone or unreachable: choose again
        if not candidates:
            return None
        chooser = self._remote_route
        chosen = chooser(service, session, candidates) if chooser else random.choice(candidates)
        if chosen is None:
            return None
        address: str = chosen.service_addr
        bindings[service] = address
        return address

    def _queue(self, session: Session, member: str, service: str, route: str, mid: int, body: bytes) -> bool:
        """Send or queue one message; False (counted, logged) when the session's bound is
        reached: the caller answers a Request 503."""
        forwarder = session.get(_FORWARDER)
        if forwarder is None:
            entity = session.entity
            if isinstance(entity, RemoteEntity):
                forwarder = Forwarder(entity.gate, entity.sid, self._bound)
            else:
                forwarder = Forwarder(self.address, session.id, self._bound)
            session[_FORWARDER] = forwarder
        if mid and forwarder.pending >= self._bound:
            return self._refused(session, route)
        if not forwarder.queued:  # nothing waits before it: straight onto a live stream
            link = self._links.current(member)
            if link is not None:
                self._stream(link, session, forwarder, member, service, route, mid, body, self._rpc_timeout)
                return True
        if not self._start(session, forwarder):
            self._counters.forwards_refused += 1
            return False  # this node is stopping
        deadline = trio.current_time() + self._rpc_timeout
        rid = next(self._request_ids) if mid else 0
        if forwarder.put(Forward(member, service, route, mid, body, deadline, rid)):
            forwarder.queued += 1
            if mid:  # answered by its deadline, even while it waits in the queue
                self._await_answer(InFlight(session, forwarder, mid, service, route, member, None, deadline), rid)
            return True
        return self._refused(session, route)

    def _await_answer(self, entry: InFlight, rid: int) -> None:
        """Put ``entry`` in the table of Requests waiting for their answers, under ``rid``, and
        its deadline on the heap :meth:`expire_requests` watches."""
        self._in_flight[rid] = entry
        if entry.sent:
            entry.forwarder.in_flight += 1
        deadlines = self._deadlines
        if not deadlines or entry.deadline < deadlines[0][0]:
            self._earlier.set()
        heapq.heappush(deadlines, (entry.deadline, rid))

    def _start(self, session: Session, forwarder: Forwarder) -> bool:
        """Start the session's forwarding task unless it runs; False once this node is stopping."""
        if not forwarder.started:
            if not self._tasks.start(self._drain, session, forwarder):
                return False
            forwarder.started = True
        return True

    def _refused(self, session: Session, route: str) -> bool:
        self._counters.forwards_refused += 1
        self._log.warning(
            "forwards refused",
            "session %d: %d messages already waiting for other nodes: %s refused",
            session.id,
            self._bound,
            client_text(route),
        )
        return False

    def _stream(
        self,
        link: Link,
        session: Session,
        forwarder: Forwarder,
        member: str,
        service: str,
        route: str,
        mid: int,
        body: bytes,
        timeout: float,
        rid: int = 0,
    ) -> None:
        """Put one message on ``link``; a Request waits in :attr:`_in_flight` for its answer
        until ``timeout`` from now, or (``rid``: it was queued) until the deadline it has had
        since: a queued Request already answered (its deadline passed) is not sent. A link that
        refuses it fails it as a unary call would."""
        gate = forwarder.gate
        own = gate == self.address
        entry = None
        if mid:
            if rid:
                entry = self._in_flight.get(rid)
                if entry is None:
                    return  # answered 503 while it waited in the queue
            else:
                rid = next(self._request_ids)
            # a stand-in's session.rpc never makes Requests; its client's gate would get the answer
            frame: frames.Frame = frames.Request("" if own else gate, forwarder.sid, rid, route, body)
        else:
            frame = frames.Notify("" if own else gate, forwarder.sid, route, body)
        if not link.send(frames.encode_frame(frame)):
            if entry is not None:
                self._settle(rid)
            self._failed(session, member, service, route, mid, ClusterError("the stream is down or full"))
            return
        self._counters.forwarded += 1
        if entry is not None:
            entry.link = link
            entry.sent = True
            forwarder.in_flight += 1
        elif mid:
            deadline = trio.current_time() + timeout
            self._await_answer(InFlight(session, forwarder, mid, service, route, member, link, deadline, True), rid)

    # -- a session's forwarding task --------------------------------------------------------

    async def _drain(self, session: Session, forwarder: Forwarder) -> None:
        """Send the session's queued forwards in order until it closes; then, if this node owns
        the session, announce its end to every member."""
        async with forwarder.receive:
            async for item in forwarder.receive:
                try:
                    if type(item) is Refusal:
                        forwarder.refusals -= 1
                        await self._answer_refusal(session, forwarder, item)
                        continue
                    assert type(item) is Forward
                    if item.mid and (session.closed or item.rid not in self._in_flight):
                        self._settle(item.rid)
                        continue  # answered already, or nobody left to answer; notifies still go out
                    await self._send(session, forwarder, item)
                finally:
                    forwarder.queued -= 1
        if not isinstance(session.entity, RemoteEntity):
            self._announce_closed(session.id)

    async def _answer_refusal(self, session: Session, forwarder: Forwarder, refusal: Refusal) -> None:
        """Give ``refusal`` once the Requests sent before it on streams are answered (each is,
        by its deadline at the latest)."""
        while forwarder.in_flight and not session.closed:
            settled = forwarder.settled = trio.Event()
            await settled.wait()
        if not session.closed:
            self.server.router.answer_error(session, refusal.mid, refusal.code, refusal.text)

    async def _send(self, session: Session, forwarder: Forwarder, item: Forward) -> None:
        """Send one queued message: on the stream to its member (opened if needed), else as
        nano's unary call. A Request's call is bounded by its deadline and then waits in the
        table for the member's HandleResponse (answered 503 at the deadline if none comes). A
        Notify's unary call has no deadline of its own: it waits while the member is in the
        cluster (a frozen member takes it once it runs again, as its stream would; the
        session's later messages wait behind it, within ``max_pending_forwards``, its Requests
        answered 503 at their deadlines); the member leaving the cluster ends the call
        (:meth:`member_gone`: the notify is then dropped, counted and logged)."""
        try:
            if item.mid:
                timeout = item.deadline - trio.current_time()
                if timeout <= 0:
                    raise DeadlineExceeded("it waited for the session's earlier messages past its deadline")
            else:
                timeout = self._rpc_timeout  # to open a stream; a notify waits on in the queue

            def then(link: Link) -> None:  # sessions waiting for the same new stream: in order
                remaining = item.deadline - trio.current_time()
                self._stream(
                    link,
                    session,
                    forwarder,
                    item.member,
                    item.service,
                    item.route,
                    item.mid,
                    item.body,
                    remaining,
                    item.rid,
                )

            if await self._links.open(item.member, timeout, then) is not None:
                return
            peer = self._peers[item.member]
            gate, sid = forwarder.gate, forwarder.sid
            if item.mid:
                # the member echoes the gate's id in its HandleResponse (nano's backend does not
                # read it: the handler's session has it as its last mid)
                request = codec.RequestMessage(gate, sid, item.rid, item.route, item.body)
                await peer.handle_request(request, seconds=timeout)
                entry = self._in_flight.get(item.rid)
                if entry is not None and not entry.sent:  # not answered already: wait for it
                    entry.sent = True
                    forwarder.in_flight += 1
            else:
                await self._notify(item.member, codec.NotifyMessage(gate, sid, item.route, item.body))
            self._counters.forwarded += 1
        except ClusterError as exc:  # the request boundary: answer the client, keep serving
            if item.mid and self._settle(item.rid) is None:
                return  # answered already (503 at its deadline, or its answer came): once only
            self._failed(session, item.member, item.service, item.route, item.mid, exc)

    async def _notify(self, member: str, message: codec.NotifyMessage) -> None:
        """nano's HandleNotify to ``member``, with no deadline while it is in the cluster:
        :meth:`member_gone` ends the call (Unavailable). Raises ClusterError."""
        if member not in self._membership:
            raise Unavailable(f"{member} has left the cluster")
        calls = self._notifying.setdefault(member, set())
        with trio.CancelScope() as scope:
            calls.add(scope)
            try:
                await self._peers[member].handle_notify(message, seconds=math.inf)
            finally:
                calls.discard(scope)
                if not calls and self._notifying.get(member) is calls:
                    del self._notifying[member]
        if scope.cancelled_caught:
            raise Unavailable(f"{member} has left the cluster")

    def member_gone(self, address: str) -> None:
        """``address`` left the cluster: its unary notify calls end (each notify dropped,
        counted, logged) and the Requests it took over unary calls and has not answered are
        answered 503 now, as a stream's are when it dies."""
        for scope in self._notifying.pop(address, ()):
            scope.cancel()
        lost = [
            rid
            for rid, entry in self._in_flight.items()
            if entry.member == address and entry.sent and entry.link is None
        ]
        for rid in lost:
            entry = self._settle(rid)
            assert entry is not None
            error = Unavailable(f"{address} has left the cluster")
            self._failed(entry.session, entry.member, entry.service, entry.route, entry.mid, error)

    def _failed(self, session: Session, member: str, service: str, route: str, mid: int, exc: ClusterError) -> None:
        """A forward failed: count, log, unbind the member, answer a Request 404 or 503."""
        self._counters.forward_errors += 1
        self._log.warning(
            "forward failed", "Process remote message (%d:%s) error: %r", session.id, client_text(route), exc
        )
        if isinstance(exc, Unavailable) and not isinstance(exc, NodeStopping):
            self._reach.unreachable(member, exc)
        bindings = session.get(_BINDINGS)
        if bindings is not None and bindings.get(service) == member:
            del bindings[service]  # choose again next time
        if mid and not session.closed:
            code = CODE_NOT_FOUND if isinstance(exc, NotFound) else CODE_UNAVAILABLE
            self.server.router.answer_error(session, mid, code, f"{service} unavailable: {exc.message}")

    def _announce_closed(self, sid: int) -> None:
        """This node's session ``sid`` ended: tell every member that may hold a stand-in for
        it (on its stream when one is up, after the session's messages there; else nano's
        unary SessionClosed). Beyond nano, which tells every member: not a member that hosts
        no service (it can hold none: a stand-in is made by a message for a route it hosts),
        nor one found unreachable (its process is not listening: its stand-ins died with it;
        :mod:`._reach`)."""
        frame = frames.encode_frame(frames.SessionClosed(sid))
        for address in self._membership.hosting_any():
            self._announce_to(address, sid, frame)

    def _announce_to(self, address: str, sid: int, frame: bytes | None = None) -> None:
        """Announce ``sid``'s end to ``address``: on the live stream to it; else, when it speaks
        the stream, on one opened for it (the ends announced meanwhile wait for that stream:
        thousands of sessions ending at once, a gate stopping, are one stream and a batch of
        frames, not thousands of unary calls); else nano's unary SessionClosed."""
        link = self._links.current(address)
        if link is not None and link.send(frame or frames.encode_frame(frames.SessionClosed(sid))):
            return
        if not self._reach.reachable(address):
            return
        if link is None and not self._links.speaks_unary(address):
            waiting = self._unannounced.get(address)
            if waiting is not None:
                waiting.append(sid)
                return
            self._unannounced[address] = [sid]
            if self._tasks.start(self._announce_on_stream, address):
                return
            del self._unannounced[address]
        self._announce_unary_soon(address, sid)

    def _announce_unary_soon(self, address: str, sid: int) -> None:
        if not self._tasks.start(self._announce_unary, address, sid):
            _logger.debug("session %d: this node is stopping; its end is not announced to %s", sid, address)

    async def _announce_on_stream(self, address: str) -> None:
        """Open the stream to ``address`` and announce on it the ends waiting for it; those it
        cannot take (it could not be opened, or is over its bound) go as unary calls."""
        link: Link | None = None
        try:
            link = await self._links.open(address, self._rpc_timeout)
        except ClusterError:
            pass  # the unary calls below find out, and count, what is wrong with the member
        finally:
            sids = self._unannounced.pop(address, [])
        for sid in sids:
            if link is None or not link.send(frames.encode_frame(frames.SessionClosed(sid))):
                self._announce_unary_soon(address, sid)

    async def _announce_unary(self, address: str, sid: int) -> None:
        try:
            await self._peers[address].session_closed(sid)
        except ClusterError as exc:
            if isinstance(exc, Unavailable) and not isinstance(exc, NodeStopping):
                self._reach.unreachable(address, exc)
            self._log.warning("session closed", "SessionClosed to %s failed: %r", address, exc)
            self._owed.failed(address, sid, exc)

    def session_closed(self, session: Session) -> None:
        """A session closed (a close hook): its forwarder finishes what is queued, then ends
        and announces the end; a session that never queued announces it now."""
        forwarder = session.get(_FORWARDER)
        if forwarder is None:
            return
        if forwarder.started:
            forwarder.close()
        elif not isinstance(session.entity, RemoteEntity):
            self._announce_closed(session.id)

    # -- requests in flight on streams --------------------------------------------------------

    def _settle(self, rid: int) -> InFlight | None:
        """Take Request ``rid`` out of the table (its answer is being given): the entry, or None
        when it was answered already."""
        entry = self._in_flight.pop(rid, None)
        if entry is not None and entry.sent:
            forwarder = entry.forwarder
            forwarder.in_flight -= 1
            if not forwarder.in_flight and forwarder.settled is not None:
                forwarder.settled.set()  # the refusal waiting runs after this entry's answer
                forwarder.settled = None
        return entry

    async def expire_requests(self) -> None:
        """A task of the node: answer 503 each forwarded Request unanswered by its deadline,
        whichever path it took (a stream, a unary call, or still in the session's queue)."""
        deadlines = self._deadlines
        while True:
            self._earlier = trio.Event()
            with trio.move_on_at(deadlines[0][0] if deadlines else float("inf")):
                await self._earlier.wait()
            now = trio.current_time()
            while deadlines and deadlines[0][0] <= now:
                _, rid = heapq.heappop(deadlines)
                entry = self._settle(rid)
                if entry is None:
                    continue  # answered meanwhile
                error = DeadlineExceeded(f"no answer within {self._rpc_timeout:g}s")
                self._failed(entry.session, entry.member, entry.service, entry.route, entry.mid, error)

    def link_down(self, link: Link) -> None:
        """``link`` died: its requests in flight are answered 503 now."""
        lost = [rid for rid, entry in self._in_flight.items() if entry.link is link]
        for rid in lost:
            entry = self._settle(rid)
            assert entry is not None
            error = ClusterError(f"the stream to {link.peer} was lost", Status.UNAVAILABLE)
            self._failed(entry.session, entry.member, entry.service, entry.route, entry.mid, error)

    # -- replies for this node's clients (clusterpb.Member, Trio side) ------------------------

    def _client(self, sid: int) -> Session:
        session = self.server.sessions.get(sid)
        if session is None or session.closed:
            raise NotFound(f"session not found: {sid}")
        return session

    def take_push(self, message: codec.PushMessage) -> None:
        """nano's HandlePush (Trio side, synchronous): raises NotFound (the client has left),
        InvalidRequest (over the packet limit)."""
        session = self._client(message.session_id)
        self._deliver(message.session_id, lambda: session.entity.send_push(session, message.route, message.data))

    def take_response(self, message: codec.ResponseMessage) -> None:
        """nano's HandleResponse (Trio side, synchronous): the answer to the Request this gate
        forwarded as ``message.id`` (the gate's id, see :class:`InFlight`), given to the client
        under its own request id. An answer for a Request answered already (503 at its
        deadline), or an id this gate never sent, is dropped and counted (``late_frames``),
        never a second Response; an answer over the client's packet limit answers the client
        413, as on a stream. Raises NotFound when the client has left (nano: "session not
        found"), which ends the member's stand-in."""
        sid = message.session_id
        if self._answer_call(sid, message.data):
            return
        entry = self._in_flight.get(message.id)
        if entry is None or entry.session.id != sid or entry.forwarder.gate != self.address:
            self._client(sid)  # NotFound when the client has left
            self._counters.late_frames += 1
            self._log.debug(
                "late response", "HandleResponse %d for session %d: no Request waits for it", message.id, sid
            )
            return
        self._settle(message.id)
        self._answer(entry.session, entry.mid, message.data)

    @staticmethod
    def _deliver(sid: int, send: Callable[[], bool]) -> None:
        """A backend's push or response for a client here: the client gone is NotFound, a body
        over the packet limit InvalidRequest."""
        try:
            send()
        except trio.BrokenResourceError:
            raise NotFound(f"session not found: {sid}") from None
        except MessageTooLarge as exc:
            raise InvalidRequest(str(exc)) from None

    async def close_session(self, request: pb.CloseSessionRequest) -> pb.CloseSessionResponse:
        session = self.server.sessions.get(request.session_id)
        if session is not None:
            session.close()
        return pb.CloseSessionResponse()

    # -- replies for this node's clients (frames on a stream, Trio side; never raise) --------

    def on_response(self, frame: frames.Response) -> None:
        sid, rid, data = frame
        if self._answer_call(sid, data):
            return
        entry = self._settle(rid)
        if entry is None:  # answered 503 already (its deadline passed, its stream was lost)
            self._counters.late_frames += 1
            return
        try:
            self._answer(entry.session, entry.mid, data)
        except NotFound:
            self._counters.late_frames += 1  # the client has left

    def _answer(self, session: Session, mid: int, data: bytes) -> None:
        """Give the client its answer to Request ``mid``; one over its packet limit is answered
        413 instead (both paths alike). Raises NotFound when the client has left."""
        try:
            session.entity.send_response(session, mid, data)
        except trio.BrokenResourceError:
            raise NotFound(f"session not found: {session.id}") from None
        except MessageTooLarge as exc:
            self.server.router.answer_error(session, mid, CODE_TOO_LARGE, str(exc))

    def on_error(self, frame: frames.Error) -> None:
        """The member could not take a Request: answered as a failed unary call would be."""
        entry = self._settle(frame.mid)
        if entry is None:
            self._counters.late_frames += 1
            return
        message = frame.message
        error = (
            NotFound(message) if frame.status == Status.NOT_FOUND.value else ClusterError(message, Status.UNAVAILABLE)
        )
        self._failed(entry.session, entry.member, entry.service, entry.route, entry.mid, error)

    def on_push(self, sid: int, route: str, data: bytes) -> None:
        session = self.server.sessions.get(sid)
        if session is None or session.closed:
            self._counters.late_frames += 1
            return
        try:
            session.entity.send_push(session, route, data)
        except (trio.BrokenResourceError, MessageTooLarge) as exc:
            self._counters.late_frames += 1
            self._log.warning("push", "push %s to session %d not delivered: %r", client_text(route), sid, exc)

    def on_audit(self, link: Link, sids: tuple[int, ...]) -> None:
        """The node at ``link``'s other end asks which of these sessions of ours have ended
        (:mod:`._audit`): a SessionClosed frame for each that has (no live session, no call
        of ours in flight by that id). A full or dead link drops the answers: it asks again."""
        sessions = self.server.sessions
        for sid in sids:
            session = sessions.get(sid)
            ended = (session is None or session.closed) and sid not in self._calls
            if ended and not link.send(frames.encode_frame(frames.SessionClosed(sid))):
                return

    def on_close_session(self, sid: int) -> None:
        session = self.server.sessions.get(sid)
        if session is not None:
            session.close()

    # -- request-style calls ----------------------------------------------------------------

    async def call(self, route: str, body: bytes) -> bytes:
        """Request ``route`` from a member hosting its service and wait for the answer (see
        :meth:`Node.call`)."""
        service = route.rpartition(".")[0]
        candidates = self._membership.hosting(service)
        if not candidates:
            raise ServiceNotFound(service)
        reachable = [m for m in candidates if self._reach.reachable(m.service_addr)]
        member = random.choice(reachable or candidates)
        call_id = self.server.next_id()  # unique across the cluster, like session ids
        answered, box = self._calls[call_id] = (trio.Event(), [])
        peer = self._peers[member.service_addr]
        seconds = self._rpc_timeout
        request = codec.RequestMessage(self.address, call_id, 1, route, body)
        try:
            with trio.fail_after(seconds):
                await peer.handle_request(request)
                await answered.wait()
        except trio.TooSlowError:
            raise DeadlineExceeded(f"{route}: no answer within {seconds}s") from None
        finally:
            del self._calls[call_id]
            # this node owns the call's id: it ends the call's session on the member
            self._announce_to(member.service_addr, call_id)
        return box[0]

    def _answer_call(self, sid: int, body: bytes) -> bool:
        """A HandleResponse for one of our calls (True), or for a client session (False)."""
        pending = self._calls.get(sid)
        if pending is None:
            return False
        pending[1].append(body)
        pending[0].set()
        return True
