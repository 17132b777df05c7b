"""A cluster node: nano's master/member/gate roles over grpclib (nano.md §5).

Every node serves the ``Member`` gRPC service on its service address; the master also serves
``Master``. A node with client endpoints is a gate: a route it does not host is forwarded to a
member that does (sticky per session and service; random, or the custom selector). The member
runs the handler on a *remote session* whose pushes and responses travel back to the gate in
order, through that session's own outbox. State lives on the Trio side; grpclib's handlers
cross over through the bridge (:mod:`trionano.cluster._bridge`).

Beyond nano: every RPC has a deadline; a client whose request cannot be forwarded gets an error
Response (nano leaves it waiting); members' channels are closed when they leave; remote
sessions die with their gate;
NewMember/DelMember failures are logged, never abort a registration; session ids are unique
across gates (``node_id``), so SessionClosed cannot end another gate's session.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import grpclib
import grpclib.client
import grpclib.const
import grpclib.exceptions
import grpclib.server
import trio

from .._component import Components
from .._config import Config
from .._listen import Endpoint
from .._router import CODE_NOT_FOUND, CODE_UNAVAILABLE
from .._server import Server
from .._session import Broadcast, Session, SessionKey
from .._stats import RpcCounters
from ..wire import Notify, Request
from . import _generated as _gen_root  # noqa: F401 - the generated package must import first
from ._bridge import Bridge
from ._generated import clusterpb as pb
from ._stubs import TimedMasterStub, TimedMemberStub

__all__ = ["ClusterConfig", "Node", "RemoteRoute"]

_logger = logging.getLogger("trionano.cluster")

RemoteRoute = Callable[[str, Session, Sequence[pb.MemberInfo]], "pb.MemberInfo | None"]

#: per session: service -> the member address it is bound to (sticky routing, nano's Router)
_BINDINGS = SessionKey[dict[str, str]]("trionano.cluster.bindings")
#: per session: the member addresses it was forwarded to (they get SessionClosed)
_SEEN_BY = SessionKey[set[str]]("trionano.cluster.seen_by")


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """A node's place in the cluster.

    ``service_address`` ("host:port") serves gRPC; a member names the master's with
    ``master_address``; ``is_master`` makes the master (which may host services too).
    ``heartbeat`` is the member->master keepalive (the master evicts after 4 silent intervals);
    ``rpc_timeout`` bounds every call; ``retry_interval`` spaces registration attempts.
    ``node_id`` (0..2^20) makes session ids unique across gates (``node_id << 32 | n``).
    """

    service_address: str
    master_address: str | None = None
    is_master: bool = False
    label: str = ""
    heartbeat: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    retry_interval: float = attrs.field(default=3.0, validator=attrs.validators.gt(0))
    rpc_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    node_id: int = attrs.field(default=0, validator=[attrs.validators.ge(0), attrs.validators.lt(1 << 20)])
    remote_route: RemoteRoute | None = None
    unregister_callback: Callable[[pb.MemberInfo], None] | None = None

    def __attrs_post_init__(self) -> None:
        if not self.is_master and not self.master_address:
            raise ValueError("a member needs the master's address")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


class _Peer:
    """A pooled channel to one node, closed when the node leaves; its calls are counted in
    ``rpc_stats``."""

    def __init__(self, address: str, rpc_stats: RpcCounters) -> None:
        host, port = _split(address)
        self.channel = grpclib.client.Channel(host, port)
        self.member = TimedMemberStub(self.channel, peer=address, counters=rpc_stats)
        self.master = TimedMasterStub(self.channel, peer=address, counters=rpc_stats)

    def close(self) -> None:
        self.channel.close()


class RemoteEntity:
    """A backend's view of a client connected to a gate: pushes and responses go back to the
    gate in order, through this entity's own outbox and sender task."""

    def __init__(self, node: Node, gate: str, sid: int) -> None:
        self.node = node
        self.gate = gate
        self.sid = sid
        self.closed = False
        self._send, self._receive = trio.open_memory_channel[tuple[Any, ...]](node.server.config.outbox_size)

    @property
    def remote_address(self) -> str:
        return f"{self.gate}#{self.sid}"

    def _put(self, item: tuple[Any, ...]) -> bool:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.node.dropped += 1
            _logger.warning("remote session %s: outbox full, message dropped", self.remote_address)
            return False
        except trio.ClosedResourceError:
            self.node.dropped += 1
            return False
        return True

    def send_push(self, session: Session, route: str, body: bytes) -> bool:
        if self.closed:
            raise trio.BrokenResourceError("broken low-level pipe")
        return self._put(("push", route, body, self.sid))

    def send_broadcast(self, session: Session, broadcast: Broadcast) -> bool:
        if self.closed:
            return False
        return self._put(("push", broadcast.route, broadcast.body, self.sid))

    def send_response(self, session: Session, mid: int, body: bytes) -> bool:
        if self.closed:
            raise trio.BrokenResourceError("broken low-level pipe")
        return self._put(("response", mid, body, self.sid))

    def kick(self, reason: str) -> None:
        self.close()

    def close(self) -> None:
        """Ask the gate to close the client (nano's CloseSession). Idempotent."""
        if not self.closed:
            self._put(("close", None, None, self.sid))
            self.closed = True
            self._send.close()

    def drop(self) -> None:
        """The gate said the client is gone (or the gate is): stop without telling it."""
        self.closed = True
        self._send.close()

    @staticmethod
    async def _call(peer: _Peer, item: tuple[Any, ...], seconds: float) -> object:
        if item[0] == "push":
            return await peer.member.handle_push(
                pb.PushMessage(route=item[1], data=item[2], session_id=item[3]), timeout=seconds
            )
        if item[0] == "response":
            return await peer.member.handle_response(
                pb.ResponseMessage(id=item[1], data=item[2], session_id=item[3]), timeout=seconds
            )
        return await peer.member.close_session(pb.CloseSessionRequest(session_id=item[3]), timeout=seconds)

    async def run(self) -> None:
        """Send what is queued, in order, each call under the RPC deadline."""
        async with self._receive:
            async for item in self._receive:
                peer = self.node._peer(self.gate)
                timeout = self.node.config.rpc_timeout
                try:
                    await self.node.bridge.to_asyncio(functools.partial(self._call, peer, item, timeout))
                except Exception as exc:  # the RPC boundary: log, count, go on
                    self.node.dropped += 1
                    _logger.warning("remote session %s: %s to the gate failed: %r", self.remote_address, item[0], exc)


