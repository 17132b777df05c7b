"""Members a node could not reach: not chosen for new sessions until they answer again.

When a forward to a member fails as unreachable (Unavailable: the connection was refused or
lost, e.g. its process was killed), the gate stops choosing that member for sessions that are
not bound to it, and sessions bound to it choose again among the members that are reachable
(nano lets the application do so, ``session.Router().Delete``, PR #100). A task probes the
member with a TCP connection to its service address, with a jittered backoff (0.05 s doubling
to ``longest``), until it accepts one: then it is chosen again. The member stays in the
cluster view meanwhile: only the master evicts. When every member hosting a service is
unreachable, they are chosen as before (the forward fails fast and a Request is answered 503).
"""

from __future__ import annotations

import logging

import trio

from ._keepalive import Backoff
from ._peers import split_address
from ._tasks import Tasks

__all__ = ["Reachability"]

_logger = logging.getLogger("trionano.cluster")

FIRST_PROBE = 0.05  # seconds


class Reachability:
    """The members (service addresses) found unreachable, each probed by a task of the node
    until it accepts a connection (each try within ``timeout`` seconds; pauses up to
    ``longest``). Owned by the node; the gate asks :meth:`reachable` when it chooses."""

    def __init__(self, tasks: Tasks, *, timeout: float, longest: float) -> None:
        self._tasks = tasks
        self._timeout = timeout
        self._longest = max(longest, FIRST_PROBE)
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
        while address in self._down:
            await trio.sleep(backoff.next())
            if address not in self._down:
                return
            try:
                with trio.fail_after(self._timeout):
                    stream = await trio.open_tcp_stream(host, port)
                await stream.aclose()
            except (OSError, trio.TooSlowError):
                continue
            if address in self._down:
                self._down.discard(address)
                _logger.info("member %s accepts connections again: chosen for new sessions again", address)
            return
