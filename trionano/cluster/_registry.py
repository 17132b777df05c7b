"""The master's registry (nano.md §5.3, §5.6): Register, Unregister and Heartbeat from
members, NewMember/DelMember to the others, and the eviction of silent members.

Beyond nano: NewMember/DelMember go to each member on its own task under the deadline, and a
failure is logged, never aborts a registration (nano aborts at the first, leaving a partial
notification)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ._errors import ClusterError, InvalidRequest, NodeStopping, NotFound
from ._generated import clusterpb as pb
from ._membership import Membership
from ._peers import Peers
from ._tasks import Tasks

__all__ = ["Registry"]

_logger = logging.getLogger("trionano.cluster")


class Registry:
    """The master's book of members and their last heartbeats. ``me()`` is the master's own
    info (in every RegisterResponse); ``forget(address)`` ends everything this node holds for
    a member that left (its channel, its clients' sessions)."""

    def __init__(
        self,
        membership: Membership,
        peers: Peers,
        tasks: Tasks,
        *,
        me: Callable[[], pb.MemberInfo],
        forget: Callable[[str], None],
        heartbeat: float,
        unregister_callback: Callable[[pb.MemberInfo], None] | None = None,
    ) -> None:
        self._membership = membership
        self._peers = peers
        self._tasks = tasks
        self._me = me
        self._forget = forget
        self._heartbeat = heartbeat
        self._unregister_callback = unregister_callback
        self._last_heartbeat: dict[str, float] = {}

    # -- clusterpb.Master (Trio side) -------------------------------------------------------

    async def register(self, request: pb.RegisterRequest) -> pb.RegisterResponse:
        info = request.member_info
        if info is None or not info.service_addr:
            raise InvalidRequest("invalid register request")
        self._check_running()
        address = info.service_addr
        known = [m for m in self._membership.infos if m.service_addr != address]
        again = address in self._membership
        self._forget(address)  # a member restarting at the same address replaces itself
        self._last_heartbeat.pop(address, None)
        if again:
            await self._new_incarnation(address, known)
        for member in known:
            self._tasks.start(self._tell_new_member, member.service_addr, info)
        self._membership.add(info)
        self._last_heartbeat[address] = trio.current_time()
        _logger.info(
            "member %s registered: %s; remote services now %s",
            address,
            list(info.services),
            self._membership.remote_services,
        )
        return pb.RegisterResponse(members=[self._me(), *known])

    async def _new_incarnation(self, address: str, known: list[pb.MemberInfo]) -> None:
        """A member registered again at ``address`` (a process restarted there, e.g. killed and
        started again before its eviction): the others are told DelMember first, and
        registration waits for those calls (each under the deadline), so they end what they
        held for the previous process (its clients' sessions, their close hooks run) before the
        new one can send them anything. The wait is bounded by half the deadline (the new
        process's Register call has the same deadline): a member that has not answered by then
        (frozen) is not told, and finds the old process's sessions ended by its audit of the
        gate (:mod:`._audit`). nano (§5.3, issue #67) only re-announces NewMember, and the
        predecessor's sessions leak on every backend. A member that re-appears through its
        heartbeat (this master restarted, or evicted it) is not a new process: not told so."""
        _logger.info("member %s registered again: a new process; the others are told the old one left", address)
        with trio.move_on_after(self._peers.timeout / 2):
            async with trio.open_nursery() as nursery:
                for member in known:
                    nursery.start_soon(self._tell_del_member, member.service_addr, address)

    async def unregister(self, request: pb.UnregisterRequest) -> pb.UnregisterResponse:
        address = request.service_addr
        if not address:
            raise InvalidRequest("invalid register request")
        if address not in self._membership:
            raise NotFound(f"address {address} has not registered")
        self._check_running()
        self.remove(address)
        return pb.UnregisterResponse()

    async def heartbeat(self, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        info = request.member_info
        if info is None or not info.service_addr:
            raise InvalidRequest("invalid heartbeat request")
        address = info.service_addr
        self._check_running()  # a stopped master's connections may linger: it answers no one
        if address not in self._membership:
            self._rejoin(info)
        self._last_heartbeat[address] = trio.current_time()
        return pb.HeartbeatResponse()

    def _rejoin(self, info: pb.MemberInfo) -> None:
        """A heartbeat from a member this master does not know: it was evicted (silent for
        four heartbeats: a frozen or partitioned process that came back), or this master
        restarted. It joins again as a registration would: every other member is told
        NewMember (they were told DelMember at its eviction, and forgot its services), and it
        is told NewMember for each member and this master (what a RegisterResponse lists: it
        may have missed changes while it was silent). nano (nano.md §5.6) only re-adds it
        here, with no NewMember: the others then never route to an evicted member again.
        What it still holds for members that left meanwhile is not withdrawn (nano's
        NewMember only adds)."""
        address = info.service_addr
        known = [m for m in self._membership.infos if m.service_addr != address]
        for member in known:
            self._tasks.start(self._tell_new_member, member.service_addr, info)
        self._membership.add(info)
        self._tasks.start(self._tell_members, address, [self._me(), *known])
        _logger.info("member %s re-appeared through its heartbeat: announced to %d member(s)", address, len(known))

    # -- the registry's own work ------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._tasks.running:
            raise NodeStopping("the master is stopping")

    def remove(self, address: str) -> None:
        """``address`` left (it unregistered, or fell silent): tell the others, forget it, and
        run the unregister callback."""
        info = self._membership.get(address)
        for other in self._membership.addresses:
            if other != address:
                self._tasks.start(self._tell_del_member, other, address)
        self._last_heartbeat.pop(address, None)
        self._forget(address)
        _logger.info("member %s unregistered", address)
        if info is not None and self._unregister_callback is not None:
            try:
                self._unregister_callback(info)
            except Exception:  # a user's callback: log it, go on
                _logger.exception("unregister callback failed")

    async def evict_silent_members(self) -> None:
        """Every heartbeat interval, evict the members silent for more than four intervals of
        time this master could hear them. A check that runs late by more than a quarter of
        the interval (this process was stopped, e.g. SIGSTOP, or starved) counts the delay as
        time it could not hear: every member's silence is moved on by it, so members whose
        heartbeats wait unread in its sockets are not evicted as it resumes (nano counts wall
        time: a master frozen for four heartbeats evicts every member when it resumes)."""
        interval = self._heartbeat
        previous = trio.current_time()
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            late = now - previous - interval
            previous = now
            if late > interval / 4:
                _logger.warning(
                    "this master ran %.1fs late (stopped or starved): not counted as members' silence", late
                )
                self._excuse(late, now)
            for address, last in list(self._last_heartbeat.items()):
                if now - last > 4 * interval:
                    _logger.warning("member %s silent for %.1fs: evicted", address, now - last)
                    self.remove(address)

    def _excuse(self, seconds: float, now: float) -> None:
        """Do not count the last ``seconds`` (this master could not hear) as members' silence."""
        beats = self._last_heartbeat
        for address, last in beats.items():
            beats[address] = min(last + seconds, now)

    async def _tell_new_member(self, address: str, info: pb.MemberInfo) -> None:
        try:
            await self._peers[address].new_member(info)
        except ClusterError as exc:  # one dead member never blocks the others
            _logger.warning("NewMember to %s failed: %r", address, exc)

    async def _tell_members(self, address: str, members: list[pb.MemberInfo]) -> None:
        """Tell ``address`` NewMember for each of ``members``, in order; stop at a failure
        (it is unreachable again: its next heartbeat or registration brings them anew)."""
        for member in members:
            try:
                await self._peers[address].new_member(member)
            except ClusterError as exc:
                _logger.warning("NewMember to %s failed: %r", address, exc)
                return

    async def _tell_del_member(self, address: str, gone: str) -> None:
        try:
            await self._peers[address].del_member(gone)
        except ClusterError as exc:
            _logger.warning("DelMember to %s failed: %r", address, exc)
