"""Cluster-wide push: groups that span gates, and pushes from any node to the clients of every
gate (issue 13, beyond nano, whose groups live on one node and whose backends push to a gate's
client one ``HandlePush`` at a time).

::

    any node: push(route, value, audience)             each gate: PushBatch frame / Deliver
      serialize once, encode the item once              bounded backlog + delivering task:
                      +- its own clients (a gate)        per item: one Broadcast for its
                      +- GateLink per other node          sessions (encoded once per codec)
                         bounded queue + sender task --->

The body is serialized once, at the origin, and the ``PushItem`` (route, body, audience: up
to 10,000 uids) encoded once by hand (:mod:`._pushwire`), whatever the number of gates; a
gate decodes each item from a backlog that a task of its own delivers (items at hand one after
the other for up to ``TIME_SLICE``, then a checkpoint), and frames it into a packet once per
codec (its serializer's bytes pass through, its route dictionary applies), never per member.
The frames behind a push batch on the stream (the answers to the gate's Requests) never wait
for its items: the gate reads its stream whatever its backlog holds, and sheds the items that
come on the stream while the backlog is full (``max_pending_pushes`` items or
``max_pending_push_bytes`` bytes; counted, ``shed``, and logged, rate-limited): a gate that has
fallen behind (stopped a while, or its fan-out at ``Config.max_fanout_backlog``) loses pushes,
never its answers. On the origin, a stream writes the answers, Requests and per-session
Pushes queued for a peer ahead of the push batches not yet written (:meth:`Link._write
<._links.Link._write>`).
A gate's part of a cluster-wide group is a plain :class:`~trionano.Group` of its own clients:
members join on their gate.

A gate that is down or slow never blocks the others: each has a bounded queue and a sender
task of its own; what does not fit is dropped, counted and logged (rate-limited). The bound
(``max_pending_pushes`` pushes and ``max_pending_push_bytes`` bytes per gate) covers every push
held for that gate, whatever the path: queued, in a unary call, or handed to the stream to it and
not yet written (a gate that stops reading holds the stream's writer: its frames count until
written, or lost with the stream). A node that
does not serve ``trionano.push.Push`` (a Go nano node: UNIMPLEMENTED) or serves no clients is
left alone from its first answer on, and counted (``not_gates``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from collections.abc import Callable, Collection, Iterable
from typing import Final, cast

import attrs
import trio
from grpclib.const import Status

from .._errors import GroupError, MessageTooLarge
from .._group import PRUNE_SLACK, Group
from .._log import RateLimitedLog, client_text
from .._server import Server
from .._session import Broadcast, Session
from ..wire import MAX_ROUTE_LENGTH
from . import _frames as frames
from . import _pushwire as wire
from ._errors import ClusterError, NodeStopping, Unavailable
from ._generated.trionano import push as pushpb
from ._links import PUSH_BYTES_PER_WRITE, Links
from ._membership import Membership
from ._peers import Peers
from ._reach import Reachability
from ._tasks import TIME_SLICE, Tasks

__all__ = [
    "MAX_UID",
    "Audience",
    "ClusterGroup",
    "GateLink",
    "PushCounters",
    "PushHub",
    "PushStatistics",
    "check_group",
    "check_route",
    "valid_uids",
]

_logger = logging.getLogger("trionano.cluster.push")

#: uids are int64 on the wire (nano's ``int64``); bound ones are >= 1
MAX_UID: Final = (1 << 63) - 1


@attrs.frozen
class Audience:
    """Who a push is for: exactly one of ``uids`` (the sessions bound to them, on any gate),
    ``group`` (the members of a cluster-wide group) or ``everyone`` (every client session).
    Build one with :meth:`of_uids`, :meth:`of_group` or :meth:`all`. Raises ValueError
    otherwise (none or several, a uid outside 1..2**63-1, an empty group name)."""

    uids: frozenset[int] | None = None
    group: str | None = None
    everyone: bool = False

    def __attrs_post_init__(self) -> None:
        if (self.uids is not None) + (self.group is not None) + self.everyone != 1:
            raise ValueError("an audience is exactly one of uids, group, everyone")
        if self.uids is not None and not valid_uids(self.uids):
            raise ValueError("uids are integers from 1 to 2**63-1")
        if self.group is not None:
            check_group(self.group)

    @classmethod
    def of_uids(cls, uids: Iterable[int]) -> Audience:
        """The sessions bound to ``uids``, on every gate."""
        return cls(uids=frozenset(uids))

    @classmethod
    def of_group(cls, name: str) -> Audience:
        """The members of the cluster-wide group ``name``, on every gate."""
        return cls(group=name)

    @classmethod
    def all(cls) -> Audience:
        """Every client session, on every gate."""
        return cls(everyone=True)

    def item(self, route: str, data: bytes) -> pushpb.PushItem:
        """The wire form as a betterproto message: ``route`` and the serialized body ``data``
        for this audience (what :meth:`encode` writes, for a caller of ``trionano.push``'s
        generated classes)."""
        return pushpb.PushItem().parse(self.encode(route, data))

    def encode(self, route: str, data: bytes) -> bytes:
        """The bytes of the ``trionano.push.PushItem`` of ``route`` and the serialized body
        ``data`` for this audience (uids in ascending order), encoded once per push whatever
        the number of gates. Raises UnicodeEncodeError for a route that cannot be UTF-8."""
        if self.uids is not None:
            return wire.encode_item(route, data, uids=sorted(self.uids))
        if self.group is not None:
            return wire.encode_item(route, data, group=self.group)
        return wire.encode_item(route, data, everyone=True)

    def decoded(self, route: str, data: bytes) -> wire.PushItem:
        """``route`` and ``data`` for this audience as a gate reads an item off the wire."""
        if self.uids is not None:
            return wire.PushItem(route, data, "uids", list(self.uids), "")
        if self.group is not None:
            return wire.PushItem(route, data, "group", [], self.group)
        return wire.PushItem(route, data, "everyone", [], "")


def valid_uids(uids: Collection[object]) -> bool:
    """Whether every one of ``uids`` is an ``int`` (not a bool) from 1 to 2**63-1 (an empty
    collection is); at C speed, not a Python step per uid."""
    if not uids:
        return True
    if set(map(type, uids)) != {int}:
        return False
    numbers = cast("Collection[int]", uids)
    return min(numbers) >= 1 and max(numbers) <= MAX_UID


@attrs.frozen(kw_only=True)
class PushStatistics:
    """A node's cluster-push counters at one moment (:meth:`Node.push_statistics`).

        Origin side: ``pushes``: pushes made here; ``queued``: (push, gate) pairs queued for other
        nodes; ``dropped``: not queued because that gate's queue was full (the gate is slow or
        down); ``failed``: queued but lost because the call to the gate failed or the stream to
    it ended before writing them, or not queued because its connection is refused (until a
    probe reaches it again: :mod:`trionano.cluster._reach`) (or, never for what :meth:`push`
    queued, an item that did not encode); ``held`` and ``held_bytes`` (gauges, now): pushes
    held for other gates, queued or on their way (their route, body and audience bytes), at
    most ``max_pending_pushes`` and about ``max_pending_push_bytes`` per gate; ``not_gates``:
        nodes found not to take pushes (no ``trionano.push`` service, as Go nano; or no clients).
        Gate side: ``received``: pushes received from other nodes; ``delivered``: pushes queued
        for this node's sessions (one per session), from here or elsewhere (not those its
        server's fan-out refused, its backlog at ``Config.max_fanout_backlog``: the server
        counts them as ``dropped_backlog``); ``refused``: received
        pushes refused as malformed (no audience, a bad route) or too large; ``shed``: received
        on a stream while this gate's backlog of received pushes was full, and not delivered
        (the gate keeps reading the stream for the answers behind them).
    HTTP push API (:mod:`trionano.cluster.push_api`) served for this node: ``api_accepted``:
    requests answered 202; ``api_refused``: answered 4xx or 500; ``api_unreached``: answered
    503 (no gate took the push, too many requests at once or waiting for their turn);
    ``api_gone``: requests whose client went away before its body had come (not answered: no
    answer could reach it); ``api_broken``: connections Hypercorn failed on, each closed alone
    (pgjones/hypercorn#329).
    ``groups`` (a gauge, now): this node's parts of cluster-wide groups (:class:`ClusterGroup`):
    those with open members or held by the application, and those left empty since the last
    prune (at most as many again, plus 64).
    """

    pushes: int
    queued: int
    dropped: int
    failed: int
    not_gates: int
    received: int
    delivered: int
    refused: int
    shed: int
    api_accepted: int
    api_refused: int
    api_unreached: int
    api_gone: int
    api_broken: int
    held: int = 0
    held_bytes: int = 0
    groups: int = 0


@attrs.define(kw_only=True)
class PushCounters:
    """The counts behind :class:`PushStatistics`; one per node."""

    pushes: int = 0
    queued: int = 0
    dropped: int = 0
    failed: int = 0
    not_gates: int = 0
    received: int = 0
    delivered: int = 0
    refused: int = 0
    shed: int = 0
    api_accepted: int = 0
    api_refused: int = 0
    api_unreached: int = 0
    api_gone: int = 0
    api_broken: int = 0

    def snapshot(self, *, held: int = 0, held_bytes: int = 0, groups: int = 0) -> PushStatistics:
        return PushStatistics(**attrs.asdict(self), held=held, held_bytes=held_bytes, groups=groups)


class GateLink:
    """The sending side to one other node: a bounded queue of push items and the sender task
    (:meth:`run`) that drains it in order, up to ``batch`` items per call, and no more once
    they reach ``PUSH_BYTES_PER_WRITE`` bytes (:mod:`._links`: a batch is written whole, and
    the answers on the stream wait for at most about that much). ``bound`` pushes and
    ``bound_bytes`` bytes (their encoded size) at most are held for the node, queued or on their
    way (in a unary call, or on the stream until written). :meth:`send` is the
    one place a batch crosses to the gate: ``trionano.push.Push/Deliver`` over grpclib until
    the node has answered that it is a gate, then, to a trionano node, a frame on the stream
    to it (:mod:`._links`, the fast path; no answer to wait for).

    ``gate`` is None until the node first answers; then whether it takes pushes (a node that
    does not is never sent to again)."""

    def __init__(
        self,
        address: str,
        *,
        origin: str,
        peers: Peers,
        links: Links,
        bound: int,
        bound_bytes: int,
        batch: int,
        counters: PushCounters,
        log: RateLimitedLog,
        reach: Reachability | None = None,
    ) -> None:
        self.address = address
        self.gate: bool | None = None
        self._reach = reach
        self._origin = origin
        self._peers = peers
        self._links = links
        self._batch = batch
        self._bound = bound
        self._bound_bytes = bound_bytes
        self.held = 0  # pushes queued or on their way
        self.held_bytes = 0
        self._counters = counters
        self._log = log
        # unbounded as a channel: held and held_bytes bound it, and what is on its way
        self._send, self._receive = trio.open_memory_channel[tuple[bytes, int]](math.inf)

    def put(self, item: bytes) -> bool:
        """Queue ``item`` (an encoded ``trionano.push.PushItem``: :meth:`Audience.encode`)
        without waiting; False (dropped, counted, logged) when ``bound`` pushes or
        ``bound_bytes`` bytes are already held for the node (one push is always let through
        when none is), or the link is closed."""
        size = len(item)
        if self.held and (self.held >= self._bound or self.held_bytes + size > self._bound_bytes):
            self._counters.dropped += 1
            self._log.warning(
                "push dropped",
                "push queue for %s full (%d pushes, %d bytes held): a push was dropped",
                self.address,
                self.held,
                self.held_bytes,
            )
            return False
        try:
            self._send.send_nowait((item, size))
        except (trio.ClosedResourceError, trio.BrokenResourceError):  # the link is closed (the node stops)
            self._counters.dropped += 1
            return False
        self.held += 1
        self.held_bytes += size
        self._counters.queued += 1
        return True

    def _release(self, count: int, size: int) -> None:
        self.held -= count
        self.held_bytes -= size

    def close(self) -> None:
        """No more items; the sender finishes what is queued (a node that left: fails fast)."""
        self._send.close()

    @property
    def queued(self) -> int:
        """Items waiting to be sent."""
        return self._send.statistics().current_buffer_used

    async def run(self) -> None:
        """Send batches until closed, one call at a time (so a gate receives a node's pushes
        in order). A failed call loses its batch (counted, logged); the next one goes on."""
        async with self._receive:
            async for first in self._receive:
                taken = [first]
                size = first[1]
                while len(taken) < self._batch and size < PUSH_BYTES_PER_WRITE:
                    try:
                        following = self._receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    taken.append(following)
                    size += following[1]
                batch = [item for item, _ in taken]
                if self.gate is False:
                    self._release(len(batch), size)
                    continue  # learnt meanwhile: not a gate
                # on the stream, the batch stays held until written (the link calls back)
                written = _Written(self, len(batch), size)
                try:
                    await self._send_batch(batch, written)
                except Exception:  # one bad batch never ends the link (nor the node)
                    self._counters.failed += len(batch)
                    self._log.exception("push failed", "%d pushes to %s lost", len(batch), self.address)
                finally:
                    if not written.handed:
                        written(True)  # sent over a unary call, failed, or refused: not held

    async def _send_batch(self, batch: list[bytes], written: _Written | None = None) -> None:
        """Send ``batch`` (encoded items: they encoded at the origin, so it always encodes)."""
        try:
            result = await self.send(batch, written)
        except ClusterError as exc:
            if _unimplemented(exc):
                self._not_a_gate("it does not serve trionano.push (a Go nano node?)")
                return
            self._counters.failed += len(batch)
            self._log.warning("push failed", "%d pushes to %s lost: %r", len(batch), self.address, exc)
            if self._reach is not None and isinstance(exc, Unavailable) and not isinstance(exc, NodeStopping):
                self._reach.unreachable(self.address, exc)  # not pushed to until it answers again
            return
        if not result.gate:
            self._not_a_gate("it serves no clients")
        else:
            self.gate = True

    async def send(self, batch: list[bytes], written: _Written | None = None) -> pushpb.PushResult:
        """Hand ``batch`` (encoded items) to the gate in one ``PushBatch``, the items' bytes
        joined; its answer (on the stream: taken as a gate's). On the stream ``written`` (if
        given) is called once the frame is written, or lost with the stream. Raises
        ClusterError (UNIMPLEMENTED: the node does not take pushes)."""
        message = wire.EncodedPushBatch(wire.encode_batch(self._origin, batch))
        if self.gate:
            link = await self._links.open(self.address, self._peers.timeout)
            if link is not None:
                if not link.send(frames.encode_frame(frames.PushBatch(message.data)), written):
                    raise Unavailable(f"the stream to {self.address} is down")
                if written is not None:
                    written.handed = True
                return pushpb.PushResult(gate=True, delivered=0)
        return await self._peers[self.address].deliver(message)

    def _lost(self, count: int) -> None:
        self._counters.failed += count
        self._log.warning("push lost", "%d pushes to %s lost: the stream to it ended", count, self.address)

    def _not_a_gate(self, why: str) -> None:
        if self.gate is not False:
            self.gate = False
            self._counters.not_gates += 1
            _logger.info("node %s takes no cluster pushes: %s", self.address, why)


class _Written:
    """What a batch handed to a stream holds of its :class:`GateLink`'s bound, released once:
    called with True when written, False when lost with the stream (counted as failed)."""

    __slots__ = ("_count", "_gate", "_size", "called", "handed")

    def __init__(self, gate: GateLink, count: int, size: int) -> None:
        self._gate = gate
        self._count = count
        self._size = size
        self.handed = False  # the stream took it: it calls back
        self.called = False

    def __call__(self, ok: bool) -> None:
        if self.called:
            return
        self.called = True
        gate = self._gate
        gate._release(self._count, self._size)
        if not ok:
            gate._lost(self._count)


class ClusterGroup:
    """A group whose name is cluster-wide, as this node sees it: :meth:`broadcast` reaches the
    members on every gate, and this node's own clients join here (:meth:`add`: members join
    on their own gate). Get one with :meth:`Node.group`; it is a handle on the name, cheap to
    make and to drop.

    This node's part of the group is a plain :class:`~trionano.Group` of its clients,
    :attr:`local`, looked up by name at each call, never held: every ClusterGroup of one name
    on a node shares the same members, whenever it was made. The node keeps a part only while
    it is of use: from its first member on, until its members have all left or closed (it is
    then forgotten: at once when the last one leaves through :meth:`leave`, else by a prune of
    the node's parts, made without a task whenever their number has doubled since the last,
    as a :class:`~trionano.Group` prunes its closed members), or while the application holds
    its :attr:`local`. :meth:`Node.group` and :meth:`broadcast` alone keep nothing, so a node's
    memory grows with its live groups, not with every name it has used (per-match or per-user
    groups come and go freely).

    :meth:`close` ends this node's part now (nano's ``Group.Close`` for it: its members are
    dropped); the other gates' parts are theirs, each closed on its own gate, and a broadcast
    still reaches them. The name stays usable: the next :meth:`add` starts a new part."""

    __slots__ = ("_hub", "name")

    def __init__(self, hub: PushHub, name: str) -> None:
        self._hub = hub
        self.name: Final = name
        """The group's name, the same on every gate."""

    def __repr__(self) -> str:
        return f"<ClusterGroup {self.name!r} local members={self.count()}>"

    @property
    def local(self) -> Group:
        """This node's part: a :class:`~trionano.Group` of the clients of this node that joined
        here (made now if there is none, kept by the node once it has a member). A part closed
        by :meth:`close` (or by its own ``close()``) stays closed, as a nano group: a Group
        taken from here before refuses changes (GroupError), and the next :meth:`add` or
        :attr:`local` starts a new part."""
        return self._hub.part(self.name)

    def add(self, session: Session) -> None:
        """Add a client of this node. Raises ValueError for another node's client (a stand-in:
        join on the client's gate), and what :meth:`Group.add` raises."""
        self._hub.check_local(session)
        self._hub.part(self.name).add(session)

    def leave(self, session: Session) -> None:
        """Remove ``session`` from this gate's members (not being one is fine); the part is
        forgotten once its last member has left."""
        self._hub.leave(self.name, session)

    def __contains__(self, session: object) -> bool:
        part = self._hub.find_part(self.name)
        return part is not None and session in part

    def count(self) -> int:
        """This gate's open members (the other gates' are not known here)."""
        part = self._hub.find_part(self.name)
        return 0 if part is None else part.count()

    def broadcast(self, route: str, value: object) -> int:
        """Push ``value`` to the members on every gate; returns how many gates it was queued
        for. Raises what :meth:`Node.push` raises. Keeps nothing for the name here."""
        return self._hub.push(route, value, Audience.of_group(self.name))

    def close(self) -> None:
        """End this node's part: its members are dropped, the Group it was closed (nano's
        ``Group.Close``), and the node forgets it. Only this node's: the members on other
        gates stay, each gate's part being closed there. Idempotent (nothing to close is
        fine); the name may be joined again afterwards (a new part)."""
        self._hub.close_part(self.name)


