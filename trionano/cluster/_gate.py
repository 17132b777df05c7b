"""Forwarding: a session's messages to the nodes hosting their routes (nano.md §5.4), the
replies that come back for this node's clients, and request-style calls between nodes.

Each session that forwards gets a :class:`Forwarder`: a bounded queue with its own task,
which sends its messages in order, each answered by its deadline. The reader that hands a
message over never waits (a hung member never stops it from reading heartbeats or serving
local routes); over the bound a Request is answered 503 and counted.

Only the gate that owns a client session announces its end (SessionClosed to every member,
after the session's forwards have gone out); a stand-in's end is never announced.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio

from .._errors import MessageTooLarge
from .._log import RateLimitedLog, client_text
from .._router import CODE_NOT_FOUND, CODE_UNAVAILABLE
from .._server import Server
from .._session import Session, SessionKey
from ..wire import Notify, Request
from ._counters import Counters
from ._errors import ClusterError, DeadlineExceeded, InvalidRequest, NotFound
from ._generated import clusterpb as pb
from ._membership import Membership
from ._peers import Peers
from ._remote import RemoteEntity
from ._tasks import Tasks

__all__ = ["Forward", "Forwarder", "Gate", "RemoteRoute"]

_logger = logging.getLogger("trionano.cluster")

#: A custom member selector (nano's ``WithCustomerRemoteServiceRoute``): (service, session,
#: the members hosting it) -> the member, or None to drop the message.
RemoteRoute = Callable[[str, Session, Sequence[pb.MemberInfo]], "pb.MemberInfo | None"]

#: per session: service -> the member address it is bound to (sticky routing, nano's Router)
_BINDINGS: Final = SessionKey[dict[str, str]]("trionano.cluster.bindings")


@attrs.frozen
class Forward:
    """One message for another node on behalf of a session: a Request (``mid`` > 0) or a
    Notify, due by ``deadline`` (trio time)."""

    member: str
    service: str
    route: str
    mid: int
    body: bytes
    deadline: float


class Forwarder:
    """One session's queue of forwards, drained by :meth:`Gate._drain` (a task of the node).
    ``gate`` and ``sid`` are what the members see: this node and the session's id, or, for
    a stand-in, its client's gate and id there (so replies go straight to that gate)."""

    def __init__(self, gate: str, sid: int, bound: int) -> None:
        self.gate = gate
        self.sid = sid
        self.send, self.receive = trio.open_memory_channel[Forward](bound)

    def put(self, item: Forward) -> bool:
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


