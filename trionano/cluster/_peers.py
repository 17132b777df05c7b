"""The peer pool: one gRPC channel per node, made on first use, closed when the node leaves;
every call typed, under a deadline, and failing with a :class:`~._errors.ClusterError`."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeAlias, TypeVar

import grpclib.client
import grpclib.const

from .._stats import RpcCounters
from . import _codec as codec
from ._bridge import Bridge
from ._errors import NodeStopping, from_call
from ._generated import clusterpb as pb
from ._generated.trionano import push as pushpb
from ._pushwire import EncodedPushBatch
from ._stubs import TimedMasterStub, TimedMemberStub, TimedPushStub

__all__ = ["Peer", "Peers", "split_address"]

T = TypeVar("T")
_Hot: TypeAlias = codec.RequestMessage | codec.NotifyMessage | codec.PushMessage | codec.ResponseMessage
_MEMBER: Final = "/clusterpb.Member/"
_UNARY: Final = grpclib.const.Cardinality.UNARY_UNARY


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); an empty host is the loopback."""
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


class Peer:
    """Calls to one node: nano's ``Member`` service (every node) and ``Master`` service (the
    master). Each runs on asyncio under a deadline (``seconds``, or the pool's) and raises
    ClusterError: Unavailable, DeadlineExceeded, NotFound, ...; NodeStopping when this node
    is not running."""

    def __init__(self, pool: Peers, address: str) -> None:
        self.address = address
        self._pool = pool
        host, port = split_address(address)
        self._channel = grpclib.client.Channel(host, port)
        # timed and counted by method and peer in the pool's RpcCounters (trionano.metrics)
        self._member = TimedMemberStub(self._channel, peer=address, counters=pool.rpc_stats)
        self._master = TimedMasterStub(self._channel, peer=address, counters=pool.rpc_stats)
        self._push = TimedPushStub(self._channel, peer=address, counters=pool.rpc_stats)

    @property
    def channel(self) -> grpclib.client.Channel:
        """The channel to the node (made on the asyncio side: use it there)."""
        return self._channel

    def close(self) -> None:
        self._channel.close()

    async def _call(self, make: Callable[[float], Coroutine[Any, Any, T]], seconds: float | None) -> T:
        bridge = self._pool.bridge
        if bridge is None:
            raise NodeStopping("this node is not running")
        timeout = self._pool.timeout if seconds is None else seconds
        try:
            return await bridge.to_asyncio(lambda: make(timeout))
        except Exception as exc:
            error = from_call(exc)
            if error is None:
                raise
            raise error from exc

    # -- Member ---------------------------------------------------------------------------

    # the hot four: hand-encoded messages (._codec), no betterproto stub

    async def handle_request(self, message: codec.RequestMessage, *, seconds: float | None = None) -> None:
        await self._call(lambda t: self._hot("HandleRequest", message, t), seconds)

    async def handle_notify(self, message: codec.NotifyMessage, *, seconds: float | None = None) -> None:
        await self._call(lambda t: self._hot("HandleNotify", message, t), seconds)

    async def handle_push(self, message: codec.PushMessage) -> None:
        await self._call(lambda t: self._hot("HandlePush", message, t), None)

    async def handle_response(self, message: codec.ResponseMessage) -> None:
        await self._call(lambda t: self._hot("HandleResponse", message, t), None)

    async def _hot(self, method: str, message: _Hot, seconds: float) -> None:
        """One unary ``clusterpb.Member`` call (asyncio side), timed and counted. The deadline
        (``seconds``; ``math.inf``: none) is kept here (on expiry the call is cancelled:
        RST_STREAM, which ends the handler on the other side too) rather than sent as
        ``grpc-timeout``, whose value differs on every call: HPACK then encodes it anew into
        its table each time (~20% of grpclib's CPU per call, measured); nano's handlers do not
        read it."""
        start = time.perf_counter()
        failed = True
        try:
            async with (
                asyncio.timeout(None if math.isinf(seconds) else seconds),
                self._channel.request(_MEMBER + method, _UNARY, type(message), codec.MemberHandleResponse) as stream,
            ):
                await stream.send_message(message, end=True)
                await stream.recv_message()
            failed = False
        finally:
            self._pool.rpc_stats.observe(method, self.address, time.perf_counter() - start, failed=failed)

    async def new_member(self, info: pb.MemberInfo) -> None:
        request = pb.NewMemberRequest(member_info=info)
        await self._call(lambda t: self._member.new_member(request, timeout=t), None)

    async def del_member(self, address: str) -> None:
        request = pb.DelMemberRequest(service_addr=address)
        await self._call(lambda t: self._member.del_member(request, timeout=t), None)

    async def session_closed(self, sid: int) -> None:
        request = pb.SessionClosedRequest(session_id=sid)
        await self._call(lambda t: self._member.session_closed(request, timeout=t), None)

    async def close_session(self, sid: int) -> None:
        request = pb.CloseSessionRequest(session_id=sid)
        await self._call(lambda t: self._member.close_session(request, timeout=t), None)

    # -- trionano.push.Push (trionano nodes only) -------------------------------------------

    async def deliver(self, batch: EncodedPushBatch) -> pushpb.PushResult:
        return await self._call(lambda t: self._push.deliver_encoded(batch, seconds=t), None)

    # -- Master ---------------------------------------------------------------------------

    async def register(self, info: pb.MemberInfo) -> list[pb.MemberInfo]:
        request = pb.RegisterRequest(member_info=info)
        response = await self._call(lambda t: self._master.register(request, timeout=t), None)
        return list(response.members)

    async def unregister(self, address: str, *, seconds: float | None = None) -> None:
        request = pb.UnregisterRequest(service_addr=address)
        await self._call(lambda t: self._master.unregister(request, timeout=t), seconds)

    async def heartbeat(self, info: pb.MemberInfo) -> None:
        request = pb.HeartbeatRequest(member_info=info)
        await self._call(lambda t: self._master.heartbeat(request, timeout=t), None)


class Peers:
    """The pool, by service address. ``timeout`` bounds every call (the node's
    ``rpc_timeout``); ``rpc_stats`` times and counts them; :meth:`attach` gives it the bridge
    while the node runs."""

    def __init__(self, timeout: float, rpc_stats: RpcCounters) -> None:
        self.timeout = timeout
        self.rpc_stats = rpc_stats
        self.bridge: Bridge | None = None
        self._peers: dict[str, Peer] = {}

    def attach(self, bridge: Bridge | None) -> None:
        self.bridge = bridge

    def __getitem__(self, address: str) -> Peer:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = Peer(self, address)
        return peer

    def close(self, address: str) -> None:
        """Close the channel to ``address`` (a node that left); a later call reopens one."""
        peer = self._peers.pop(address, None)
        if peer is not None:
            peer.close()

    def close_all(self) -> None:
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()
