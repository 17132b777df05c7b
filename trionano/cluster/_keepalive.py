"""A member's tie to the master (nano.md §5.3, §5.6): it registers, heartbeats every
``heartbeat`` seconds, and unregisters when it stops.

Beyond nano, whose restarted master learns each member only from its next keepalive (up to
30 s by default: until then its registry is empty, it announces NewMember to nobody, and its
own RPCs reach no member): a member holds a stream to a trionano master (:mod:`._links`), and
when that stream ends (the master stopped or died, or it ended the stream when it evicted the
member) the member heartbeats it after a short pause, and again with a bounded, jittered
backoff (50 ms doubling to 1 s, or to the heartbeat interval if shorter) until it answers. A
master that does not know the member takes that heartbeat as its return
(:meth:`~._registry.Registry.heartbeat`: the other members are told NewMember, and the member
is told the members as a registration would tell it), so a restarted master knows every live
member within about a second of being back. Only nano's ``clusterpb.Master`` methods are
called: a Go nano master gets the heartbeats it expects. A master without the stream service
(a Go nano master, or a trionano one with ``fast_path=False``) gives no such signal: its
members come back at their next keepalive, as nano's do, or sooner when a keepalive failed
while it was away (they then retry with the same backoff).

The keepalive is one task of the node; it never blocks client traffic (forwarding uses the
members' own channels and streams, never the master's)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Final

import trio

from .._log import RateLimitedLog
from ._errors import ClusterError, Unavailable
from ._generated import clusterpb as pb
from ._links import Link, Links
from ._membership import Membership
from ._peers import Peers

__all__ = ["Backoff", "Keepalive"]

_logger = logging.getLogger("trionano.cluster")

FIRST_PAUSE: Final = 0.05  # seconds: the first heartbeat after the stream to the master ended
LONGEST_PAUSE: Final = 1.0  # seconds: the backoff's bound while the master does not answer


class Backoff:
    """Pauses that double from ``first`` to ``longest`` seconds, each drawn at random in
    [half, all] of its step (members of a cluster whose master came back do not all call it in
    the same instant). :meth:`reset` starts over from ``first``."""

    def __init__(self, first: float, longest: float) -> None:
        if not 0 < first <= longest:
            raise ValueError(f"need 0 < first <= longest, not {first!r}, {longest!r}")
        self.first = first
        self.longest = longest
        self._step = first
        self._random = random.Random()

    def reset(self) -> None:
        self._step = self.first

    def next(self) -> float:
        """The next pause, in seconds (at most ``longest``)."""
        step = self._step
        self._step = min(step * 2, self.longest)
        return step * self._random.uniform(0.5, 1.0)


class Keepalive:
    """A member's registration with the master at ``master`` (a service address), its
    keepalive, and its leaving. Owned by the node, which runs :meth:`register`, then
    :meth:`keep_alive` in its nursery until it stops, then :meth:`unregister`. ``info()`` is
    the member as the master lists it; the members a registration lists go into
    ``membership``. Calls go through ``peers`` (under their deadline); the stream watched is
    ``links``'s to the master."""

    def __init__(
        self,
        master: str,
        peers: Peers,
        links: Links,
        membership: Membership,
        log: RateLimitedLog,
        *,
        info: Callable[[], pb.MemberInfo],
        heartbeat: float,
        retry_interval: float,
        rpc_timeout: float,
    ) -> None:
        self.master = master
        self._peers = peers
        self._links = links
        self._membership = membership
        self._log = log
        self._info = info
        self._heartbeat = heartbeat
        self._retry_interval = retry_interval
        self._rpc_timeout = rpc_timeout
        self.registered = False

    async def register(self) -> None:
        """nano's registration: retry every ``retry_interval`` until the master answers; the
        members it lists join ``membership``."""
        while True:
            try:
                members = await self._peers[self.master].register(self._info())
                break
            except ClusterError as exc:
                _logger.warning("Register current node to cluster failed: %r; retry in %gs", exc, self._retry_interval)
                await trio.sleep(self._retry_interval)
        for member in members:
            self._membership.add(member)
        self.registered = True

    async def unregister(self) -> None:
        """Tell the master this member leaves (once registered); a failure is logged."""
        if not self.registered:
            return
        try:
            await self._peers[self.master].unregister(self._info().service_addr)
        except ClusterError as exc:  # the master may be gone first; it evicts us then
            _logger.warning("unregister from the master failed: %r", exc)

    async def keep_alive(self) -> None:
        """nano's member keepalive: a Heartbeat every ``heartbeat`` seconds; a master that
        does not know the member (it restarted, or evicted it) takes the heartbeat as its
        return, as nano's does. Beyond nano: heartbeat soon after the stream to the master
        ends, and after a failed heartbeat (the master is down or restarting) again with the
        backoff until one is answered. A heartbeat that merely timed out changes nothing at
        the master: what it holds for the member stays. Never returns."""
        interval = self._heartbeat
        backoff = Backoff(min(FIRST_PAUSE, interval), min(LONGEST_PAUSE, interval))
        delay = interval
        failing = False
        while True:
            started = trio.current_time()
            lost = await self._wait(delay, watch=not failing)
            if not failing and (not lost or trio.current_time() - started >= backoff.longest):
                backoff.reset()  # quiet for a while: the next trouble is retried early again
            if lost:  # a stream that keeps ending at once is heartbeat at most every `longest`
                self._log.info(
                    "master stream", "the stream to the master %s ended: heartbeating it until it answers", self.master
                )
                await trio.sleep(backoff.next())
            try:
                await self._peers[self.master].heartbeat(self._info())
            except ClusterError as exc:
                if isinstance(exc, Unavailable):
                    # the next try on a new connection: that one may be a stopped master's
                    # that lingers while its process lives on (grpclib keeps it open)
                    self._peers.close(self.master)
                if not failing:  # the first failure of a run: once, not every retry
                    _logger.warning(
                        "heartbeat to the master failed: %r; retrying within %gs until answered", exc, backoff.longest
                    )
                failing = True
                delay = backoff.next()
            else:
                if failing:
                    _logger.info("heartbeat to the master answered again")
                failing = False
                delay = interval

    async def _wait(self, seconds: float, *, watch: bool) -> bool:
        """Wait ``seconds``; True as soon as the stream to the master ends meanwhile (when
        ``watch``: the stream is opened if none is up)."""
        with trio.move_on_after(seconds):
            link = await self._stream() if watch else None
            if link is None:
                await trio.sleep_forever()
            await link.down.wait()
            return True
        return False

    async def _stream(self) -> Link | None:
        """The stream to the master (opened if none is up); None when the master has no
        stream service (nano's unary only), or none could be opened now (the next heartbeat
        tells whether the master is there)."""
        try:
            return await self._links.open(self.master, self._rpc_timeout)
        except ClusterError as exc:
            _logger.debug("no stream to the master %s: %r", self.master, exc)
            return None
