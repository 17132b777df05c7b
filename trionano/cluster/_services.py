"""nano's ``clusterpb`` services as grpclib sees them: adapters whose every method crosses
the bridge (:func:`crosses`) to the role that answers it on the Trio side, and maps what that
raises to a gRPC status (:func:`~._errors.to_status`). The services are nano's, unary, exactly:
a Go nano node keeps working with a trionano node in every role. trionano nodes also serve
``trionano.push.Push`` (:class:`PushService`, proto/push.proto), which Go nano never calls."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Protocol, TypeAlias, TypeVar

import grpclib.const
import grpclib.exceptions
import grpclib.server
from grpclib.const import Status

from .._log import RateLimitedLog
from . import _codec as codec
from ._bridge import Bridge
from ._errors import to_status
from ._generated import clusterpb as pb
from ._generated.trionano import push as pushpb
from ._pushwire import EncodedPushBatch

__all__ = [
    "ForwardedSide",
    "GateSide",
    "MasterService",
    "MasterSide",
    "MemberService",
    "PushService",
    "PushSide",
    "ViewSide",
    "crosses",
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Adapter = TypeVar("Adapter", "MemberService", "MasterService", "PushService")


def crosses(
    method: Callable[[Adapter, Req], Awaitable[Resp]],
) -> Callable[[Adapter, Req], Coroutine[Any, Any, Resp]]:
    """Run ``method`` on the Trio side; what it raises reaches the caller as a gRPC status
    (a stopping node: UNAVAILABLE), never as grpclib's "Application error" (UNKNOWN)."""
    name = method.__name__

    @functools.wraps(method)
    async def on_asyncio(self: Adapter, request: Req) -> Resp:
        try:
            return await self.bridge.to_trio(functools.partial(method, self, request))
        except Exception as exc:
            raise to_status(exc, name, self.log) from None

    return on_asyncio


#: what a hot handler's Trio side returns: None (done), or what must still be awaited in a
#: Trio task (rare: a handler lane was full) before the call is answered
Then: TypeAlias = Callable[[], Awaitable[None]] | None


class ForwardedSide(Protocol):
    """Messages forwarded to this node's services, and their sessions' ends. ``take_*`` run
    synchronously in Trio's context (no task per call) and raise ClusterError."""

    def take_request(self, message: codec.RequestMessage) -> Then: ...
    def take_notify(self, message: codec.NotifyMessage) -> Then: ...
    async def session_closed(self, request: pb.SessionClosedRequest) -> pb.SessionClosedResponse: ...


class GateSide(Protocol):
    """Replies for this node's clients. ``take_*`` run synchronously in Trio's context and
    raise ClusterError (NotFound: the client has left)."""

    def take_push(self, message: codec.PushMessage) -> None: ...
    def take_response(self, message: codec.ResponseMessage) -> None: ...
    async def close_session(self, request: pb.CloseSessionRequest) -> pb.CloseSessionResponse: ...


class ViewSide(Protocol):
    """Changes to this node's view of the cluster."""

    async def new_member(self, request: pb.NewMemberRequest) -> pb.NewMemberResponse: ...
    async def del_member(self, request: pb.DelMemberRequest) -> pb.DelMemberResponse: ...


