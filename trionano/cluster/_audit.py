"""Stand-ins that outlive their client: a trionano node asks each gate whose clients it holds
stand-ins for which of them have ended, and ends those (their close hooks run).

A gate announces each client's end (SessionClosed), but the announcement can be lost: the
node was frozen or cut off past its eviction, and the gate dropped its stream with the frames
queued on it; the gate died while the master was down, so no DelMember ever comes. nano leaks
such sessions (§5.6). Here, between trionano nodes, the node sends the gate an ``Audit`` frame
listing its stand-ins' session ids (``proto/stream.proto``), and the gate answers a
SessionClosed frame for each id it holds no live session for: the answer is the gate's own
word, so it never ends a live session, whatever the timing (a stand-in exists only for a
session the gate opened before forwarding for it). Audits go out when the master announces a
gate this node already knows (it came back after an eviction, or the master restarted), and
every four heartbeat intervals for every gate with stand-ins here. A gate that speaks only
nano's unary methods (a Go node) cannot be asked: its stand-ins end as nano's do, at its
DelMember.

A gate whose connection is refused is probed (:mod:`._reach`); refused continuously for the
eviction window (four heartbeats), its process is gone, and so are its clients: its stand-ins
end here even when no master is there to evict it.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from . import _frames as frames
from ._errors import ClusterError, NodeStopping, Unavailable
from ._links import Links
from ._reach import Reachability
from ._remote import RemoteSessions
from ._tasks import Tasks

__all__ = ["Audits"]

_logger = logging.getLogger("trionano.cluster")

IDS_PER_FRAME: Final = 4096  # 32 KiB of ids per Audit frame


class Audits:
    """This node's audits of the gates its stand-ins belong to. Owned by the node, which runs
    :meth:`run` and calls :meth:`audit` when the master re-announces a known member."""

    def __init__(
        self, remote: RemoteSessions, links: Links, tasks: Tasks, reach: Reachability, *, period: float, timeout: float
    ) -> None:
        self._remote = remote
        self._links = links
        self._tasks = tasks
        self._reach = reach
        self._period = period
        self._timeout = timeout
        self._running: set[str] = set()

    async def run(self) -> None:
        """Every ``period`` seconds, audit every gate with stand-ins here. Never returns."""
        while True:
            await trio.sleep(self._period)
            for gate in self._remote.gates():
                self.audit(gate)

    def audit(self, gate: str) -> None:
        """Ask ``gate`` which of its clients' stand-ins here have ended (on a task; one at a
        time per gate). Nothing when no stand-in here is ``gate``'s."""
        if gate in self._running or not self._remote.sids_of(gate):
            return
        if self._tasks.start(self._audit, gate):
            self._running.add(gate)

    async def _audit(self, gate: str) -> None:
        try:
            try:
                link = await self._links.open(gate, self._timeout)
            except NodeStopping:
                return
            except ClusterError as exc:
                if isinstance(exc, Unavailable):
                    self._reach.unreachable(gate, exc)
                _logger.debug("audit of %s: no stream: %r", gate, exc)
                return
            if link is None:
                return  # nano's unary methods only: it cannot be asked
            sids = self._remote.sids_of(gate)
            for start in range(0, len(sids), IDS_PER_FRAME):
                if not link.send(frames.encode_frame(frames.Audit(tuple(sids[start : start + IDS_PER_FRAME])))):
                    return  # full or down: the next audit asks again
        finally:
            self._running.discard(gate)
