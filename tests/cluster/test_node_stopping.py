"""A node that is stopping answers what still comes at once, quietly: a push queued for a gate
whose sender has stopped is dropped and counted (it raised, and the push API answered 500 with a
traceback), and a forwarded message that finds the handler lanes closed is refused NodeStopping
(it raised ClosedResourceError: logged with a traceback, the gate's client answered only at the
deadline)."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
import trio
import trio.testing

from trionano._log import RateLimitedLog
from trionano.cluster._errors import NodeStopping
from trionano.cluster._push import GateLink, PushCounters
from trionano.cluster._remote import _push_onto
from trionano.nursery_scheduler import Lane


async def test_a_push_for_a_gate_whose_sender_has_stopped_is_dropped_and_counted() -> None:
    counters = PushCounters()
    link = GateLink(
        "127.0.0.1:1",
        origin="127.0.0.1:2",
        peers=cast(Any, None),  # not reached: nothing is sent
        links=cast(Any, None),
        bound=16,
        bound_bytes=1 << 20,
        batch=8,
        counters=counters,
        log=RateLimitedLog(logging.getLogger("trionano.test")),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # the node stops: its sender's channel end is closed
    assert link.put(b"an item") is False
    assert (counters.dropped, link.held) == (1, 0)


async def test_a_message_for_a_closed_lane_is_refused_node_stopping() -> None:
    lane = Lane("main", 1, RateLimitedLog(logging.getLogger("trionano.test")))
    lane.close()
    with pytest.raises(NodeStopping):
        await _push_onto(lane, lambda: None)
