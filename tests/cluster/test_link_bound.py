"""A stream's outgoing bound (:mod:`trionano.cluster._links`), on a link whose stream is never
written (a peer that stopped reading holds the writer just so): frames other than pushes are
refused past the link's bound, by count and by bytes, and counted; pushes (sent with a
``done`` callback, bounded per gate by their sender) never take that room; what a link held is
released, and its pushes reported lost, when it ends."""

from __future__ import annotations

from typing import Any

from trionano.cluster import Bridge, run
from trionano.cluster._links import MAX_QUEUED, MAX_QUEUED_BYTES, Link, StreamCounts


def test_a_link_bounds_its_frames_by_count_and_bytes_and_pushes_keep_out_of_that_room() -> None:
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        counts = StreamCounts()
        small = Link("peer-a:1", bridge, counts)
        assert all(small.send(b"f") for _ in range(MAX_QUEUED))
        assert not small.send(b"f")  # over the count
        seen["by count"] = (counts.frames_refused, small.held_frames, small.held_bytes)

        big = Link("peer-b:1", bridge, counts)
        chunk = b"x" * (1 << 20)
        outcomes: list[bool] = []
        # pushes first: a full gate's worth of them leaves the link's own room untouched
        assert all(big.send(chunk, outcomes.append) for _ in range(100))
        accepted = 0
        while big.send(chunk):
            accepted += 1
        seen["by bytes"] = (accepted, counts.frames_refused, big.held_frames, big.held_bytes)
        assert big.send(chunk, outcomes.append)  # a push still goes: its sender bounds it
        big.release()  # the link ended: what it held is gone, its pushes reported lost once
        big.release()
        seen["released"] = (big.held_frames, big.held_bytes, outcomes.count(False), len(outcomes))
        seen["after"] = (big.send(b"f"), big.send(b"f", outcomes.append), len(outcomes))

    run(main)
    assert seen["by count"] == (1, MAX_QUEUED, MAX_QUEUED)
    accepted, refused, frames, size = seen["by bytes"]
    assert accepted == MAX_QUEUED_BYTES // (1 << 20)
    assert refused == 2
    assert (frames, size) == (100 + accepted, (100 + accepted) << 20)
    assert seen["released"] == (0, 0, 101, 101)
    assert seen["after"] == (False, False, 101)  # a link that ended takes nothing
