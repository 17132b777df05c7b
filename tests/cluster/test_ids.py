"""Session ids unique across the cluster with no configuration: snowflake-like, below 2**53
(JavaScript reads them exactly), a random node part per process."""

from __future__ import annotations

import time

import pytest

from trionano import Components
from trionano.cluster import ClusterConfig, Node
from trionano.cluster._ids import EPOCH, NODE_BITS, TICK_BITS, SessionIds

NOW = float(EPOCH + 40_000_000)


def test_ids_follow_the_clock_and_stay_exact_in_javascript() -> None:
    ids = SessionIds()
    first = next(ids)
    assert 0 < first < 2**53
    assert float(first) == first  # a JavaScript number holds it exactly
    assert abs((first >> NODE_BITS) - (time.time() - EPOCH)) < 5
    assert first & ((1 << NODE_BITS) - 1) == ids.node


def test_a_burst_never_repeats_an_id_even_with_a_frozen_or_backward_clock() -> None:
    now = [NOW]
    ids = SessionIds(7, clock=lambda: now[0])
    seen = [next(ids) for _ in range(50_000)]
    now[0] -= 3600  # the wall clock steps back an hour
    seen += [next(ids) for _ in range(1_000)]
    assert seen == sorted(set(seen))  # strictly increasing
    assert all(i & ((1 << NODE_BITS) - 1) == 7 for i in seen)


def test_sources_with_different_node_parts_never_collide_whatever_their_load() -> None:
    sources = [SessionIds(node, clock=lambda: NOW) for node in (1, 2, 3)]
    drawn = [next(source) for _ in range(10_000) for source in sources]
    assert len(set(drawn)) == len(drawn)


def test_the_node_part_is_drawn_at_random_per_source() -> None:
    nodes = {SessionIds().node for _ in range(16)}
    assert len(nodes) >= 15  # two equal of 16 draws from 2**20: p < 1.2e-4


def test_two_nodes_in_one_process_share_nothing() -> None:
    a, b = (Node(Components(), ClusterConfig(service_address=f"127.0.0.1:{port}", is_master=True)) for port in (1, 2))
    assert (a.server.next_id() ^ b.server.next_id()) & ((1 << NODE_BITS) - 1)  # different node parts


def test_a_configured_node_part_is_used_and_checked() -> None:
    node = Node(Components(), ClusterConfig(service_address="127.0.0.1:1", is_master=True, node_id=5))
    assert node.server.next_id() & ((1 << NODE_BITS) - 1) == 5
    with pytest.raises(ValueError, match="node_id"):
        ClusterConfig(service_address="127.0.0.1:1", is_master=True, node_id=1 << NODE_BITS)


def test_ids_run_out_loudly_rather_than_past_2_53() -> None:
    ids = SessionIds(0, clock=lambda: float(EPOCH + (1 << TICK_BITS) - 1))
    assert next(ids) < 2**53
    with pytest.raises(RuntimeError, match="exhausted"):
        next(ids)
