"""The member side: stand-in sessions for clients connected to other gates (nano's
``acceptor``), their outboxes, and the HandleRequest/HandleNotify/SessionClosed calls that
create, feed and end them (nano.md §5.5).

A stand-in is keyed by (gate address, the gate's session id); it gets an id of this node's
own, which never leaves this node: only the gate announces a client's end. Its pushes,
responses and close go back to the gate in order, through its own outbox and sender task.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

import trio

from .._log import RateLimitedLog, client_text
from .._server import Server
from .._session import Broadcast, Session
from ..nursery_scheduler import Lane, Task
from ..wire import Notify, Request
from . import _codec as codec
from . import _frames as frames
from ._counters import Counters
from ._errors import ClusterError, NodeStopping, NotFound, Unavailable
from ._generated import clusterpb as pb
from ._links import Link, Links
from ._peers import Peers
from ._tasks import Tasks

__all__ = ["Outbound", "RemoteEntity", "RemoteSessions"]

_logger = logging.getLogger("trionano.cluster")
_MAX_ENDED: Final = 8192


#: what must still be awaited (in a Trio task) after a synchronous take: None when nothing
Then: TypeAlias = Callable[[], Awaitable[None]] | None

#: what a stand-in sends its client's gate, in order: frames of the fast path, or (to a peer
#: that speaks only nano's unary methods) HandlePush, HandleResponse and CloseSession calls
Outbound: TypeAlias = frames.Push | frames.Response | frames.CloseSession


class RemoteEntity:
    """The network entity of a stand-in session: what the session sends goes to the client's
    gate in order: straight onto the stream to it while one is up and nothing waits in the
    outbox, else through the outbox, sent by :meth:`run` (a task of the node). A full outbox
    drops (and counts) the message."""

    def __init__(
        self, gate: str, sid: int, *, links: Links, outbox_size: int, counters: Counters, log: RateLimitedLog
    ) -> None:
        self.gate = gate
        self.sid = sid
        self.closed = False
        self._links = links
        self._queued = 0  # in the outbox, or being sent by run()
        self._counters = counters
        self._log = log
        self._send, self._receive = trio.open_memory_channel[Outbound](outbox_size)

    @property
    def remote_address(self) -> str:
        return f"{self.gate}#{self.sid}"

    def _put(self, item: Outbound) -> bool:
        if not self._queued:
            link = self._links.current(self.gate)
            if link is not None and link.send(frames.encode_frame(item)):
                return True
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._counters.dropped_outbound += 1
            self._log.warning("outbox full", "remote session %s: outbox full, message dropped", self.remote_address)
            return False
        except trio.ClosedResourceError:
            self._counters.dropped_outbound += 1
            return False
        self._queued += 1
        return True

    def send_push(self, session: Session, route: str, body: bytes) -> bool:
        if self.closed:
            raise trio.BrokenResourceError("the session is closed")
        return self._put(frames.Push(self.sid, route, body))

    def send_broadcast(self, session: Session, broadcast: Broadcast) -> bool:
        if self.closed:
            return False
        return self._put(frames.Push(self.sid, broadcast.route, broadcast.body))

    def send_response(self, session: Session, mid: int, body: bytes) -> bool:
        if self.closed:
            raise trio.BrokenResourceError("the session is closed")
        return self._put(frames.Response(self.sid, mid, body))

    def kick(self, reason: str) -> None:
        self.close()  # nano's acceptor has no kick: the gate closes the client

    def close(self) -> None:
        """Ask the gate to close the client, after what is queued. Idempotent."""
        if not self.closed:
            self._put(frames.CloseSession(self.sid))
            self.closed = True
            self._send.close()

    def drop(self) -> None:
        """The client (or its gate) is gone: send nothing more."""
        self.closed = True
        self._send.close()

    async def run(self, peers: Peers) -> None:
        """Send what is queued, in order, each under the deadline: on the stream to the gate
        (opened if needed), or as nano's unary calls to a gate without one. A client that has
        left (a unary call answered NOT_FOUND) ends it quietly: what is still queued is dropped.

        A failed stream or call is not the gate's end (only the master's DelMember says the
        gate left, :meth:`RemoteSessions.gate_gone`): the item is tried once more on a stream
        opened anew (the gate may have dropped the old one, e.g. after this node was evicted
        and came back); if that fails too the item alone is dropped, counted and logged, and
        the stand-in lives on."""
        async with self._receive:
            async for item in self._receive:
                try:
                    try:
                        await self._send_one(peers, item)
                    except NodeStopping:
                        raise
                    except Unavailable as exc:
                        self._log.debug(
                            "gate retry", "remote session %s: %r; trying once more", self.remote_address, exc
                        )
                        await self._send_one(peers, item)
                except NotFound:
                    self._log.debug("client left", "remote session %s: the client has left", self.remote_address)
                    self.drop()
                    self._counters.dropped_outbound += 1 + _drain(self._receive)
                    return
                except ClusterError as exc:
                    self._counters.dropped_outbound += 1
                    self._log.warning("gate failed", "remote session %s: the gate failed: %r", self.remote_address, exc)
                finally:
                    self._queued -= 1

    async def _send_one(self, peers: Peers, item: Outbound) -> None:
        link = await self._links.open(self.gate, peers.timeout)
        if link is not None:
            if not link.send(frames.encode_frame(item)):
                raise Unavailable(f"the stream to {self.gate} is down or full")
            return
        peer = peers[self.gate]
        match item:
            case frames.Push(sid, route, body):
                await peer.handle_push(codec.PushMessage(sid, route, body))
            case frames.Response(sid, mid, body):
                await peer.handle_response(codec.ResponseMessage(sid, mid, body))
            case frames.CloseSession(sid):
                await peer.close_session(sid)


def _drain(receive: trio.MemoryReceiveChannel[Outbound]) -> int:
    count = 0
    while True:
        try:
            receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return count
        count += 1


class RemoteSessions:
    """This node's stand-ins for other gates' clients, by (gate, gate's session id)."""

    def __init__(
        self, server: Server, peers: Peers, links: Links, tasks: Tasks, *, counters: Counters, log: RateLimitedLog
    ) -> None:
        self._server = server
        self._peers = peers
        self._links = links
        self._tasks = tasks
        self._counters = counters
        self._log = log
        self._sessions: dict[tuple[str, int], Session] = {}
        self._gates: dict[int, list[str]] = {}  # session id -> the gates of its stand-ins
        # the latest sessions announced ended (ids are unique across the cluster): a message for
        # one that comes later, relayed by another node (gate -> master -> here), makes no
        # stand-in that nothing would ever end
        self._ended: collections.OrderedDict[int, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    # -- clusterpb.Member (Trio side) -------------------------------------------------------

    def take_request(self, message: codec.RequestMessage) -> Then:
        """nano's HandleRequest (Trio side, synchronous): queue the handler call on the
        stand-in. Returns None, or the push onto a full handler lane the call must await."""
        return self._take(message.gate_addr, message.session_id, Request(message.id, message.route, message.data))

    def take_notify(self, message: codec.NotifyMessage) -> Then:
        """nano's HandleNotify: as :meth:`take_request`."""
        return self._take(message.gate_addr, message.session_id, Notify(message.route, message.data))

    async def session_closed(self, request: pb.SessionClosedRequest) -> pb.SessionClosedResponse:
        """A gate's client left: end its stand-ins (by id alone, as nano: ids are unique
        across the cluster). Unknown ids are ignored."""
        self.on_session_closed(request.session_id)
        return pb.SessionClosedResponse()

    # -- frames on a stream (Trio side; never raise for what the peer sent) -------------------

    async def on_request(self, link: Link, frame: frames.Request) -> None:
        """A Request from the gate at the stream's other end (or the one it names); what cannot
        be taken is answered with an Error frame, as a unary call's status would be."""
        gate, sid, mid, route, data = frame
        try:
            await self._handle(gate or link.peer, sid, Request(mid, route, data))
        except ClusterError as exc:
            if not link.send(frames.encode_frame(frames.Error(sid, mid, exc.status.value, exc.message))):
                # the link is down or full: the gate answers its client at the Request's deadline
                self._counters.dropped_outbound += 1
                self._log.warning(
                    "error dropped", "Error for %s#%d dropped: the stream is down or full", link.peer, sid
                )

    async def on_notify(self, link: Link, frame: frames.Notify) -> None:
        gate, sid, route, data = frame
        try:
            await self._handle(gate or link.peer, sid, Notify(route, data))
        except ClusterError as exc:
            self._log.warning("notify", "Notify %s from %s refused: %r", client_text(route), link.peer, exc)

    def on_session_closed(self, sid: int) -> None:
        ended = self._ended
        ended[sid] = None
        if len(ended) > _MAX_ENDED:
            ended.popitem(last=False)
        for gate in self._gates.get(sid, ())[:]:
            self._end((gate, sid))

    # -- the stand-ins ----------------------------------------------------------------------

    async def _handle(self, gate: str, sid: int, message: Request | Notify) -> None:
        """Queue the handler call on the stand-in; the gate's call waits only while the
        handler's lane is full."""
        then = self._take(gate, sid, message)
        if then is not None:
            await then()

    def _take(self, gate: str, sid: int, message: Request | Notify) -> Then:
        """Queue the handler call on the stand-in: None when done, else the push onto the
        full lane to await. Raises NotFound (the route is not hosted here), NodeStopping."""
        if not self._server.router.hosts(message.route):
            raise NotFound(f"service not found in current node: {message.route}")
        if sid in self._ended and (gate, sid) not in self._sessions:
            self._log.debug(
                "session ended", "session %s#%d has ended: %s dropped", gate, sid, client_text(message.route)
            )
            return None
        try:
            pending = self._server.router.dispatch(self._session(gate, sid), message)
        except trio.ClosedResourceError:  # the scheduler has stopped: the server is stopping
            raise NodeStopping("this node is stopping") from None
        if pending is None:
            return None
        return functools.partial(_push_onto, *pending)

    def _session(self, gate: str, sid: int) -> Session:
        key = (gate, sid)
        session = self._sessions.get(key)
        if session is None:
            entity = RemoteEntity(
                gate,
                sid,
                links=self._links,
                outbox_size=self._server.config.outbox_size,
                counters=self._counters,
                log=self._log,
            )
            if not self._tasks.start(entity.run, self._peers):
                raise NodeStopping("this node is stopping")
            session = self._server.make_session(entity)
            self._sessions[key] = session
            self._gates.setdefault(sid, []).append(gate)
        return session

    def _end(self, key: tuple[str, int]) -> None:
        session = self._sessions.pop(key, None)
        if session is None:
            return
        gate, sid = key
        gates = self._gates[sid]
        gates.remove(gate)
        if not gates:
            del self._gates[sid]
        entity = session.entity
        assert isinstance(entity, RemoteEntity)
        entity.drop()
        self._server.session_closed(session)  # its close hooks, on this node only

    def gates(self) -> set[str]:
        """The gates whose clients have stand-ins here."""
        return {gate for gate, _ in self._sessions}

    def sids_of(self, gate: str) -> list[int]:
        """The session ids (the gate's) of ``gate``'s clients that have stand-ins here."""
        return [sid for key_gate, sid in self._sessions if key_gate == gate]

    def gate_gone(self, gate: str) -> None:
        """``gate`` left the cluster: end its clients' stand-ins (nano leaks them)."""
        ended = [key for key in self._sessions if key[0] == gate]
        for key in ended:
            self._end(key)
        if ended:
            _logger.info("gate %s is gone: %d remote session(s) ended", gate, len(ended))


async def _push_onto(lane: Lane, task: Task) -> None:
    """Queue ``task`` on a full handler lane, waiting for room. Raises NodeStopping when the
    scheduler stops meanwhile (the gate answers its client 503 at once, not at its deadline)."""
    try:
        await lane.push(task)
    except trio.ClosedResourceError:
        raise NodeStopping("this node is stopping") from None
