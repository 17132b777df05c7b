"""Handshaking: who makes room for a newcomer; peer_host: what a peer is."""

from __future__ import annotations

import pytest

from trionano._admission import HANDSHAKE_GRACE, Handshaking, Room
from trionano._listen import peer_host

LATER = HANDSHAKE_GRACE + 0.5


def test_a_peer_at_its_bound_loses_its_oldest_once_past_the_grace() -> None:
    slots = Handshaking[str](limit=100, per_host=2)
    slots.add("a1", "A", 0.0)
    slots.add("a2", "A", 0.1)
    slots.add("b1", "B", 0.0)
    assert slots.make_room("A", 0.5, connections=3, max_connections=10) == Room(refuse="server busy")
    assert len(slots) == 3  # nothing changed for a refusal
    assert slots.make_room("A", LATER, connections=3, max_connections=10) == Room(evict=("a1",))
    assert "a1" not in slots
    assert slots.count("A") == 1
    assert slots.make_room("B", LATER, connections=2, max_connections=10) == Room()


def test_all_peers_together_and_a_full_server() -> None:
    slots = Handshaking[str](limit=2, per_host=None)
    slots.add("x", "A", 0.0)
    slots.add("y", None, 0.2)
    assert slots.make_room("C", 0.5, connections=2, max_connections=10) == Room(refuse="server busy")
    assert slots.make_room("C", LATER, connections=2, max_connections=10) == Room(evict=("x",))
    # a full server: the oldest handshaking connection makes room, else "server full"
    slots.remove("y")
    assert slots.make_room(None, LATER, connections=5, max_connections=5) == Room(refuse="server full")
    slots.add("z", None, 0.0)
    assert slots.make_room(None, LATER, connections=5, max_connections=5) == Room(evict=("z",))
    slots.remove("z")  # idempotent
    assert len(slots) == 0


def test_one_newcomer_never_evicts_more_than_it_needs() -> None:
    slots = Handshaking[str](limit=2, per_host=1)
    slots.add("a", "A", 0.0)
    slots.add("b", "B", 0.0)
    # A is at its bound and all are at theirs: evicting A's one makes room on every count
    assert slots.make_room("A", LATER, connections=2, max_connections=2) == Room(evict=("a",))


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("127.0.0.2:5000", "127.0.0.2"),
        ("[2001:db8::1:2]:443", "2001:db8::/64"),
        ("[2001:db8::ffff:1]:443", "2001:db8::/64"),  # one /64: one peer
        ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
        ("unknown", None),
        ("not-an-ip:80", None),
    ],
)
def test_peer_host(address: str, host: str | None) -> None:
    assert peer_host(address) == host
