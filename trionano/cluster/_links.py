"""The fast path between trionano nodes: one long-lived bidirectional gRPC stream per peer
(``trionano.cluster.Stream/Open``, ``proto/stream.proto``), each message a batch of frames.

A node opens a stream to a peer the first time it has something to send there and no stream
is up (:meth:`Links.open`); the peer answers with an empty batch (the stream is accepted), or
with UNIMPLEMENTED (a Go nano node, or a trionano node with ``fast_path=False``): that peer is
then spoken to over nano's unary ``clusterpb.Member`` until it leaves the cluster. Either end
sends on a stream, whichever opened it.

Costs per message: :meth:`Link.send` appends the frame's bytes to a list (no task switch, no
crossing); the link's writer, on asyncio, sends what is queued as one batch per wake-up: every
frame but cluster push batches, in the order sent, then push batches up to
``PUSH_BYTES_PER_WRITE`` bytes, so that a Response never waits behind megabytes of pushes for a
slow peer (:meth:`Link._write`). The
reader decodes a batch on asyncio and crosses to Trio once per batch (:meth:`Bridge.to_trio_nowait`),
where one task per link hands the frames to the node (:class:`Receiver`).

A stream that dies ends its link: the node fails the requests waiting on it (:meth:`Receiver.link_down`),
and the next :meth:`Links.open` opens a new one. Inbound backpressure: past ``_MAX_BACKLOG`` batches
not yet handled, the reader stops reading (HTTP/2 flow control then stops the sender).

Outbound bound: a peer that is slow or stopped (HTTP/2 flow control holds the writer) makes a
link hold what is queued for it. Frames sent with a ``done`` callback (cluster pushes, whose
owner, :class:`~._push.GateLink`, bounds them per gate by count and bytes) are held until
written or lost and reported to that callback; every other frame counts against the link's own
bound, ``MAX_QUEUED`` frames and ``MAX_QUEUED_BYTES`` bytes, so pushes never take the room of
Requests and answers. Over it :meth:`Link.send` refuses (counted in ``frames_refused``) and the
sender falls back as for a link that is down: a Request is answered with an error Response (503,
as a failed unary call), a Response or Push for another gate's client goes to its stand-in's
bounded outbox and is dropped there, counted and logged, if the link is still full; a
SessionClosed goes over nano's unary call; an Error frame answering the peer's Request is
dropped (counted, logged): the peer answers its client at that Request's deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

import attrs
import grpclib.client
import grpclib.const
import grpclib.exceptions
import grpclib.server
import trio
from grpclib.const import Status

from ._bridge import Bridge
from ._errors import ClusterError, DeadlineExceeded, InvalidRequest, NodeStopping, Unavailable, from_call
from ._frames import Batch, Frame, FrameError, decode_batch
from ._tasks import TIME_SLICE, Tasks

__all__ = [
    "MAX_QUEUED",
    "MAX_QUEUED_BYTES",
    "NODE_HEADER",
    "PUSH_BYTES_PER_WRITE",
    "STREAM_PATH",
    "Link",
    "Links",
    "Receiver",
    "StreamCounts",
    "StreamService",
]

_logger = logging.getLogger("trionano.cluster")

STREAM_PATH: Final = "/trionano.cluster.Stream/Open"
#: the request header naming the opening node's service address
NODE_HEADER: Final = "trionano-node"
MAX_QUEUED: Final = 65536  # frames waiting for the writer (not counting pushes); over it send() refuses
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024  # their bytes, likewise
#: cluster push bytes in one written batch at most (but one push batch always goes): what a
#: Response sent meanwhile may wait behind
PUSH_BYTES_PER_WRITE: Final = 256 * 1024
_MAX_BACKLOG: Final = 8  # batches received, not yet handled on the Trio side


@attrs.define
class StreamCounts:
    """What a node's streams carried, in total (in :class:`~._counters.Statistics`)."""

    batches_out: int = 0
    frames_out: int = 0
    batches_in: int = 0
    frames_in: int = 0
    frames_refused: int = 0  # not queued: the link was over its bound


class Receiver(Protocol):
    """What a node does with the frames that come in over its links (Trio side)."""

    async def receive(self, link: Link, frames: list[Frame]) -> None: ...

    def link_down(self, link: Link) -> None: ...


