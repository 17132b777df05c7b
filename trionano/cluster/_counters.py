"""What a node counts: the mutable counters its roles share, and their immutable snapshot."""

from __future__ import annotations

import attrs

__all__ = ["Counters", "Statistics"]


@attrs.frozen(kw_only=True)
class Statistics:
    """A node's cluster counters at one moment (:meth:`Node.statistics`).

    ``forwarded``: client messages and ``session.rpc`` calls sent to other nodes;
    ``forwards_refused``: refused because the session already had ``max_pending_forwards``
    waiting, or before this node joined the cluster (a Request is answered 503);
    ``forward_errors``: forwards the member failed (a Request is answered 503 or 404);
    ``unknown_routes``: client messages for routes no member hosts (a Request is answered 404);
    ``dropped_outbound``: pushes and responses for other
    gates' clients not delivered (the client had left, the outbox was full, the gate failed);
    ``late_frames``: responses (on a stream, or nano's HandleResponse) and pushes (on a
    stream) for a client no longer waiting (its request already answered 503 or answered
    once already, the client gone): dropped, never a second Response; ``frames_out``/``frames_in``
    and ``batches_out``/``batches_in``: what this node's streams to other trionano nodes
    carried (the fast path, :mod:`trionano.cluster._links`); ``frames_refused``: frames a
    stream refused because it already held its bound for frames other than pushes (65,536
    frames or 64 MiB: the peer is slow or stopped; each falls back as for a stream that is
    down); ``frames_held``/``bytes_held`` (gauges, now): what the streams hold, queued or being
    written, pushes included.
    """

    forwarded: int
    forwards_refused: int
    forward_errors: int
    unknown_routes: int
    dropped_outbound: int
    late_frames: int = 0
    frames_out: int = 0
    frames_in: int = 0
    batches_out: int = 0
    batches_in: int = 0
    frames_refused: int = 0
    frames_held: int = 0
    bytes_held: int = 0


@attrs.define(kw_only=True)
class Counters:
    """The counts behind :class:`Statistics`; one per node, shared by its roles."""

    forwarded: int = 0
    forwards_refused: int = 0
    forward_errors: int = 0
    unknown_routes: int = 0
    dropped_outbound: int = 0
    late_frames: int = 0

    def snapshot(self, **streams: int) -> Statistics:
        """The counts now, with the streams' (``frames_out`` ...) given by their owner."""
        return Statistics(**attrs.asdict(self), **streams)