class Node:
    """One cluster node and the :class:`~trionano.Server` it builds for ``components`` (with
    ``server_config``): run it with :meth:`run` inside :func:`trionano.cluster.run` (which
    hosts Trio on grpclib's asyncio loop). The node hands its server the session-id source
    (unique across gates by ``node_id``) and itself as the router for remote routes."""

    def __init__(self, components: Components, config: ClusterConfig, server_config: Config | None = None) -> None:
        self.server: Final = Server(
            components,
            server_config,
            session_ids=itertools.count((config.node_id << 32) + 1),
            remote=self,
        )
        server = self.server
        self.config: Final = config
        self.dropped = 0  # messages to other gates' clients that could not be queued or sent
        self.unknown_routes = 0  # client messages for routes no member hosts
        self.rpc_stats: Final = RpcCounters()  # outgoing gRPC calls by method and peer (trionano.metrics)
        self.address: Final = config.service_address
        self.members: dict[str, pb.MemberInfo] = {}  # every other node, by service address
        self._last_heartbeat: dict[str, float] = {}  # the master's view of its members
        self._peers: dict[str, _Peer] = {}
        self._remote_sessions: dict[tuple[str, int], Session] = {}
        self._nursery: trio.Nursery | None = None
        self._bridge: Bridge | None = None
        self._registered = trio.Event()
        self._calls: dict[int, tuple[trio.Event, list[bytes]]] = {}  # call id -> (answered, [body])
        server.on_session_closed(self._local_session_closed)

    # -- views ------------------------------------------------------------------------------

    @property
    def bridge(self) -> Bridge:
        if self._bridge is None:
            raise RuntimeError("the node is not running")
        return self._bridge

    @property
    def local_services(self) -> list[str]:
        return self.server.components.services

    @property
    def remote_services(self) -> list[str]:
        return sorted({service for member in self.members.values() for service in member.services})

    def info(self) -> pb.MemberInfo:
        return pb.MemberInfo(label=self.config.label, service_addr=self.address, services=self.local_services)

    def _start(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Start a background task of this node; False once the node is stopping."""
        if self._nursery is None:
            return False
        try:
            self._nursery.start_soon(fn, *args)
        except RuntimeError:  # the nursery is closing: the node is stopping
            return False
        return True

    def _peer(self, address: str) -> _Peer:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer(address, self.rpc_stats)
        return peer

    # -- life -------------------------------------------------------------------------------

    async def run(
        self, bridge: Bridge, *endpoints: Endpoint, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve gRPC and the client endpoints, join the cluster, and run until the server is
        shut down; then leave the cluster. ``task_status.started`` gets the endpoints' ports."""
        self._bridge = bridge
        host, port = _split(self.address)
        handlers: list[Any] = [_MemberService(self)]
        if self.config.is_master:
            handlers.append(_MasterService(self))
        grpc = grpclib.server.Server(handlers)
        await bridge.to_asyncio(lambda: grpc.start(host, port))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                ports: list[int] = await nursery.start(self._serve, endpoints, nursery.cancel_scope)
                if self.config.is_master:
                    nursery.start_soon(self._evict_silent_members)
                else:
                    await self._register()
                    nursery.start_soon(self._keepalive)
                _logger.info("node %s up: local %s, remote %s", self.address, self.local_services, self.remote_services)
                task_status.started(ports)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self.config.rpc_timeout):
                if not self.config.is_master and self._registered.is_set():
                    try:
                        await self._call_master("unregister", pb.UnregisterRequest(service_addr=self.address))
                    except Exception as exc:  # the master may be gone first; it evicts us then
                        _logger.warning("unregister from the master failed: %r", exc)
                grpc.close()
                await bridge.to_asyncio(grpc.wait_closed)
            for peer in self._peers.values():
                peer.close()
            self._peers.clear()

    async def _serve(
        self, endpoints: Sequence[Endpoint], node_scope: trio.CancelScope, *, task_status: trio.TaskStatus[list[int]]
    ) -> None:
        """The server's life is the node's: once it has shut down, the node stops too."""
        await self.server.serve(*endpoints, task_status=task_status)
        node_scope.cancel()

    async def _call_master(self, method: str, request: Any) -> Any:
        assert self.config.master_address is not None
        stub = self._peer(self.config.master_address).master
        call = getattr(stub, method)
        return await self.bridge.to_asyncio(lambda: call(request, timeout=self.config.rpc_timeout))

    async def _register(self) -> None:
        """nano's registration: retry every retry_interval until the master answers."""
        while True:
            try:
                response = await self._call_master("register", pb.RegisterRequest(member_info=self.info()))
                break
            except Exception as exc:
                _logger.warning(
                    "Register current node to cluster failed: %r; retry in %gs", exc, self.config.retry_interval
                )
                await trio.sleep(self.config.retry_interval)
        for member in response.members:
            if member.service_addr != self.address:
                self.members[member.service_addr] = member
        self._registered.set()

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat)
            try:
                await self._call_master("heartbeat", pb.HeartbeatRequest(member_info=self.info()))
            except Exception as exc:
                _logger.warning("heartbeat to the master failed: %r", exc)

    # -- the master's registry ----------------------------------------------------------------

    async def master_register(self, info: pb.MemberInfo | None) -> pb.RegisterResponse:
        if info is None or not info.service_addr:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, "invalid register request")
        address = info.service_addr
        known = [m for a, m in self.members.items() if a != address]
        self._forget(address)  # a member restarting at the same address replaces itself
        self._tell_all("new_member", pb.NewMemberRequest(member_info=info), exclude=address)
        self.members[address] = info
        self._last_heartbeat[address] = trio.current_time()
        _logger.info(
            "member %s registered: %s; remote services now %s", address, list(info.services), self.remote_services
        )
        return pb.RegisterResponse(members=[self.info(), *known])

    async def master_unregister(self, address: str) -> pb.UnregisterResponse:
        if not address:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, "invalid register request")
        if address not in self.members:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.NOT_FOUND, f"address {address} has not registered")
        self._remove(address)
        return pb.UnregisterResponse()

    async def master_heartbeat(self, info: pb.MemberInfo | None) -> pb.HeartbeatResponse:
        if info is None or not info.service_addr:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, "invalid heartbeat request")
        assert info is not None
        if info.service_addr not in self.members:  # the master restarted: rebuild from heartbeats
            _logger.info("member %s re-appeared through its heartbeat", info.service_addr)
            self.members[info.service_addr] = info
        self._last_heartbeat[info.service_addr] = trio.current_time()
        return pb.HeartbeatResponse()

    def _remove(self, address: str) -> None:
        info = self.members.get(address)
        self._tell_all("del_member", pb.DelMemberRequest(service_addr=address), exclude=address)
        self._forget(address)
        _logger.info("member %s unregistered", address)
        if info is not None and self.config.unregister_callback is not None:
            try:
                self.config.unregister_callback(info)
            except Exception:
                _logger.exception("unregister callback failed")

    def _tell_all(self, method: str, request: Any, *, exclude: str) -> None:
        """NewMember/DelMember to every other member, each on its own with a deadline: one
        dead member never blocks the others (nano aborts at the first failure)."""
        for address in list(self.members):
            if address != exclude:
                self._start(self._tell, address, method, request)

    async def _tell(self, address: str, method: str, request: Any) -> None:
        call = getattr(self._peer(address).member, method)
        try:
            await self.bridge.to_asyncio(lambda: call(request, timeout=self.config.rpc_timeout))
        except Exception as exc:
            _logger.warning("%s to %s failed: %r", method, address, exc)

    async def _evict_silent_members(self) -> None:
        interval = self.config.heartbeat
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for address, last in list(self._last_heartbeat.items()):
                if now - last > 4 * interval:
                    _logger.warning("member %s silent for %.1fs: evicted", address, now - last)
                    self._remove(address)

    # -- membership changes on any node -------------------------------------------------------

    def member_added(self, info: pb.MemberInfo) -> None:
        if info.service_addr and info.service_addr != self.address:
            self.members[info.service_addr] = info

    def _forget(self, address: str) -> None:
        """A node left: drop it, close its channel, end the sessions of its clients."""
        self.members.pop(address, None)
        self._last_heartbeat.pop(address, None)
        peer = self._peers.pop(address, None)
        if peer is not None:
            peer.close()
        ended = [key for key in self._remote_sessions if key[0] == address]
        for key in ended:
            self._end_remote_session(key)
        if ended:
            _logger.info("gate %s is gone: %d remote session(s) ended", address, len(ended))

    # -- forwarding (a gate) ------------------------------------------------------------------

    def _select(self, service: str, session: Session) -> pb.MemberInfo | None:
        candidates = [m for m in self.members.values() if service in m.services]
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
        chooser = self.config.remote_route
        chosen = chooser(service, session, candidates) if chooser else random.choice(candidates)
        if chosen is not None:
            bindings[service] = chosen.service_addr
        return chosen

    async def forward(self, session: Session, message: Request | Notify) -> None:
        """Send a client's message to the member hosting its service. Any failure of a
        Request is answered to the client (404: no such service, 503: the member failed)."""
        route = message.route
        mid = message.id if type(message) is Request else 0
        service, dot, _ = route.rpartition(".")
        member = self._select(service, session) if dot else None
        if member is None:
            self.unknown_routes += 1
            _logger.warning("nano/handler: %s not found(forgot registered?)", route)
            if mid:
                self.server.router.answer_error(session, mid, CODE_NOT_FOUND, f"route not found: {route}")
            return
        peer = self._peer(member.service_addr)
        timeout = self.config.rpc_timeout
        seen = session.get(_SEEN_BY)
        if seen is None:
            seen = session[_SEEN_BY] = set()
        seen.add(member.service_addr)
        try:
            if mid:
                request = pb.RequestMessage(
                    gate_addr=self.address, session_id=session.id, id=mid, route=route, data=message.body
                )
                await self.bridge.to_asyncio(lambda: peer.member.handle_request(request, timeout=timeout))
            else:
                notify = pb.NotifyMessage(gate_addr=self.address, session_id=session.id, route=route, data=message.body)
                await self.bridge.to_asyncio(lambda: peer.member.handle_notify(notify, timeout=timeout))
        except Exception as exc:  # the request boundary: answer the client, keep serving
            _logger.warning("Process remote message (%d:%s) error: %r", session.id, route, exc)
            bindings = session.get(_BINDINGS)
            if bindings is not None:
                bindings.pop(service, None)
            if mid and not session.closed:
                status = getattr(exc, "status", None)
                code = CODE_NOT_FOUND if status is grpclib.const.Status.NOT_FOUND else CODE_UNAVAILABLE
                self.server.router.answer_error(
                    session, mid, code, f"{service} unavailable: {getattr(exc, 'message', exc)}"
                )

    def rpc(self, session: Session, route: str, body: bytes) -> None:
        """nano's ``session.RPC``: a Notify to the member hosting ``route``'s service, in the
        background, carrying the client's gate and session id (so that member's pushes reach
        the client directly). Raises LookupError when no member hosts the service."""
        entity = session.entity
        gate, sid = (entity.gate, entity.sid) if isinstance(entity, RemoteEntity) else (self.address, session.id)
        service = route.rpartition(".")[0]
        member = self._select(service, session)
        if member is None:
            raise LookupError(f"{service} not found(forgot registered?)")
        seen = session.get(_SEEN_BY)
        if seen is None:
            seen = session[_SEEN_BY] = set()
        seen.add(member.service_addr)
        notify = pb.NotifyMessage(gate_addr=gate, session_id=sid, route=route, data=body)
        self._start(self._tell, member.service_addr, "handle_notify", notify)

    async def call(self, route: str, body: bytes) -> bytes:
        """Request ``route`` from the member hosting its service and wait for the handler's
        answer (beyond nano, whose RPC is notify-only). Returns the Response body. Raises
        LookupError (no member hosts it), TimeoutError (no answer within the node's
        ``rpc_timeout``), ConnectionError and grpclib errors (the call failed). For a shorter
        deadline wrap it in ``trio.fail_after``: cancelling it cancels the gRPC call too.

        The call runs on a session of its own on the target, dropped afterwards; pushes made
        to it are not delivered anywhere."""
        service = route.rpartition(".")[0]
        candidates = sorted((m for m in self.members.values() if service in m.services), key=lambda m: m.service_addr)
        if not candidates:
            raise LookupError(f"{service} not found(forgot registered?)")
        member = random.choice(candidates)
        call_id = self.server.next_id()  # unique across the cluster, like session ids
        answered, box = self._calls[call_id] = (trio.Event(), [])
        peer = self._peer(member.service_addr)
        seconds = self.config.rpc_timeout
        request = pb.RequestMessage(gate_addr=self.address, session_id=call_id, id=1, route=route, data=body)
        try:
            with trio.fail_after(seconds):
                await self.bridge.to_asyncio(lambda: peer.member.handle_request(request, timeout=seconds))
                await answered.wait()
        except trio.TooSlowError:
            raise TimeoutError(f"{route}: no answer within {seconds}s") from None
        finally:
            del self._calls[call_id]
            self._start(self._tell, member.service_addr, "session_closed", pb.SessionClosedRequest(session_id=call_id))
        return box[0]

    def answer_call(self, sid: int, body: bytes) -> bool:
        """A HandleResponse for one of our calls (True), or for a client session (False)."""
        pending = self._calls.get(sid)
        if pending is None:
            return False
        pending[1].append(body)
        pending[0].set()
        return True

    def _local_session_closed(self, session: Session) -> None:
        """A gate's client left: tell every member, as nano does. (Only the members this gate
        forwarded to is not enough: an RPC chain - gate -> master -> chat - hands the session
        on without the gate seeing it.) Skipped for sessions never forwarded anywhere."""
        if not session.get(_SEEN_BY):
            return
        request = pb.SessionClosedRequest(session_id=session.id)
        for address in self.members:
            self._start(self._tell, address, "session_closed", request)

    # -- serving forwarded messages (a member) ------------------------------------------------

    async def handle(self, gate: str, sid: int, message: Request | Notify) -> pb.MemberHandleResponse:
        if not self.server.router.hosts(message.route):
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status.NOT_FOUND, f"service not found in current node: {message.route}"
            )
        session = self._remote_session(gate, sid)
        pending = self.server.router.dispatch(session, message)
        if isinstance(pending, tuple):
            await pending[0].push(pending[1])  # the lane is full: the gate's call waits
        return pb.MemberHandleResponse()

    def _remote_session(self, gate: str, sid: int) -> Session:
        key = (gate, sid)
        session = self._remote_sessions.get(key)
        if session is None:
            entity = RemoteEntity(self, gate, sid)
            if not self._start(entity.run):
                raise grpclib.exceptions.GRPCError(grpclib.const.Status.UNAVAILABLE, "this node is stopping")
            session = self.server.make_session(entity)
            self._remote_sessions[key] = session
        return session

    def _end_remote_session(self, key: tuple[str, int]) -> None:
        session = self._remote_sessions.pop(key, None)
        if session is None:
            return
        entity = session.entity
        assert isinstance(entity, RemoteEntity)
        entity.drop()
        self.server.session_closed(session)

    def session_closed(self, sid: int) -> None:
        for key in [key for key in self._remote_sessions if key[1] == sid]:
            self._end_remote_session(key)

    def gate_session(self, sid: int) -> Session:
        session = self.server.sessions.get(sid)
        if session is None:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.NOT_FOUND, f"session not found: {sid}")
        return session


