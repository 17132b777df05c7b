"""Members a node could not reach: not chosen for new sessions until they answer again.

When a forward to a member fails as unreachable (Unavailable: the connection was refused or
lost, e.g. its process was killed), the gate stops choosing that member for sessions that are
not bound to it, and sessions bound to it choose again among the members that are reachable
(nano lets the application do so, ``session.Router().Delete``, PR #100). A task probes the
member with a TCP connection to its service address, with a jittered backoff (0.05 s doubling
to ``longest``), until it accepts one: then it is chosen again. The member stays in the
cluster view meanwhile: only the master evicts. When every member hosting a service is
unreachable, they are chosen as before (the forward fails fast and a Request is answered 503).

A member whose every probe is refused (ECONNREFUSED: nothing listens at its address) for
``gone_after`` seconds (the eviction window) has no process there: ``on_gone(address)`` is
called once, so the node ends what it held for that member's clients even when no master is
there to evict it (:mod:`._audit`). A probe that times out (a partition, a frozen host) is no
such proof: the count starts again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ._errors import ClusterError
from ._keepalive import Backoff
from ._peers import split_address
from ._tasks import Tasks

__all__ = ["Reachability", "refused"]

_logger = logging.getLogger("trionano.cluster")

FIRST_PROBE = 0.05  # seconds


class Reachability:
    """The members (service addresses) found unreachable, each probed by a task of the node
    until it accepts a connection (each try within ``timeout`` seconds; pauses up to
    ``longest``). Owned by the node; the gate asks :meth:`reachable` when it chooses."""

    def __init__(
        self,
        tasks: Tasks,
        *,
        timeout: float,
        longest: float,
        gone_after: float,
        on_gone: Callable[[str], None],
    ) -> None:
        self._tasks = tasks
        self._timeout = timeout
        self._longest = max(longest, FIRST_PROBE)
        self._gone_after = gone_after
        self._on_gone = on_gone
        self._down: set[str] = set()

    def __len__(self) -> int:
        return len(self._down)

    def reachable(self, address: str) -> bool:
        return address not in self._down

    def unreachable(self, address: str, reason: object) -> None:
        """A call to ``address`` failed as unreachable: not chosen until a probe answers."""
        if address in self._down:
            return
        if not self._tasks.start(self._probe, address):
            return  # this node is stopping
        self._down.add(address)
        _logger.warning(
            "member %s unreachable (%s): not chosen for new sessions until it accepts a connection", address, reason
        )

    def forget(self, address: str) -> None:
        """``address`` left the cluster, or a new process registered there: its probe ends."""
        self._down.discard(address)

    async def _probe(self, address: str) -> None:
        host, port = split_address(address)
        backoff = Backoff(FIRST_PROBE, self._longest)
        refused_since: float | None = None
        gone = False
        while address in self._down:
            await trio.sleep(backoff.next())
            if address not in self._down:
                return
            try:
                with trio.fail_after(self._timeout):
                    stream = await trio.open_tcp_stream(host, port)
                await stream.aclose()
            except (OSError, trio.TooSlowError) as exc:
                if not refused(exc):
                    refused_since = None
                    continue
                now = trio.current_time()
                if refused_since is None:
                    refused_since = now
                elif not gone and now - refused_since >= self._gone_after:
                    gone = True
                    _logger.warning(
                        "member %s refused every connection for %.1fs: its process is gone",
                        address,
                        now - refused_since,
                    )
                    self._on_gone(address)
                continue
            if address in self._down:
                self._down.discard(address)
                _logger.info("member %s accepts connections again: chosen for new sessions again", address)
            return


def refused(exc: BaseException) -> bool:
    """Whether a connection or call failed only because nothing listens there (ECONNREFUSED),
    for every address tried (trio's "all attempts failed" carries each in its cause; a
    ClusterError, what grpclib raised)."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return isinstance(exc, OSError) and all(refused(inner) for inner in cause.exceptions)
    return isinstance(exc, ClusterError) and cause is not None and refused(cause)
