"""A cluster node: nano's master/member/gate roles over grpclib (nano.md §5), composed.

::

    Node                       the server it builds, its membership, and its life
    ├── Peers        _peers       one channel per node; typed calls under a deadline
    ├── Links        _links       the fast path: one stream per trionano peer, batches of frames
    ├── Membership   _membership  the other nodes and their services
    ├── Registry     _registry    the master's: Register/Unregister/Heartbeat, eviction
    ├── Keepalive    _keepalive   a member's: registration, heartbeats, rejoining a master
                                  that went away as soon as it is back
    ├── Gate         _gate        forwarding (per-session queues), replies for clients, calls
    ├── RemoteSessions _remote    stand-ins for other gates' clients, and their outboxes
    ├── PushHub      _push        cluster-wide groups and pushes (trionano.push.Push)
    ├── FrameReceiver _receiver   frames that come in over the streams, to the gate or stand-ins
    └── services     _services    clusterpb.Member / clusterpb.Master over the bridge (and the
                     _links       trionano.cluster.Stream service)

Every node serves ``Member`` on its service address; the master also serves ``Master``. A
node with client endpoints is a gate. State lives on the Trio side; grpclib's handlers cross
over through the bridge (:mod:`trionano.cluster._bridge`).

Beyond nano: every RPC has a deadline; a client whose request cannot be forwarded gets an error
Response (nano leaves it waiting); a hung member never stalls a client's reader; members'
channels are closed when they leave; stand-in sessions die with their gate; NewMember and
DelMember failures are logged, never abort a registration; session ids are unique across the
cluster with no configuration (:mod:`trionano.cluster._ids`); between two trionano nodes,
messages ride one long-lived stream per peer in batches (:mod:`trionano.cluster._links`), and
nano's unary methods stay for the others; a restarted master knows every live member within
about a second of being back, not at their next keepalive (:mod:`trionano.cluster._keepalive`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import grpclib.server
import trio

from .._component import Components
from .._config import Config
from .._listen import Endpoint
from .._log import RateLimitedLog, client_text, flush_periodically
from .._server import Server
from .._stats import RpcCounters
from . import _generated as _gen_root  # noqa: F401 - the generated package must import first
from ._audit import Audits
from ._bridge import Bridge
from ._counters import Counters, Statistics
from ._errors import NodeStopping
from ._gate import Gate, RemoteRoute
from ._generated import clusterpb as pb
from ._ids import NODE_BITS, SessionIds
from ._keepalive import Keepalive
from ._links import Links, StreamService
from ._membership import Membership
from ._owed import OwedCloses
from ._peers import Peers, split_address
from ._push import Audience, ClusterGroup, PushHub, PushStatistics
from ._reach import Reachability
from ._receiver import FrameReceiver
from ._registry import Registry
from ._remote import RemoteSessions
from ._services import MasterService, MemberService, PushService
from ._tasks import Tasks

__all__ = ["ClusterConfig", "Node", "RemoteRoute"]

_logger = logging.getLogger("trionano.cluster")

#: Seconds a node may take to leave the cluster (Unregister at the master, the gRPC server's
#: close) past its server's shutdown deadline (``Server.shutdown_deadline``), at most
#: ``rpc_timeout``.
LEAVE_TIME: Final = 1.0


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """A node's place in the cluster.

    ``service_address`` ("host:port") serves gRPC; a member names the master's with
    ``master_address``; ``is_master`` makes the master (which may host services too).
    ``heartbeat`` is the member->master keepalive (the master evicts after 4 silent intervals;
    beyond nano, a member whose stream to a trionano master ends heartbeats it again within
    about a second of its being back, so a restarted master need not wait for the keepalive:
    :mod:`trionano.cluster._keepalive`);
    ``rpc_timeout`` bounds every call (a forwarded Request unanswered by then, counted from
    when the gate read it, is answered 503, on either path) but a forwarded notify's unary
    call, which waits while its member is in the cluster (:meth:`Gate._send`);
    ``retry_interval`` spaces registration attempts. ``max_pending_forwards`` bounds each
    session's messages for other nodes, waiting or in flight (over it a Request is answered
    503 "too many messages waiting", after the answers of the Requests ahead of it). 1,024 by
    default: a client's burst a local server answers (it queues 4,096 tasks per lane) goes
    through a gate too, while a hung member holds at most that many per session, each its
    body plus a few hundred bytes of bookkeeping, until their deadlines.
    ``max_pending_pushes`` and ``max_pending_push_bytes`` (16 MiB) bound the cluster pushes
    held for each other gate, queued or on their way (on the stream until written): a gate
    that is slow or stopped holds at most that much here; pushes over it are dropped, counted
    and logged (:meth:`Node.push_statistics`: ``dropped``, ``held``, ``held_bytes``). On a
    gate they also bound the pushes received and not yet delivered to its clients: over it, the
    pushes that come on a stream are shed (counted, ``shed``; logged) and the gate reads on, so
    that the answers to its Requests behind them never wait; those that come in nano-style
    unary ``Deliver`` calls wait for room (the call holds nothing else).
    ``node_id`` fixes the node part of session ids (``0 <= node_id < 2**20``, unique among
    running nodes); by default it is drawn at random (:mod:`trionano.cluster._ids`).
    ``fast_path`` (beyond nano): talk to other trionano nodes over one stream each, in
    batches (:mod:`trionano.cluster._links`); False serves and uses nano's unary methods
    only, as a Go nano node does.
    """

    service_address: str
    master_address: str | None = None
    is_master: bool = False
    label: str = ""
    heartbeat: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    retry_interval: float = attrs.field(default=3.0, validator=attrs.validators.gt(0))
    rpc_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    max_pending_forwards: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    max_pending_pushes: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    max_pending_push_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=attrs.validators.ge(1))
    node_id: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.ge(0), attrs.validators.lt(1 << NODE_BITS)]),
    )
    fast_path: bool = True
    remote_route: RemoteRoute | None = None
    unregister_callback: Callable[[pb.MemberInfo], None] | None = None

    def __attrs_post_init__(self) -> None:
        if not self.is_master and not self.master_address:
            raise ValueError("a member needs the master's address")


class Node:
    """One cluster node and the :class:`~trionano.Server` it builds for ``components`` (with
    ``server_config``): run it with :meth:`run` inside :func:`trionano.cluster.run` (which
    hosts Trio on grpclib's asyncio loop). The node hands its server the session-id source
    (unique across the cluster) and its gate as the router for remote routes."""

    def __init__(self, components: Components, config: ClusterConfig, server_config: Config | None = None) -> None:
        self.config: Final = config
        self.address: Final = config.service_address
        self._counters = Counters()
        self._log = RateLimitedLog(_logger)
        self._tasks = Tasks()
        self.rpc_stats: Final = RpcCounters()  # every gRPC call this node makes, by method and peer
        self._peers = Peers(config.rpc_timeout, self.rpc_stats)
        self._links = Links(
            self.address,
            self._tasks,
            enabled=config.fast_path,
            timeout=config.rpc_timeout,
            channel=lambda address: self._peers[address].channel,
        )
        self.membership: Final = Membership(self.address)
        self._reach = Reachability(
            self._tasks,
            timeout=config.rpc_timeout,
            longest=min(config.heartbeat, 5.0),
            gone_after=4 * config.heartbeat,  # the master's eviction window
            on_gone=self._gone,
        )
        self._gate = Gate(
            self.address,
            self.membership,
            self._peers,
            self._links,
            self._tasks,
            self._reach,
            OwedCloses(self._peers, self._tasks, self._log, longest=min(config.heartbeat, 5.0)),
            rpc_timeout=config.rpc_timeout,
            max_pending_forwards=config.max_pending_forwards,
            remote_route=config.remote_route,
            counters=self._counters,
            log=self._log,
        )
        self.server: Final = Server(
            components, server_config, session_ids=SessionIds(config.node_id), remote=self._gate
        )
        self._gate.attach(self.server)
        self._push = PushHub(
            self.address,
            self.membership,
            self._peers,
            self._links,
            self._tasks,
            bound=config.max_pending_pushes,
            bound_bytes=config.max_pending_push_bytes,
            reach=self._reach,
        )
        self._push.attach(self.server)
        self._remote = RemoteSessions(
            self.server, self._peers, self._links, self._tasks, counters=self._counters, log=self._log
        )
        self._audits = Audits(
            self._remote,
            self._links,
            self._tasks,
            self._reach,
            period=4 * config.heartbeat,
            timeout=config.rpc_timeout,
        )
        self._receiver = FrameReceiver(self._gate, self._remote, self._push, self._log)
        self._registry = (
            Registry(
                self.membership,
                self._peers,
                self._tasks,
                me=self.info,
                forget=self._forget,
                heartbeat=config.heartbeat,
                unregister_callback=config.unregister_callback,
            )
            if config.is_master
            else None
        )
        self._keepalive = (
            None
            if config.master_address is None or config.is_master
            else Keepalive(
                config.master_address,
                self._peers,
                self._links,
                self.membership,
                self._log,
                info=self.info,
                heartbeat=config.heartbeat,
                retry_interval=config.retry_interval,
                rpc_timeout=config.rpc_timeout,
            )
        )

    # -- views ------------------------------------------------------------------------------

    @property
    def local_services(self) -> list[str]:
        """The services this node hosts, sorted."""
        return self.server.components.services

    @property
    def remote_services(self) -> list[str]:
        """The services the other nodes host, sorted (as this node last heard)."""
        return self.membership.remote_services

    @property
    def remote_sessions(self) -> int:
        """How many stand-ins for other gates' clients this node holds."""
        return len(self._remote)

    def info(self) -> pb.MemberInfo:
        """This node as the master lists it: label, service address, services."""
        return pb.MemberInfo(label=self.config.label, service_addr=self.address, services=self.local_services)

    def statistics(self) -> Statistics:
        """The node's cluster counters now (its server's are ``server.statistics()``)."""
        counts = self._links.counts
        frames_held, bytes_held = self._links.held()
        return self._counters.snapshot(
            frames_out=counts.frames_out,
            frames_in=counts.frames_in,
            batches_out=counts.batches_out,
            batches_in=counts.batches_in,
            frames_refused=counts.frames_refused,
            frames_held=frames_held,
            bytes_held=bytes_held,
        )

    def push_statistics(self) -> PushStatistics:
        """The node's cluster-push counters now (drops, failures, deliveries)."""
        return self._push.statistics()

    def count_push_api(self, answer: str) -> None:
        """Count one answer of the HTTP push API served for this node ("accepted", "refused"
        or "unreached"; "gone", a request whose client went away before its body came, not
        answered; or "broken", a connection Hypercorn failed on, closed alone;
        :func:`~trionano.cluster.push_api.serve_push_api` calls it), in
        :meth:`push_statistics`."""
        self._push.count_api(answer)

    def group(self, name: str) -> ClusterGroup:
        """The cluster-wide group ``name``: this node's clients join it here, and its
        broadcast reaches the members on every gate (beyond nano, whose groups are per node).
        A handle on the name that keeps nothing here by itself: this node keeps its part of
        the group while it has members (:class:`ClusterGroup`). Raises ValueError for an empty
        name or one that cannot be UTF-8."""
        return self._push.group(name)

    def push(self, route: str, value: object, audience: Audience) -> int:
        """Push ``value`` (serialized once, here) on ``route`` to ``audience`` on every gate of
        the cluster, this node included when it serves clients; returns how many gates it was
        delivered or queued for. Never waits: each other node has a bounded queue and a sender
        task (a slow or stopped gate drops its overflow, counted in :meth:`push_statistics`).
        Raises ValueError for an empty route, one over 255 UTF-8 bytes or one that cannot be
        UTF-8 (a lone surrogate), SerializeError (message text that cannot be UTF-8 too),
        MessageTooLarge (over the server's ``max_packet_size``)."""
        return self._push.push(route, value, audience)

    async def call(self, route: str, body: bytes) -> bytes:
        """Request ``route`` from a member hosting its service and wait for the handler's
        answer (beyond nano, whose RPC is notify-only). Returns the Response body. Raises
        ServiceNotFound (a NotFound, a LookupError: no member hosts it), DeadlineExceeded (a TimeoutError: no
        answer within the node's ``rpc_timeout``), Unavailable and other ClusterErrors (the
        call failed). For a shorter deadline wrap it in ``trio.fail_after``: cancelling it
        cancels the gRPC call too.

        The call runs on a session of its own on the target, ended afterwards; pushes made to
        it are not delivered anywhere."""
        return await self._gate.call(route, body)

    # -- life -------------------------------------------------------------------------------

    async def run(
        self, bridge: Bridge, *endpoints: Endpoint, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve gRPC and the client endpoints, join the cluster, and run until the server is
        shut down; then leave the cluster by the server's shutdown deadline plus
        :data:`LEAVE_TIME` (that long after the server stopped, when it stopped later or was
        cancelled): a master that does not answer by then evicts this member later.
        ``task_status.started`` gets the endpoints' ports.
        Raises NodeStopping when the server is shut down before the node has joined the
        cluster (e.g. SIGINT while the master cannot be reached)."""
        host, port = split_address(self.address)
        up = False
        services = self.services(bridge)
        grpc = grpclib.server.Server(services)
        # every rate-limited log of the node and of its services: reported every second (a
        # task of the node's) and at the end, once the services are closed
        logs = [self._log, self._push.log]
        logs += [service.log for service in services if not isinstance(service, StreamService)]
        self._push.serves_clients = bool(endpoints)
        self._peers.attach(bridge)
        self._links.attach(bridge, self._receiver)
        try:
            await bridge.to_asyncio(lambda: grpc.start(host, port))
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(exc.errno, f"cannot serve gRPC on {self.address}: {reason}") from exc
        try:
            async with trio.open_nursery() as nursery:
                self._tasks.open(nursery)
                nursery.start_soon(flush_periodically, logs)
                nursery.start_soon(self._gate.expire_requests)
                nursery.start_soon(self._audits.run)
                ports: list[int] = await nursery.start(self._serve, endpoints, nursery.cancel_scope)
                if self._registry is not None:
                    nursery.start_soon(self._registry.evict_silent_members)
                if self._keepalive is not None:
                    await self._keepalive.register()
                    nursery.start_soon(self._keepalive.keep_alive)
                self._gate.joined = True
                _logger.info("node %s up: local %s, remote %s", self.address, self.local_services, self.remote_services)
                task_status.started(ports)
                up = True
            if not up:  # shut down while joining: the caller's start() must not wait for ports
                raise NodeStopping(f"node {self.address} was shut down before it joined the cluster")
        finally:
            self._tasks.close()
            # leaving (Unregister, the gRPC server's close) ends by the server's shutdown deadline
            # plus LEAVE_TIME (from now, when it has passed or there is none): a master that
            # does not answer, frozen or overloaded, evicts this member later instead
            now = trio.current_time()
            deadline = self.server.shutdown_deadline
            leave_by = (max(deadline, now) if deadline < math.inf else now) + min(self.config.rpc_timeout, LEAVE_TIME)
            with trio.CancelScope(shield=True, deadline=leave_by):
                if self._keepalive is not None:
                    await self._keepalive.unregister()
                grpc.close()
                await bridge.to_asyncio(grpc.wait_closed)
            self._peers.close_all()
            self._peers.attach(None)
            self._links.attach(None, None)
            for log in logs:  # what the last windows suppressed
                log.flush()

    def services(self, bridge: Bridge) -> list[MemberService | MasterService | PushService | StreamService]:
        """The gRPC services this node serves over ``bridge``: nano's ``Member`` (and
        ``Master`` on the master), trionano's ``Push``, and ``Stream`` unless ``fast_path``
        is off."""
        services: list[MemberService | MasterService | PushService | StreamService] = [
            MemberService(bridge, forwarded=self._remote, gate=self._gate, view=self),
            PushService(bridge, push=self._push),
        ]
        if self._registry is not None:
            services.append(MasterService(bridge, registry=self._registry))
        if self.config.fast_path:
            services.append(StreamService(bridge, self._links))
        return services

    async def _serve(
        self, endpoints: Sequence[Endpoint], node_scope: trio.CancelScope, *, task_status: trio.TaskStatus[list[int]]
    ) -> None:
        """The server's life is the node's: once it has shut down, the node stops too."""
        await self.server.serve(*endpoints, task_status=task_status)
        node_scope.cancel()

    # -- membership changes (clusterpb.Member NewMember/DelMember, Trio side) -----------------

    async def new_member(self, request: pb.NewMemberRequest) -> pb.NewMemberResponse:
        """``clusterpb.Member/NewMember``: the master announces a member that joined. A member
        this node already knows (the master lost it and found it again: it was evicted and
        came back, or the master restarted) is asked which of its clients' stand-ins here have
        ended meanwhile (:mod:`._audit`)."""
        info = request.member_info
        if info is not None:
            known = info.service_addr in self.membership
            self.membership.add(info)
            _logger.info(
                "told of member %s: remote services now %s", client_text(info.service_addr), self.remote_services
            )
            if known:
                self._audits.audit(info.service_addr)
        return pb.NewMemberResponse()

    async def del_member(self, request: pb.DelMemberRequest) -> pb.DelMemberResponse:
        """``clusterpb.Member/DelMember``: the master announces a member that left; what this
        node held for it (its channel, its clients' stand-ins) ends."""
        self._forget(request.service_addr)
        return pb.DelMemberResponse()

    def _gone(self, address: str) -> None:
        """Nothing has listened at ``address`` for the eviction window: its process is gone.
        Its clients' stand-ins end here (no master may be there to say so: :mod:`._audit`);
        it stays in the cluster view (only the master's DelMember removes it)."""
        self._remote.gate_gone(address)

    def _forget(self, address: str) -> None:
        """A node left: drop it, close its channel, end the stand-ins of its clients."""
        self.membership.remove(address)
        self._reach.forget(address)
        self._gate.member_gone(address)
        self._links.forget(address)
        self._peers.close(address)
        self._remote.gate_gone(address)
        self._push.gate_gone(address)