class MasterSide(Protocol):
    """The master's registry."""

    async def register(self, request: pb.RegisterRequest) -> pb.RegisterResponse: ...
    async def unregister(self, request: pb.UnregisterRequest) -> pb.UnregisterResponse: ...
    async def heartbeat(self, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse: ...


class PushSide(Protocol):
    """Cluster-wide pushes for this node's clients."""

    async def handle_deliver(self, batch: EncodedPushBatch) -> pushpb.PushResult: ...


class MemberService(pb.MemberBase):
    """``clusterpb.Member``, served by every node."""

    def __init__(self, bridge: Bridge, *, forwarded: ForwardedSide, gate: GateSide, view: ViewSide) -> None:
        self.bridge = bridge
        #: the asyncio side's log of failed calls (used from grpclib's thread only)
        self.log = RateLimitedLog(logging.getLogger("trionano.cluster"))
        self._forwarded = forwarded
        self._gate = gate
        self._view = view

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """betterproto's mapping, with the four hot methods on hand codecs (:mod:`._codec`)
        and synchronous Trio-side handlers: no betterproto message, no Trio task per call."""
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        hot = {
            "HandleRequest": (self._handle_request, codec.RequestMessage),
            "HandleNotify": (self._handle_notify, codec.NotifyMessage),
            "HandlePush": (self._handle_push, codec.PushMessage),
            "HandleResponse": (self._handle_response, codec.ResponseMessage),
        }
        for name, (handler, request_type) in hot.items():
            mapping[f"/clusterpb.Member/{name}"] = grpclib.const.Handler(
                handler, grpclib.const.Cardinality.UNARY_UNARY, request_type, codec.MemberHandleResponse
            )
        return mapping

    async def _hot(self, stream: grpclib.server.Stream[Any, Any], take: Callable[[Any], Then], name: str) -> None:
        try:
            message = await stream.recv_message()
        except codec.MessageError as exc:
            raise grpclib.exceptions.GRPCError(Status.INVALID_ARGUMENT, f"{name}: {exc}") from None
        try:
            then = await self.bridge.call_soon(take, message)
            if then is not None:
                await self.bridge.to_trio(then)
        except Exception as exc:
            raise to_status(exc, name, self.log) from None
        await stream.send_message(_ANSWERED)

    async def _handle_request(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await self._hot(stream, self._forwarded.take_request, "handle_request")

    async def _handle_notify(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await self._hot(stream, self._forwarded.take_notify, "handle_notify")

    async def _handle_push(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await self._hot(stream, self._gate.take_push, "handle_push")

    async def _handle_response(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await self._hot(stream, self._gate.take_response, "handle_response")

    @crosses
    async def new_member(self, new_member_request: pb.NewMemberRequest) -> pb.NewMemberResponse:
        return await self._view.new_member(new_member_request)

    @crosses
    async def del_member(self, del_member_request: pb.DelMemberRequest) -> pb.DelMemberResponse:
        return await self._view.del_member(del_member_request)

    @crosses
    async def session_closed(self, session_closed_request: pb.SessionClosedRequest) -> pb.SessionClosedResponse:
        return await self._forwarded.session_closed(session_closed_request)

    @crosses
    async def close_session(self, close_session_request: pb.CloseSessionRequest) -> pb.CloseSessionResponse:
        return await self._gate.close_session(close_session_request)


_ANSWERED: Final = codec.MemberHandleResponse()


class MasterService(pb.MasterBase):
    """``clusterpb.Master``, served by the master."""

    def __init__(self, bridge: Bridge, *, registry: MasterSide) -> None:
        self.bridge = bridge
        #: the asyncio side's log of failed calls (used from grpclib's thread only)
        self.log = RateLimitedLog(logging.getLogger("trionano.cluster"))
        self._registry = registry

    @crosses
    async def register(self, register_request: pb.RegisterRequest) -> pb.RegisterResponse:
        return await self._registry.register(register_request)

    @crosses
    async def unregister(self, unregister_request: pb.UnregisterRequest) -> pb.UnregisterResponse:
        return await self._registry.unregister(unregister_request)

    @crosses
    async def heartbeat(self, heartbeat_request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        return await self._registry.heartbeat(heartbeat_request)


class PushService(pushpb.PushBase):
    """``trionano.push.Push``, served by every trionano node; the batch on a hand codec
    (:mod:`._pushwire`: a 10,000-uid audience takes betterproto ~100 ms to parse)."""

    def __init__(self, bridge: Bridge, *, push: PushSide) -> None:
        self.bridge = bridge
        #: the asyncio side's log of failed calls (used from grpclib's thread only)
        self.log = RateLimitedLog(logging.getLogger("trionano.cluster"))
        self._push = push

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            "/trionano.push.Push/Deliver": grpclib.const.Handler(
                self._deliver, grpclib.const.Cardinality.UNARY_UNARY, EncodedPushBatch, pushpb.PushResult
            )
        }

    async def _deliver(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        batch = await stream.recv_message()
        assert batch is not None  # grpclib's unary handler always has the request
        try:
            result = await self.bridge.to_trio(functools.partial(self._push.handle_deliver, batch))
        except Exception as exc:
            raise to_status(exc, "deliver", self.log) from None
        await stream.send_message(result)
