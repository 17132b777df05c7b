"""The cluster's one error family, and the one place where errors cross the gRPC boundary:
:func:`from_call` turns what a grpclib call raises (a status, a deadline, a lost connection)
into a :class:`ClusterError`; :func:`to_status` turns what a Trio-side handler raises into
the gRPC status its caller gets.

::

    ClusterError (TrionanoError)      .status: the gRPC status; str(): the reason
    ├── Unavailable (ConnectionError)     the peer cannot be reached or went away (UNAVAILABLE)
    │   └── NodeStopping                  this node is stopping
    ├── DeadlineExceeded (TimeoutError)   no answer within the deadline (DEADLINE_EXCEEDED)
    ├── NotFound (LookupError)            no such service, member or session (NOT_FOUND)
    │   └── ServiceNotFound (HandlerError)    no member hosts the service now: a handler that
    │                                         lets it out answers its client 503
    └── InvalidRequest (ValueError)       a malformed request (INVALID_ARGUMENT)

Any other status from a peer comes out as a plain ClusterError carrying it.
"""

from __future__ import annotations

from typing import ClassVar

import grpclib.exceptions
import h2.exceptions
from grpclib.const import Status

from .._errors import HandlerError, TrionanoError
from .._log import RateLimitedLog

__all__ = [
    "ClusterError",
    "DeadlineExceeded",
    "InvalidRequest",
    "NodeStopping",
    "NotFound",
    "ServiceNotFound",
    "Unavailable",
    "from_call",
    "to_status",
]


class ClusterError(TrionanoError):
    """A cluster call failed; :attr:`status` is its gRPC status."""

    default_status: ClassVar[Status] = Status.UNKNOWN

    def __init__(self, message: str, status: Status | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status: Status = status if status is not None else self.default_status


class Unavailable(ClusterError, ConnectionError):
    """The peer cannot be reached, or the connection to it was lost during the call."""

    default_status = Status.UNAVAILABLE


class NodeStopping(Unavailable):
    """This node is stopping: it starts no new work."""


class DeadlineExceeded(ClusterError, TimeoutError):
    """No answer within the deadline."""

    default_status = Status.DEADLINE_EXCEEDED


class NotFound(ClusterError, LookupError):
    """No member hosts the service, or the peer has no such service or session."""

    default_status = Status.NOT_FOUND


class ServiceNotFound(NotFound, HandlerError):
    """No member of the cluster hosts ``service`` now (``session.rpc``, ``Node.call``): it
    is not started yet, or restarting, or not part of this cluster. nano's text,
    ``"<service> not found(forgot registered?)"``. Also a :class:`~trionano.HandlerError`
    with code 503: a handler that does not catch it answers its client ``{"code": 503,
    "message": ...}``, logged as a handler error without a traceback, rather than 500 with
    one (a gate up before its backends is an ordinary moment of a cluster's life)."""

    def __init__(self, service: str) -> None:
        ClusterError.__init__(self, f"{service} not found(forgot registered?)")
        self.service = service
        self.code = 503


class InvalidRequest(ClusterError, ValueError):
    """A request the receiver refuses as malformed."""

    default_status = Status.INVALID_ARGUMENT


_BY_STATUS: dict[Status, type[ClusterError]] = {
    Status.UNAVAILABLE: Unavailable,
    Status.DEADLINE_EXCEEDED: DeadlineExceeded,
    Status.NOT_FOUND: NotFound,
    Status.INVALID_ARGUMENT: InvalidRequest,
}


def from_call(exc: Exception) -> ClusterError | None:
    """The ClusterError for what a grpclib client call raised; None for anything else (a bug,
    to be raised as it is)."""
    if isinstance(exc, ClusterError):
        return exc
    if isinstance(exc, grpclib.exceptions.GRPCError):
        kind = _BY_STATUS.get(exc.status, ClusterError)
        return kind(exc.message or exc.status.name, exc.status)
    if isinstance(exc, TimeoutError):  # asyncio's deadline (the same class since 3.11)
        return DeadlineExceeded(str(exc) or "deadline exceeded")
    if isinstance(
        exc,
        grpclib.exceptions.StreamTerminatedError
        | grpclib.exceptions.ProtocolError
        | h2.exceptions.ProtocolError
        | OSError,  # ConnectionRefusedError, ConnectionResetError, ...
    ):
        return Unavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return None


def to_status(exc: Exception, method: str, log: RateLimitedLog) -> grpclib.exceptions.GRPCError:
    """The gRPC status a caller gets for what ``method``'s Trio side raised. A ClusterError
    carries its own; anything else is a bug here: logged with its traceback to ``log``
    (rate-limited: a peer's traffic may hit it again and again), answered INTERNAL."""
    if isinstance(exc, grpclib.exceptions.GRPCError):
        return exc
    if isinstance(exc, ClusterError):
        return grpclib.exceptions.GRPCError(exc.status, exc.message)
    log.error("rpc failed", "%s failed", method, exc_info=exc)
    return grpclib.exceptions.GRPCError(Status.INTERNAL, f"{method} failed: {type(exc).__name__}")