class Link:
    """One stream to ``peer`` (a service address), opened by either end. :meth:`send` queues
    one encoded frame; False once the link is down or too much is queued. :attr:`down` is set
    (Trio side) once the link has ended, whatever ended it: a member watches its link to the
    master with it (:mod:`~._keepalive`). :attr:`held_frames` and :attr:`held_bytes`: what it
    holds now, queued or being written."""

    def __init__(self, peer: str, bridge: Bridge, counts: StreamCounts) -> None:
        self.peer = peer
        self.alive = True
        self._counts = counts
        self._bridge = bridge
        # waiting for the writer: frames without a callback (Requests, Responses, per-session
        # Pushes, control), in the order sent; cluster push batches with their callbacks, in
        # the order sent, written after them (see :meth:`_write`)
        self._out: list[bytes] = []
        self._pushes: collections.deque[tuple[bytes, Callable[[bool], None]]] = collections.deque()
        # frames and bytes held: waiting (pending) and in the batch being written; "own": those
        # without a callback, which the link's bound applies to
        self._pending = [0, 0, 0, 0]  # own frames, own bytes, all frames, all bytes
        self._writing = [0, 0, 0, 0]
        self._wake = asyncio.Event()
        self._resume = asyncio.Event()
        self._backlog = 0
        self._inbound_send, self.inbound = trio.open_memory_channel[list[Frame]](math.inf)
        self.scope = trio.CancelScope()
        self.down = trio.Event()

    @property
    def held_frames(self) -> int:
        """Frames queued or being written now."""
        return self._pending[2] + self._writing[2]

    @property
    def held_bytes(self) -> int:
        """Their bytes."""
        return self._pending[3] + self._writing[3]

    def send(self, frame: bytes, done: Callable[[bool], None] | None = None) -> bool:
        """Queue one frame (:func:`~._frames.encode_frame`'s bytes) for a next batch. Never
        waits. False: the link is down, or (a frame without ``done``) ``MAX_QUEUED`` frames or
        ``MAX_QUEUED_BYTES`` bytes without ``done`` already wait (counted: ``frames_refused``).
        ``done``: a cluster push batch, whose sender bounds what it sends itself;
        ``done(True)`` once the frame is written to the stream, ``done(False)`` if it is lost
        with the link (called once, from either side of the bridge: it must only count, never
        wait). Frames without ``done`` go out in the order sent, ahead of the push batches not
        yet written (see :meth:`_write`); push batches go out in the order sent."""
        if not self.alive:
            return False
        size = len(frame)
        pending = self._pending
        if done is None:
            own = self._writing
            if pending[0] + own[0] >= MAX_QUEUED or pending[1] + own[1] + size > MAX_QUEUED_BYTES:
                self._counts.frames_refused += 1
                return False
            pending[0] += 1
            pending[1] += size
            self._out.append(frame)
        else:
            self._pushes.append((frame, done))
        pending[2] += 1
        pending[3] += size
        self._wake.set()
        return True

    def release(self) -> None:
        """The link has ended: what it held is lost (the ``done`` callbacks told so)."""
        self.alive = False
        pushes, self._pushes = self._pushes, collections.deque()
        self._out = []
        self._pending = [0, 0, 0, 0]
        for _, callback in pushes:
            callback(False)

    def close(self) -> None:
        """End the link (from Trio): its stream is cancelled, its frames not yet sent lost."""
        self.alive = False
        self.scope.cancel()

    # -- asyncio side ---------------------------------------------------------------------

    async def pump(self, stream: grpclib.client.Stream[Any, Any] | grpclib.server.Stream[Any, Any]) -> None:
        """Read and write ``stream`` until it ends or fails (raises what grpclib raises, or
        FrameError for a batch that does not decode)."""
        reader = asyncio.ensure_future(self._read(stream))
        writer = asyncio.ensure_future(self._write(stream))
        try:
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.alive = False
            for task in (reader, writer):
                task.cancel()
            await asyncio.wait((reader, writer))
            self.release()
        for task in (reader, writer):
            if not task.cancelled() and task.exception() is not None:
                task.result()  # raises the error that ended the link

    async def _read(self, stream: grpclib.client.Stream[Any, Any] | grpclib.server.Stream[Any, Any]) -> None:
        while True:
            message = await stream.recv_message()
            if message is None:
                return
            frames = decode_batch(message.data)
            if frames:
                self._backlog += 1
                self._bridge.to_trio_nowait(self._deliver, frames)
                if self._backlog >= _MAX_BACKLOG:
                    self._resume.clear()
                    await self._resume.wait()

    async def _write(self, stream: grpclib.client.Stream[Any, Any] | grpclib.server.Stream[Any, Any]) -> None:
        """Write what waits, one batch per message: every frame without a callback first, in
        the order sent, then push batches in the order sent up to ``PUSH_BYTES_PER_WRITE``
        bytes (at least one). So a Response (or Request, per-session Push, control frame) sent
        while megabytes of cluster pushes wait for a slow peer goes out in the next message,
        behind at most that many push bytes being written, never behind all of them.

        Frames without a callback keep their order among themselves (a session's Pushes and
        Responses reach its gate in the order its stand-in sent them), and push batches among
        themselves. Only the order between the two kinds changes, and no guarantee hangs on
        it: at the gate, a push batch's items join a backlog that a task of their own delivers
        (:meth:`~._push.PushHub.on_push_batch`), so the frames behind a push batch on the
        stream were already handled before its items were delivered."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out or self._pushes:
                out, self._out = self._out, []
                pending = self._pending
                own, own_bytes = pending[0], pending[1]
                done: list[Callable[[bool], None]] = []
                pushes = self._pushes
                push_bytes = 0
                while pushes and (not done or push_bytes + len(pushes[0][0]) <= PUSH_BYTES_PER_WRITE):
                    frame, callback = pushes.popleft()
                    out.append(frame)
                    done.append(callback)
                    push_bytes += len(frame)
                frames, size = own + len(done), own_bytes + push_bytes
                self._writing = [own, own_bytes, frames, size]
                self._pending = [0, 0, pending[2] - frames, pending[3] - size]
                written = False
                try:
                    await stream.send_message(Batch(b"".join(out)))
                    written = True
                finally:
                    self._writing = [0, 0, 0, 0]
                    for callback in done:
                        callback(written)
                self._counts.batches_out += 1
                self._counts.frames_out += len(out)

    # -- Trio side ------------------------------------------------------------------------

    def _deliver(self, frames: list[Frame]) -> None:
        try:
            self._inbound_send.send_nowait(frames)
        except trio.ClosedResourceError:
            pass  # the link ended meanwhile

    def handled(self) -> None:
        """A batch was handled (Trio side): let the reader go on once the backlog is small."""
        self._backlog -= 1
        if self._backlog <= _MAX_BACKLOG // 2:
            self._resume.set()

    def end_inbound(self) -> None:
        self._inbound_send.close()


class Links:
    """A node's streams, by peer address, and what it learnt of each peer: a peer that answered
    UNIMPLEMENTED speaks unary until it leaves (:meth:`forget`). ``enabled`` False: never
    stream (nano's unary path only), and refuse streams (see :class:`StreamService`)."""

    def __init__(
        self,
        address: str,
        tasks: Tasks,
        *,
        enabled: bool,
        timeout: float,
        channel: Callable[[str], grpclib.client.Channel],
    ) -> None:
        self.address = address
        self.enabled = enabled
        self._tasks = tasks
        self._timeout = timeout
        self._channel = channel
        self._bridge: Bridge | None = None
        self._receiver: Receiver | None = None
        self._links: dict[str, Link] = {}
        self._unary: set[str] = set()
        self._dialing: dict[str, trio.Event] = {}
        # per peer being dialed: what waits to go out on the stream, in the order it came
        self._first: dict[str, list[_Then]] = {}
        self._failures: dict[str, ClusterError] = {}
        self.counts = StreamCounts()

    def attach(self, bridge: Bridge | None, receiver: Receiver | None) -> None:
        self._bridge = bridge
        self._receiver = receiver

    def current(self, peer: str) -> Link | None:
        """The live link to ``peer``, if any (never waits)."""
        link = self._links.get(peer)
        return link if link is not None and link.alive else None

    def speaks_unary(self, peer: str) -> bool:
        return not self.enabled or peer in self._unary

    async def open(self, peer: str, seconds: float, then: Callable[[Link], None] | None = None) -> Link | None:
        """The live link to ``peer``, opening one if needed (within ``seconds``); None when
        ``peer`` speaks only nano's unary methods. ``then(link)`` (synchronous) is called
        with the link before this returns it: callers that wait for the same new stream get
        their ``then`` called in the order they called :meth:`open` (Trio wakes waiters in no
        set order), so what several sessions send keeps its order across them. Raises
        Unavailable (the stream could not be opened), DeadlineExceeded, NodeStopping."""
        for _ in range(2):  # a stream that ends at once is tried once more
            if self.speaks_unary(peer):
                return None
            link = self.current(peer)
            if link is not None:
                if then is not None:
                    then(link)
                return link
            dialing = self._dialing.get(peer)
            if dialing is None:
                dialing = self._dialing[peer] = trio.Event()
                self._failures.pop(peer, None)
                if not self._tasks.start(self._dial, peer, dialing):
                    del self._dialing[peer]
                    raise NodeStopping("this node is stopping")
            waiting = _Then(then)
            self._first.setdefault(peer, []).append(waiting)
            try:
                with trio.move_on_after(seconds) as scope:
                    await dialing.wait()
            finally:
                waiting.cancelled = True  # not called after this
            if waiting.called:
                return self._links.get(peer)
            if scope.cancelled_caught:
                raise DeadlineExceeded(f"no stream to {peer} within {seconds:g}s")
            failure = self._failures.get(peer)
            if failure is not None:
                raise failure
        raise Unavailable(f"no stream to {peer}: it ended as soon as it was opened")

    def held(self) -> tuple[int, int]:
        """Frames and bytes the live links hold now, queued or being written."""
        links = list(self._links.values())
        return sum(link.held_frames for link in links), sum(link.held_bytes for link in links)

    def forget(self, peer: str) -> None:
        """``peer`` left the cluster: end its links; a node at its address later is asked anew."""
        self._unary.discard(peer)
        self._failures.pop(peer, None)
        link = self._links.pop(peer, None)
        if link is not None:
            link.close()

    # -- opening a stream (this node's side) ----------------------------------------------

    async def _dial(self, peer: str, dialing: trio.Event) -> None:
        bridge = self._bridge
        try:
            if bridge is None:
                raise NodeStopping("this node is not running")
            link = Link(peer, bridge, self.counts)
            timeout = self._timeout

            async def opened() -> None:  # asyncio
                channel = self._channel(peer)
                metadata = {NODE_HEADER: self.address}
                async with channel.request(
                    STREAM_PATH, grpclib.const.Cardinality.STREAM_STREAM, Batch, Batch, metadata=metadata
                ) as stream:
                    await asyncio.wait_for(stream.send_request(), timeout)
                    hello = await asyncio.wait_for(stream.recv_message(), timeout)
                    if hello is None:
                        raise Unavailable(f"{peer} closed the stream at once")
                    bridge.to_trio_nowait(self._up, link, dialing)
                    await link.pump(stream)

            await self._run(link, opened)
        except grpclib.exceptions.GRPCError as exc:
            if exc.status is Status.UNIMPLEMENTED:
                _logger.info("%s has no stream service: nano's unary clusterpb from now on", peer)
                self._unary.add(peer)
            else:
                self._failed(peer, from_call(exc) or ClusterError(str(exc)))
        except ClusterError as exc:
            self._failed(peer, exc)
        except FrameError as exc:
            _logger.warning("stream to %s: bad batch: %s", peer, exc)
            self._failed(peer, Unavailable(f"bad batch from {peer}: {exc}"))
        except Exception as exc:
            error = from_call(exc)
            if error is None:
                raise
            self._failed(peer, error)
        finally:
            if self._dialing.get(peer) is dialing:
                del self._dialing[peer]
                self._first.pop(peer, None)  # unary, or failed: the waiters go on without a link
            dialing.set()

    def _failed(self, peer: str, error: ClusterError) -> None:
        self._first.pop(peer, None)
        self._failures[peer] = error
        _logger.debug("stream to %s ended: %r", peer, error)

    def _up(self, link: Link, dialing: trio.Event) -> None:
        if link.alive:
            self._register(link)
            _logger.info("stream to %s up", link.peer)
            for waiting in self._first.pop(link.peer, []):
                waiting.call(link)
        if self._dialing.get(link.peer) is dialing:
            del self._dialing[link.peer]
        dialing.set()

    def _register(self, link: Link) -> None:
        self._links[link.peer] = link

    # -- a link's life (both sides) ---------------------------------------------------------

    async def _run(self, link: Link, pump: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``pump`` (asyncio) and the link's inbound task until either ends; then the link
        is down: the receiver fails what waited on it."""
        bridge = self._bridge
        receiver = self._receiver
        if bridge is None or receiver is None:
            raise NodeStopping("this node is not running")
        error: Exception | None = None
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._inbound, link, receiver)
                    try:
                        await bridge.to_asyncio(pump)
                    except Exception as exc:  # raised as it is, not in an ExceptionGroup
                        error = exc
                    nursery.cancel_scope.cancel()
            if error is not None:
                raise error
        finally:
            link.release()
            link.end_inbound()
            if self._links.get(link.peer) is link:
                del self._links[link.peer]
            link.down.set()
            receiver.link_down(link)

    async def _inbound(self, link: Link, receiver: Receiver) -> None:
        """Hand the link's received batches to the receiver, in order: those already here one
        after the other for up to ``TIME_SLICE`` seconds, then a checkpoint."""
        inbound = link.inbound
        async with inbound:
            async for first in inbound:
                frames: list[Frame] | None = first
                ends = time.perf_counter() + TIME_SLICE
                while frames is not None:
                    self.counts.batches_in += 1
                    self.counts.frames_in += len(frames)
                    try:
                        await receiver.receive(link, frames)
                    finally:
                        link.handled()
                    frames = None
                    if time.perf_counter() < ends:
                        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                            frames = inbound.receive_nowait()

    async def accepted(self, peer: str, stream: grpclib.server.Stream[Any, Any]) -> None:
        """A stream ``peer`` opened (Trio side of :class:`StreamService`): serve it until it ends."""
        bridge = self._bridge
        if bridge is None:
            raise NodeStopping("this node is not running")
        link = Link(peer, bridge, self.counts)
        self._register(link)
        _logger.info("stream from %s up", peer)
        try:
            await self._run(link, lambda: link.pump(stream))
        except FrameError as exc:
            _logger.warning("stream from %s: bad batch: %s", peer, exc)
            raise InvalidRequest(f"bad batch: {exc}") from None
        except Exception as exc:
            error = from_call(exc)
            if error is None:
                raise
            _logger.debug("stream from %s ended: %r", peer, error)  # the peer went away: normal


class _Then:
    """A caller of :meth:`Links.open` waiting for a new stream, and what it sends first."""

    __slots__ = ("call_with", "called", "cancelled")

    def __init__(self, call_with: Callable[[Link], None] | None) -> None:
        self.call_with = call_with
        self.called = False
        self.cancelled = False

    def call(self, link: Link) -> None:
        if self.cancelled:
            return
        self.called = True
        if self.call_with is not None:
            self.call_with(link)


class StreamService:
    """``trionano.cluster.Stream`` as grpclib serves it: each call is a stream from a peer,
    served by :meth:`Links.accepted` on the Trio side. Not served when the fast path is off
    (then grpclib answers UNIMPLEMENTED, as a Go nano node does)."""

    def __init__(self, bridge: Bridge, links: Links) -> None:
        self.bridge = bridge
        self._links = links

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {STREAM_PATH: grpclib.const.Handler(self._open, grpclib.const.Cardinality.STREAM_STREAM, Batch, Batch)}

    async def _open(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        peer = dict(stream.metadata or {}).get(NODE_HEADER)
        if not isinstance(peer, str) or not peer:
            raise grpclib.exceptions.GRPCError(Status.INVALID_ARGUMENT, f"no {NODE_HEADER} header")
        await stream.send_message(Batch(b""))  # accepted: the peer may send now
        try:
            await self.bridge.to_trio(lambda: self._links.accepted(peer, stream))
        except ClusterError as exc:
            raise grpclib.exceptions.GRPCError(exc.status, exc.message) from None
        except asyncio.CancelledError:
            # grpclib cancels its handlers when this node stops, and leaves the connection
            # open meanwhile: tell the peer the stream is over (it would wait on it otherwise;
            # a member watches its stream to the master for this)
            with contextlib.suppress(Exception):
                await stream.send_trailing_metadata(status=Status.UNAVAILABLE, status_message="the node is stopping")
            raise