class _MemberService(pb.MemberBase):
    """clusterpb.Member, answered by the node on the Trio side."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def handle_request(self, request_message: pb.RequestMessage) -> pb.MemberHandleResponse:
        m = request_message
        message = Request(m.id, m.route, m.data)
        return await self.node.bridge.to_trio(lambda: self.node.handle(m.gate_addr, m.session_id, message))

    async def handle_notify(self, notify_message: pb.NotifyMessage) -> pb.MemberHandleResponse:
        m = notify_message
        message = Notify(m.route, m.data)
        return await self.node.bridge.to_trio(lambda: self.node.handle(m.gate_addr, m.session_id, message))

    async def handle_push(self, push_message: pb.PushMessage) -> pb.MemberHandleResponse:
        async def push() -> pb.MemberHandleResponse:
            session = self.node.gate_session(push_message.session_id)
            session.entity.send_push(session, push_message.route, push_message.data)
            return pb.MemberHandleResponse()

        return await self.node.bridge.to_trio(push)

    async def handle_response(self, response_message: pb.ResponseMessage) -> pb.MemberHandleResponse:
        async def respond() -> pb.MemberHandleResponse:
            if self.node.answer_call(response_message.session_id, response_message.data):
                return pb.MemberHandleResponse()
            session = self.node.gate_session(response_message.session_id)
            session.entity.send_response(session, response_message.id, response_message.data)
            return pb.MemberHandleResponse()

        return await self.node.bridge.to_trio(respond)

    async def new_member(self, new_member_request: pb.NewMemberRequest) -> pb.NewMemberResponse:
        async def add() -> pb.NewMemberResponse:
            self.node.member_added(new_member_request.member_info)
            return pb.NewMemberResponse()

        return await self.node.bridge.to_trio(add)

    async def del_member(self, del_member_request: pb.DelMemberRequest) -> pb.DelMemberResponse:
        async def delete() -> pb.DelMemberResponse:
            self.node._forget(del_member_request.service_addr)
            return pb.DelMemberResponse()

        return await self.node.bridge.to_trio(delete)

    async def session_closed(self, session_closed_request: pb.SessionClosedRequest) -> pb.SessionClosedResponse:
        async def closed() -> pb.SessionClosedResponse:
            self.node.session_closed(session_closed_request.session_id)
            return pb.SessionClosedResponse()

        return await self.node.bridge.to_trio(closed)

    async def close_session(self, close_session_request: pb.CloseSessionRequest) -> pb.CloseSessionResponse:
        async def close() -> pb.CloseSessionResponse:
            session = self.node.server.sessions.get(close_session_request.session_id)
            if session is not None:
                session.close()
            return pb.CloseSessionResponse()

        return await self.node.bridge.to_trio(close)


class _MasterService(pb.MasterBase):
    """clusterpb.Master, answered by the master node on the Trio side."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def register(self, register_request: pb.RegisterRequest) -> pb.RegisterResponse:
        return await self.node.bridge.to_trio(lambda: self.node.master_register(register_request.member_info))

    async def unregister(self, unregister_request: pb.UnregisterRequest) -> pb.UnregisterResponse:
        return await self.node.bridge.to_trio(lambda: self.node.master_unregister(unregister_request.service_addr))

    async def heartbeat(self, heartbeat_request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        return await self.node.bridge.to_trio(lambda: self.node.master_heartbeat(heartbeat_request.member_info))
