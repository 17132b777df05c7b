"""nano's cluster on Trio: master, members and gates over grpclib, wire-compatible with Go
nano's ``clusterpb`` (``proto/cluster.proto``).

::

    node = Node(components, ClusterConfig(service_address="127.0.0.1:34580", master_address="127.0.0.1:34567"))
    run_node(node, TCPEndpoint("127.0.0.1", 3250))       # until SIGINT/SIGTERM

grpclib runs on asyncio; trionano on Trio: :func:`run_node` runs Trio, and a Trio task drives
grpclib's asyncio loop in the same thread (the bridge lives in one module,
:mod:`trionano.cluster._bridge`). Standalone servers never need this: they keep plain ``trio.run``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
from collections.abc import Iterator
from typing import Final

import trio

from .._listen import Endpoint
from .._run import tune_gc
from ._bridge import Bridge as Bridge
from ._bridge import run as run
from ._counters import Statistics as Statistics
from ._errors import ClusterError as ClusterError
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import InvalidRequest as InvalidRequest
from ._errors import NodeStopping as NodeStopping
from ._errors import NotFound as NotFound
from ._errors import ServiceNotFound as ServiceNotFound
from ._errors import Unavailable as Unavailable
from ._generated.clusterpb import MemberInfo as MemberInfo
from ._node import ClusterConfig as ClusterConfig
from ._node import Node as Node
from ._node import RemoteRoute as RemoteRoute
from ._push import Audience as Audience
from ._push import ClusterGroup as ClusterGroup
from ._push import PushStatistics as PushStatistics

__all__ = [
    "Audience",
    "Bridge",
    "ClusterConfig",
    "ClusterError",
    "ClusterGroup",
    "DeadlineExceeded",
    "InvalidRequest",
    "MemberInfo",
    "Node",
    "NodeStopping",
    "NotFound",
    "PushStatistics",
    "RemoteRoute",
    "ServiceNotFound",
    "Statistics",
    "Unavailable",
    "exit_if_cannot_listen",
    "run",
    "run_node",
]


_logger = logging.getLogger("trionano.cluster")


def run_node(node: Node, *endpoints: Endpoint) -> None:
    """Run ``node`` (its server on ``endpoints``, its gRPC service, its membership) in this
    process until SIGINT/SIGTERM, which shut the server down gracefully and leave the cluster.
    Once the node is up, the garbage collector is tuned for a long-running server, as
    :func:`trionano.run` does (:func:`trionano.tune_gc`). When it cannot listen (its gRPC
    address or a client endpoint's port is taken, not local, or not allowed) it logs one
    line naming the role and the address and exits with status 1 (SystemExit)."""

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(functools.partial(node.run, bridge, *endpoints))
            except NodeStopping as exc:  # a signal before the node was up: a quiet exit
                _logger.info("%s", exc)
                return
            tune_gc()

    role = "master" if node.config.is_master else "gate" if endpoints else "member"
    with exit_if_cannot_listen(f"{role} {node.address}"):
        run(main, on_signal=node.server.shutdown)


@contextlib.contextmanager
def exit_if_cannot_listen(what: str) -> Iterator[None]:
    """Around a process's :func:`run` of a node: when the node, or what is served beside it
    (the push API), cannot listen (an address taken, not local, or not allowed: an OSError
    however deep in exception groups), log one line, ``what`` and the reason (e.g. ``gate
    127.0.0.1:34570: cannot listen on 127.0.0.1:34590: Address already in use``), and exit
    with status 1 (SystemExit), not a traceback. Anything else passes through.
    :func:`run_node` runs in it."""
    try:
        yield
    except (OSError, ExceptionGroup) as exc:
        failure = _listen_failure(exc)
        if failure is None:
            raise
        _logger.error("%s: %s", what, failure.strerror)
        raise SystemExit(1) from None


_CANNOT_LISTEN: Final = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def _listen_failure(exc: BaseException) -> OSError | None:
    """The error that kept the node from listening (a port taken, an address not local, a
    port not allowed), however deep in exception groups; None for anything else."""
    if isinstance(exc, OSError):
        return exc if exc.errno in _CANNOT_LISTEN else None
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _listen_failure(inner)
            if found is not None:
                return found
    return None
