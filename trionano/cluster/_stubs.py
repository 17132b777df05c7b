"""gRPC stubs that time and count every call they make, by method and peer, in the node's
:class:`~trionano._stats.RpcCounters` (read by :mod:`trionano.metrics`).

They run on the asyncio side of the bridge, in the one thread both loops share: the duration is
the gRPC call's own, without the hop across the bridge.
"""

from __future__ import annotations

import time
from typing import Any

import betterproto
import grpclib.client

from .._stats import RpcCounters
from ._generated import clusterpb as pb
from ._generated.trionano import push as pushpb
from ._pushwire import EncodedPushBatch

__all__ = ["TimedMasterStub", "TimedMemberStub", "TimedPushStub"]


class _Timed(betterproto.ServiceStub):
    def __init__(self, channel: grpclib.client.Channel, *, peer: str, counters: RpcCounters) -> None:
        super().__init__(channel)
        self._peer = peer
        self._counters = counters

    # every unary method of a betterproto stub calls this one
    async def _unary_unary(self, route: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        failed = True  # an error or a cancellation
        try:
            response = await super()._unary_unary(route, *args, **kwargs)
            failed = False
            return response
        finally:
            method = route.rpartition("/")[2]  # "/clusterpb.Member/HandleRequest" -> "HandleRequest"
            self._counters.observe(method, self._peer, time.perf_counter() - start, failed=failed)


class TimedMemberStub(_Timed, pb.MemberStub):
    """``clusterpb.Member`` calls to ``peer``, counted."""


class TimedMasterStub(_Timed, pb.MasterStub):
    """``clusterpb.Master`` calls to ``peer``, counted."""


class TimedPushStub(_Timed, pushpb.PushStub):
    """``trionano.push.Push`` calls to ``peer``, counted."""

    async def deliver_encoded(self, batch: EncodedPushBatch, *, seconds: float) -> pushpb.PushResult:
        """``Deliver`` of a batch encoded by hand (:mod:`._pushwire`), no betterproto message."""
        result: pushpb.PushResult = await self._unary_unary(
            "/trionano.push.Push/Deliver", batch, pushpb.PushResult, timeout=seconds
        )
        return result