class Gate:
    """The forwarding role of a node (every node forwards: a gate its clients' messages, any
    node its sessions' ``session.rpc``). It is the server's remote router (:meth:`forward`,
    :meth:`rpc`); :meth:`attach` gives it the server."""

    def __init__(
        self,
        address: str,
        membership: Membership,
        peers: Peers,
        tasks: Tasks,
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
        self._tasks = tasks
        self._rpc_timeout = rpc_timeout
        self._bound = max_pending_forwards
        self._remote_route = remote_route
        self._counters = counters
        self._log = log
        self._server: Server | None = None
        self._calls: dict[int, tuple[trio.Event, list[bytes]]] = {}  # call id -> (answered, [body])

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
        queued is answered now: 404 (nobody hosts it), 503 (too many waiting)."""
        route = message.route
        mid = message.id if type(message) is Request else 0
        service, dot, _ = route.rpartition(".")
        member = self._select(service, session) if dot else None
        if member is None:
            self._counters.unknown_routes += 1
            self._log.warning("no member", "nano/handler: %s not found(forgot registered?)", client_text(route))
            if mid:
                self.server.router.answer_error(session, mid, CODE_NOT_FOUND, f"route not found: {route}")
            return
        if not self._queue(session, member.service_addr, service, route, mid, message.body) and mid:
            self.server.router.answer_error(
                session, mid, CODE_UNAVAILABLE, f"{service} unavailable: too many messages waiting"
            )

    def rpc(self, session: Session, route: str, body: bytes) -> None:
        """nano's ``session.RPC``: a Notify to the member hosting ``route``'s service, after the
        session's earlier forwards, carrying the client's gate and session id (so that
        member's pushes reach the client directly). Raises NotFound (a LookupError) when no
        member hosts the service; a message over the session's bound is dropped and counted."""
        service = route.rpartition(".")[0]
        member = self._select(service, session)
        if member is None:
            raise NotFound(f"{service} not found(forgot registered?)")
        self._queue(session, member.service_addr, service, route, 0, body)

    def _select(self, service: str, session: Session) -> pb.MemberInfo | None:
        """The member for ``service``: the session's binding, else the custom selector's or a
        random choice, which is then bound (sticky per session and service, as nano)."""
        candidates = self._membership.hosting(service)
        bindings = session.get(_BINDINGS)
        if bindings is None:
            bindings = session[_BINDINGS] = {}
        bound = bindings.get(service)
        if bound is not None:
            for member in candidates:
                if member.service_addr == bound:
                    return member
            del bindings[service]  # the bound member is gone: choose again
        if not candidates:
            return None
        chooser = self._remote_route
        chosen = chooser(service, session, candidates) if chooser else random.choice(candidates)
        if chosen is not None:
            bindings[service] = chosen.service_addr
        return chosen

    def _queue(self, session: Session, member: str, service: str, route: str, mid: int, body: bytes) -> bool:
        forwarder = session.get(_FORWARDER)
        if forwarder is None:
            entity = session.entity
            if isinstance(entity, RemoteEntity):
                forwarder = Forwarder(entity.gate, entity.sid, self._bound)
            else:
                forwarder = Forwarder(self.address, session.id, self._bound)
            if not self._tasks.start(self._drain, session, forwarder):
                self._counters.forwards_refused += 1
                return False  # this node is stopping
            session[_FORWARDER] = forwarder
        item = Forward(member, service, route, mid, body, trio.current_time() + self._rpc_timeout)
        if forwarder.put(item):
            return True
        self._counters.forwards_refused += 1
        self._log.warning(
            "forwards refused",
            "session %d: %d messages already waiting for other nodes: %s refused",
            session.id,
            self._bound,
            client_text(route),
        )
        return False

    # -- a session's forwarding task --------------------------------------------------------

    async def _drain(self, session: Session, forwarder: Forwarder) -> None:
        """Send the session's forwards in order until it closes; then, if this node owns the
        session, announce its end to every member."""
        async with forwarder.receive:
            async for item in forwarder.receive:
                if item.mid and session.closed:
                    continue  # nobody left to answer; its notifies still go out, in order
                await self._send(session, forwarder, item)
        if not isinstance(session.entity, RemoteEntity):
            for address in self._membership.addresses:
                self._tasks.start(self._announce_closed, address, session.id)

    async def _send(self, session: Session, forwarder: Forwarder, item: Forward) -> None:
        peer = self._peers[item.member]
        try:
            timeout = item.deadline - trio.current_time()
            if timeout <= 0:
                raise DeadlineExceeded("it waited for the session's earlier messages past its deadline")
            gate, sid = forwarder.gate, forwarder.sid
            if item.mid:
                request = pb.RequestMessage(
                    gate_addr=gate, session_id=sid, id=item.mid, route=item.route, data=item.body
                )
                await peer.handle_request(request, seconds=timeout)
            else:
                notify = pb.NotifyMessage(gate_addr=gate, session_id=sid, route=item.route, data=item.body)
                await peer.handle_notify(notify, seconds=timeout)
            self._counters.forwarded += 1
        except ClusterError as exc:  # the request boundary: answer the client, keep serving
            self._counters.forward_errors += 1
            self._log.warning("forward failed", "Process remote message (%d:%s) error: %r", session.id, item.route, exc)
            bindings = session.get(_BINDINGS)
            if bindings is not None and bindings.get(item.service) == item.member:
                del bindings[item.service]  # choose again next time
            if item.mid and not session.closed:
                code = CODE_NOT_FOUND if isinstance(exc, NotFound) else CODE_UNAVAILABLE
                self.server.router.answer_error(session, item.mid, code, f"{item.service} unavailable: {exc.message}")

    async def _announce_closed(self, address: str, sid: int) -> None:
        try:
            await self._peers[address].session_closed(sid)
        except ClusterError as exc:
            self._log.warning("session closed", "SessionClosed to %s failed: %r", address, exc)

    def session_closed(self, session: Session) -> None:
        """A session closed (a close hook): its forwarder finishes what is queued, then ends."""
        forwarder = session.get(_FORWARDER)
        if forwarder is not None:
            forwarder.close()

    # -- replies for this node's clients (clusterpb.Member, Trio side) ------------------------

    def _client(self, sid: int) -> Session:
        session = self.server.sessions.get(sid)
        if session is None or session.closed:
            raise NotFound(f"session not found: {sid}")
        return session

    async def handle_push(self, message: pb.PushMessage) -> pb.MemberHandleResponse:
        session = self._client(message.session_id)
        self._deliver(message.session_id, lambda: session.entity.send_push(session, message.route, message.data))
        return pb.MemberHandleResponse()

    async def handle_response(self, message: pb.ResponseMessage) -> pb.MemberHandleResponse:
        if self._answer_call(message.session_id, message.data):
            return pb.MemberHandleResponse()
        session = self._client(message.session_id)
        self._deliver(message.session_id, lambda: session.entity.send_response(session, message.id, message.data))
        return pb.MemberHandleResponse()

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

    # -- request-style calls ----------------------------------------------------------------

    async def call(self, route: str, body: bytes) -> bytes:
        """Request ``route`` from a member hosting its service and wait for the answer (see
        :meth:`Node.call`)."""
        service = route.rpartition(".")[0]
        candidates = self._membership.hosting(service)
        if not candidates:
            raise NotFound(f"{service} not found(forgot registered?)")
        member = random.choice(candidates)
        call_id = self.server.next_id()  # unique across the cluster, like session ids
        answered, box = self._calls[call_id] = (trio.Event(), [])
        peer = self._peers[member.service_addr]
        seconds = self._rpc_timeout
        request = pb.RequestMessage(gate_addr=self.address, session_id=call_id, id=1, route=route, data=body)
        try:
            with trio.fail_after(seconds):
                await peer.handle_request(request)
                await answered.wait()
        except trio.TooSlowError:
            raise DeadlineExceeded(f"{route}: no answer within {seconds}s") from None
        finally:
            del self._calls[call_id]
            # this node owns the call's id: it ends the call's session on the member
            if not self._tasks.start(self._announce_closed, member.service_addr, call_id):
                _logger.debug("call %d: this node is stopping; its session on %s is left", call_id, member.service_addr)
        return box[0]

    def _answer_call(self, sid: int, body: bytes) -> bool:
        """A HandleResponse for one of our calls (True), or for a client session (False)."""
        pending = self._calls.get(sid)
        if pending is None:
            return False
        pending[1].append(body)
        pending[0].set()
        return True