class _Part(Group):
    """This node's part of a cluster-wide group: a :class:`~trionano.Group` that has its hub
    keep it from its first member on."""

    def __init__(self, name: str, keep: Callable[[_Part], None]) -> None:
        super().__init__(name)
        self._keep = keep

    def add(self, session: Session) -> None:
        super().add(session)
        self._keep(self)

    def has_members(self) -> bool:
        """Whether an open member is left (looks at the members up to the first open one)."""
        try:
            self.find_member(_anyone)
        except GroupError:
            return False
        return True


def _anyone(session: Session) -> bool:
    return True


class PushHub:
    """The push role of a node: the origin side (:meth:`push`, one :class:`GateLink` per other
    node) and the gate side (:meth:`handle_deliver` and :meth:`on_push_batch` take received
    batches into a backlog of at most ``bound`` items and ``bound_bytes`` bytes, which a task
    of the node's delivers in order, in time slices, with :meth:`deliver`; what comes on a
    stream while it is full is shed, what comes in a unary call waits). Owned by the node;
    ``serves_clients`` is set when it runs with client endpoints."""

    def __init__(
        self,
        address: str,
        membership: Membership,
        peers: Peers,
        links: Links,
        tasks: Tasks,
        *,
        bound: int,
        bound_bytes: int = 16 * 1024 * 1024,
        batch: int = 64,
        reach: Reachability | None = None,
    ) -> None:
        self.address = address
        self.serves_clients = False
        self._reach = reach
        self._membership = membership
        self._peers = peers
        self._streams = links
        self._tasks = tasks
        self._bound = bound
        self._bound_bytes = bound_bytes
        self._batch = batch
        self._counters = PushCounters()
        self._log = RateLimitedLog(_logger)
        self._links: dict[str, GateLink] = {}
        # this node's parts of cluster-wide groups: every one alive, by name (what a delivery
        # looks up; held here weakly), and those the hub keeps alive (the ones with a member,
        # pruned whenever they have doubled in number: _keep)
        self._parts: weakref.WeakValueDictionary[str, _Part] = weakref.WeakValueDictionary()
        self._kept: dict[str, _Part] = {}
        self._prune_at = PRUNE_SLACK
        self._server: Server | None = None
        # gate side: received items, in order, waiting for the delivering task (_deliver_backlog)
        self._backlog_send, self._backlog = trio.open_memory_channel[tuple[bytes, _Tally | None]](math.inf)
        self._backlog_held = [0, 0]  # items, bytes
        self._room = trio.Event()  # set when an item has left a full backlog
        self._delivering = False

    def attach(self, server: Server) -> None:
        self._server = server

    @property
    def server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the push hub has no server yet")
        return self._server

    @property
    def log(self) -> RateLimitedLog:
        """The rate-limited log of the push role (its gate links' too), flushed by the node."""
        return self._log

    def statistics(self) -> PushStatistics:
        links = list(self._links.values())
        return self._counters.snapshot(
            held=sum(link.held for link in links),
            held_bytes=sum(link.held_bytes for link in links),
            groups=len(self._parts),
        )

    def count_api(self, answer: str) -> None:
        """Count one answer of the push API: "accepted", "refused" or "unreached"; "gone", a
        request whose client went away before its body came (not answered); or "broken", a
        connection Hypercorn failed on."""
        if answer == "accepted":
            self._counters.api_accepted += 1
        elif answer == "refused":
            self._counters.api_refused += 1
        elif answer == "unreached":
            self._counters.api_unreached += 1
        elif answer == "gone":
            self._counters.api_gone += 1
        elif answer == "broken":
            self._counters.api_broken += 1

    def check_local(self, session: Session) -> None:
        if self.server.sessions.get(session.id) is not session:
            raise ValueError("only this node's own clients join its part of a cluster-wide group: join on their gate")

    def group(self, name: str) -> ClusterGroup:
        """The cluster-wide group ``name``: a handle on the name, which keeps nothing here
        (:class:`ClusterGroup`). Raises ValueError for an empty name or one that cannot be
        UTF-8."""
        check_group(name)
        return ClusterGroup(self, name)

    def find_part(self, name: str) -> Group | None:
        """This node's open part of the group ``name``, if there is one."""
        part = self._parts.get(name)
        return None if part is None or part.closed else part

    def part(self, name: str) -> Group:
        """This node's open part of the group ``name``, made now if there is none (kept from
        its first member on: :meth:`_keep`)."""
        part = self._parts.get(name)
        if part is None or part.closed:
            part = self._parts[name] = _Part(name, self._keep)
        return part

    def _keep(self, part: _Part) -> None:
        """``part`` has a member: keep it alive (at most one open part per name is: a new one
        is made only once the last is closed or gone). Whenever the parts kept have doubled
        since the last prune (plus PRUNE_SLACK), those closed or with no open member left
        are dropped: amortized, a cost per part kept, with no task."""
        kept = self._kept
        if kept.get(part.name) is part:
            return
        if len(kept) >= self._prune_at:
            kept = {name: live for name, live in kept.items() if not live.closed and live.has_members()}
            self._kept = kept
            self._prune_at = 2 * len(kept) + PRUNE_SLACK
        kept[part.name] = part

    def leave(self, name: str, session: Session) -> None:
        """``session`` leaves this node's part of the group ``name`` (not being a member is
        fine); a part left with no open member is no longer kept."""
        part = self._parts.get(name)
        if part is None or part.closed:
            return
        part.leave(session)
        if not part.has_members() and self._kept.get(name) is part:
            del self._kept[name]

    def close_part(self, name: str) -> None:
        """Close this node's part of the group ``name`` and forget it (none is fine)."""
        part = self._parts.pop(name, None)
        if part is None:
            return
        if self._kept.get(name) is part:
            del self._kept[name]
        if not part.closed:
            part.close()

    # -- origin side ---------------------------------------------------------------------------

    def push(self, route: str, value: object, audience: Audience) -> int:
        """Serialize ``value`` once and push it to ``audience`` on every gate (this node's
        clients now, the others' through their queues); returns how many gates it was
        delivered or queued for (a node not yet heard from counts as a gate). Never waits.

        Raises ValueError for an empty or over-long route or one that cannot be UTF-8 (a lone
        surrogate), SerializeError (message text that cannot be UTF-8 too), MessageTooLarge
        (over the server's ``max_packet_size``)."""
        server = self.server
        check_route(route)
        data = server.serializer.marshal(value)
        if len(data) > server.config.max_packet_size:
            raise MessageTooLarge(len(data), server.config.max_packet_size)
        self._counters.pushes += 1
        item = audience.encode(route, data)  # once, whatever the number of gates
        gates = 0
        if self.serves_clients:
            self.deliver(audience.decoded(route, data))
            gates += 1
        members = self._membership.addresses
        reach = self._reach
        for address in members:
            if reach and not reach.reachable(address):  # its connection is refused (:mod:`._reach`)
                self._counters.failed += 1
                continue
            link = self._link(address)
            if link is not None and link.put(item):
                gates += 1
        if len(self._links) > len(members):
            for address in [a for a in self._links if a not in self._membership]:
                self.gate_gone(address)
        return gates

    def _link(self, address: str) -> GateLink | None:
        link = self._links.get(address)
        if link is None:
            link = GateLink(
                address,
                origin=self.address,
                peers=self._peers,
                links=self._streams,
                bound=self._bound,
                bound_bytes=self._bound_bytes,
                batch=self._batch,
                counters=self._counters,
                log=self._log,
                reach=self._reach,
            )
            if not self._tasks.start(link.run):
                return None  # this node is stopping
            self._links[address] = link
        return None if link.gate is False else link

    def gate_gone(self, address: str) -> None:
        """``address`` left the cluster: its link ends (a node coming back starts afresh)."""
        link = self._links.pop(address, None)
        if link is not None:
            link.close()

    # -- gate side -----------------------------------------------------------------------------

    async def handle_deliver(self, batch: wire.EncodedPushBatch) -> pushpb.PushResult:
        """``trionano.push.Push/Deliver``: the batch's items join the backlog (in order, after
        what came on a stream), waiting for room while it is full (``bound`` items or
        ``bound_bytes`` bytes received and not yet delivered; one item is always let in when
        none is): the call holds nothing else up, and its caller's own bound (then the push
        API's 503) holds back whoever pushes faster than this gate delivers. Answered once they
        are delivered to this node's clients, with how many sessions they were queued for."""
        tally = _Tally()
        for raw in self._items(batch.data):
            while self._full(len(raw)):
                if self._room.is_set():
                    self._room = trio.Event()
                await self._room.wait()
            if not self._admit(raw, tally):
                break  # this node is stopping
        tally.complete = True
        tally.check()
        await tally.done.wait()
        return pushpb.PushResult(gate=self.serves_clients, delivered=tally.queued)

    def on_push_batch(self, data: bytes) -> None:
        """A ``trionano.push.PushBatch`` that came as a frame on a stream: its items join the
        backlog, in order, delivered by a task of their own, so that the frames behind it on
        the stream (the answers to this gate's Requests) never wait for them. Never waits: an
        item that finds the backlog full is shed (counted, ``shed``; logged, rate-limited), and
        the stream is read on. Never raises for what the peer sent: a batch that does not parse
        is refused and counted."""
        items = self._items(data)
        shed = 0
        for raw in items:
            if self._full(len(raw)):
                shed += 1
            elif not self._admit(raw, None):
                break  # this node is stopping
        if shed:
            self._counters.shed += shed
            held = self._backlog_held
            self._log.warning(
                "push shed",
                "push backlog full (%d pushes, %d bytes): %d of %d pushes received on a stream shed",
                held[0],
                held[1],
                shed,
                len(items),
            )

    def _items(self, data: bytes) -> list[bytes]:
        """The items of the received batch ``data`` (counted as received); none, refused and
        counted, when it does not parse."""
        try:
            _, items = wire.batch_items(data)
        except wire.PushWireError:
            self._counters.refused += 1
            self._log.warning("push refused", "a push batch did not parse")
            return []
        self._counters.received += len(items)
        return items

    def _full(self, size: int) -> bool:
        """Whether an item of ``size`` bytes finds the backlog full."""
        count, held = self._backlog_held
        return count > 0 and (count >= self._bound or held + size > self._bound_bytes)

    def _admit(self, raw: bytes, tally: _Tally | None) -> bool:
        """Put ``raw`` in the backlog for :meth:`_deliver_backlog`; False once the node is
        stopping (its delivering task cannot start)."""
        if not self._delivering:
            self._delivering = self._tasks.start(self._deliver_backlog)
            if not self._delivering:
                return False
        self._backlog_send.send_nowait((raw, tally))
        held = self._backlog_held
        held[0] += 1
        held[1] += len(raw)
        if tally is not None:
            tally.left += 1
        return True

    async def _deliver_backlog(self) -> None:
        """Deliver the backlog's items in order: those at hand one after the other for up to
        ``TIME_SLICE`` seconds (an item whose audience the fan-out refuses costs microseconds),
        then let the other tasks run (an item naming 10,000 uids costs a few milliseconds:
        then one item per step)."""
        held = self._backlog_held
        backlog = self._backlog
        while True:
            taken: tuple[bytes, _Tally | None] | None = await backlog.receive()
            ends = time.perf_counter() + TIME_SLICE
            while taken is not None:
                raw, tally = taken
                held[0] -= 1
                held[1] -= len(raw)
                self._room.set()
                try:
                    item = wire.decode_item(raw)
                except wire.PushWireError:
                    self._counters.refused += 1
                    self._log.warning("push refused", "a received push item did not parse")
                    queued = 0
                else:
                    queued = self.deliver(item)
                if tally is not None:
                    tally.queued += queued
                    tally.left -= 1
                    tally.check()
                taken = None
                if time.perf_counter() < ends:
                    with contextlib.suppress(trio.WouldBlock):
                        taken = backlog.receive_nowait()

    def deliver(self, item: wire.PushItem) -> int:
        """Queue ``item`` for this node's sessions in its audience: one Broadcast, encoded once
        per codec. Returns how many sessions it was queued for; a malformed item (no
        audience, a bad route) or one too large for a packet is refused and counted."""
        route, data, kind, uids, group_name = item
        try:
            check_route(route)
        except ValueError:
            return self._refuse(route, "a bad route")
        server = self.server
        try:
            if kind == "group":
                group = self.find_part(group_name)
                queued = 0 if group is None else group.broadcast(route, data)
            elif kind == "uids":
                # the server's uid index: the cost is that of the sessions found, not of every one
                queued = _fan_out(server.sessions_of_any(uids), route, data)
            elif kind == "everyone":
                queued = _fan_out(list(server.sessions.values()), route, data)
            else:
                return self._refuse(route, "no audience")
        except MessageTooLarge:
            return self._refuse(route, "a body too large for a packet")
        self._counters.delivered += queued
        return queued

    def _refuse(self, route: str, why: str) -> int:
        self._counters.refused += 1
        self._log.warning("push refused", "a cluster push to %s refused: %s", client_text(route), why)
        return 0


