"""SessionClosed calls that could not be delivered, sent again until they are.

A gate tells a member a client's end over nano's unary ``SessionClosed`` when it has no stream
to it (a Go nano member, or ``fast_path=False``). When that call fails because the member does
not answer in time (it is frozen, or cut off), the member keeps its stand-in for a client that
has gone: its state, group seats and close hooks leak (nano only logs the error). Here the
session id is kept, owed to that member, and a task of the node sends what is owed again, with
a jittered backoff up to ``longest`` seconds, until the member answers (it came back, even
after an eviction and its return) or refuses connections (its process is gone, and its
stand-ins with it: nothing is owed any more). At most ``bound`` ids are owed in all; past it
the oldest is dropped, counted in ``dropped`` and logged. An id sent twice is harmless: a
member ignores an id it does not hold (nano.md §5.5).
"""

from __future__ import annotations

import collections
import logging
from typing import Final

import trio

from .._log import RateLimitedLog
from ._errors import ClusterError, NodeStopping
from ._keepalive import Backoff
from ._peers import Peers
from ._reach import refused
from ._tasks import Tasks

__all__ = ["OwedCloses"]

_logger = logging.getLogger("trionano.cluster")

BOUND: Final = 65536
FIRST_RETRY: Final = 0.25  # seconds


class OwedCloses:
    """The SessionClosed calls owed to members, by address. Owned by the node."""

    def __init__(self, peers: Peers, tasks: Tasks, log: RateLimitedLog, *, longest: float, bound: int = BOUND) -> None:
        self._peers = peers
        self._tasks = tasks
        self._log = log
        self._longest = max(longest, FIRST_RETRY)
        self._bound = bound
        self._owed: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._retrying: set[str] = set()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._owed)

    def failed(self, address: str, sid: int, error: ClusterError) -> None:
        """SessionClosed(``sid``) to ``address`` failed with ``error``: owe it, unless the
        member's connection is refused (its stand-ins died with it) or this node is stopping."""
        if isinstance(error, NodeStopping) or refused(error):
            return
        self._owed[(address, sid)] = None
        if len(self._owed) > self._bound:
            self._owed.popitem(last=False)
            self.dropped += 1
            self._log.warning(
                "owed dropped", "more than %d session ends owed to members: the oldest dropped", self._bound
            )
        if address not in self._retrying and self._tasks.start(self._retry, address):
            self._retrying.add(address)

    async def _retry(self, address: str) -> None:
        backoff = Backoff(FIRST_RETRY, self._longest)
        try:
            while True:
                await trio.sleep(backoff.next())
                sids = [sid for owed_to, sid in self._owed if owed_to == address]
                if not sids:
                    return
                for sid in sids:
                    try:
                        await self._peers[address].session_closed(sid)
                    except ClusterError as exc:
                        if isinstance(exc, NodeStopping):
                            return
                        if refused(exc):
                            self._forget(address)
                            _logger.info("%s refuses connections: the session ends owed to it are void", address)
                            return
                        break  # still not answering: later
                    self._owed.pop((address, sid), None)
                    backoff.reset()
                else:
                    _logger.info("%d session end(s) owed to %s delivered", len(sids), address)
        finally:
            self._retrying.discard(address)

    def _forget(self, address: str) -> None:
        for key in [key for key in self._owed if key[0] == address]:
            del self._owed[key]