class _Tally:
    """The items of one unary ``Deliver`` call in the backlog: ``done`` once all are in
    (``complete``) and delivered, or none was let in; ``queued``: the sessions they were
    queued for. (The delivering task may empty the backlog while the call waits to put its
    next items in: not done then.)"""

    __slots__ = ("complete", "done", "left", "queued")

    def __init__(self) -> None:
        self.left = 0
        self.queued = 0
        self.complete = False
        self.done = trio.Event()

    def check(self) -> None:
        if self.complete and self.left == 0:
            self.done.set()


def _unimplemented(exc: ClusterError) -> bool:
    """Whether the node does not serve the method: UNIMPLEMENTED, as grpc-go (Go nano) answers;
    or grpclib's client reading grpclib's own "Method not found" answer, which omits the
    content-type header and so comes out as UNKNOWN "Missing content-type header" (an older
    trionano node, any grpclib member)."""
    if exc.status is Status.UNIMPLEMENTED:
        return True
    return exc.status is Status.UNKNOWN and exc.message == "Missing content-type header"


def check_route(route: str) -> None:
    """Raises ValueError unless ``route`` is 1 to MAX_ROUTE_LENGTH (255) UTF-8 bytes (pomelo's
    limit for an uncompressed route): text that cannot be UTF-8 (a lone surrogate) is refused
    here, at the origin, never on the wire."""
    try:
        size = len(route.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("a route is UTF-8 text (no lone surrogates)") from None
    if not 1 <= size <= MAX_ROUTE_LENGTH:
        raise ValueError(f"a route is 1 to {MAX_ROUTE_LENGTH} UTF-8 bytes")


def check_group(name: str) -> None:
    """Raises ValueError unless ``name`` is a non-empty string that can be UTF-8 (protobuf's
    ``string``: a lone surrogate cannot cross the wire)."""
    if not isinstance(name, str) or not name:
        raise ValueError("a group has a name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a group's name is UTF-8 text (no lone surrogates)") from None


def _fan_out(sessions: list[Session], route: str, data: bytes) -> int:
    """One Push for ``sessions`` (all of this node's server): ``data`` (already serialized)
    framed once per codec and shared, handed to the server's fan-out like a large group's
    broadcast, so that it proceeds a bucket at a time and each session gets it in order with its
    other Pushes. A session closing meanwhile is skipped; MessageTooLarge propagates (a body over
    the packet limit is over it for everyone). Returns how many were queued now plus how many
    were handed to the fan-out: 0 when the fan-out refused the Push whole (its backlog at
    ``Config.max_fanout_backlog``; the server counts each session as ``dropped_backlog``)."""
    if not sessions:
        return 0
    broadcast = Broadcast(route, data)

    def deliver(session: Session) -> bool:
        if session.closed:
            return False
        try:
            return session.entity.send_broadcast(session, broadcast)
        except trio.BrokenResourceError:
            return False

    fanout = sessions[0].fanout
    if fanout is None:  # sessions made outside a serving server: everything now
        return sum(deliver(session) for session in sessions)
    queued, job = fanout.send(sessions, deliver)
    return queued + (job.count if job is not None else 0)
