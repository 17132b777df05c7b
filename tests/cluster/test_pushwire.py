"""The hand codec of ``trionano.push`` (trionano.cluster._pushwire) writes the bytes the
generated betterproto classes write and reads what they write, both ways, for every audience
(uids packed, or not, as another protobuf writer may send them); bad bytes raise
PushWireError only."""

from __future__ import annotations

import betterproto
from hypothesis import example, given
from hypothesis import strategies as st

from trionano.cluster import Audience
from trionano.cluster import _pushwire as pushwire
from trionano.cluster._generated.trionano import push as pushpb
from trionano.cluster._protowire import varint

uid = st.integers(min_value=1, max_value=(1 << 63) - 1)
text = st.text(max_size=12)
blob = st.binary(max_size=40)
audiences = st.one_of(
    st.lists(uid, min_size=1, max_size=50).map(lambda uids: ("uids", sorted(set(uids)))),
    text.map(lambda name: ("group", name)),
    st.just(("everyone", True)),
)


def generated(route: str, data: bytes, kind: str, value: object) -> pushpb.PushItem:
    if kind == "uids":
        assert isinstance(value, list)
        return pushpb.PushItem(route=route, data=data, uids=pushpb.Uids(uids=value))
    if kind == "group":
        assert isinstance(value, str)
        return pushpb.PushItem(route=route, data=data, group=value)
    return pushpb.PushItem(route=route, data=data, everyone=True)


@given(text, blob, audiences)
@example("onX", b"", ("uids", [1, 127, 128, 16383, 16384, (1 << 63) - 1]))
@example("", b"", ("group", ""))
def test_items_match_the_generated_classes_both_ways(route: str, data: bytes, audience: tuple[str, object]) -> None:
    kind, value = audience
    expected = bytes(generated(route, data, kind, value))
    if kind == "uids":
        assert isinstance(value, list)
        hand = pushwire.encode_item(route, data, uids=value)
    elif kind == "group":
        assert isinstance(value, str)
        hand = pushwire.encode_item(route, data, group=value)
    else:
        hand = pushwire.encode_item(route, data, everyone=True)
    assert hand == expected
    item = pushwire.decode_item(expected)
    assert (item.route, item.data, item.kind) == (route, data, kind)
    assert item.uids == (value if kind == "uids" else [])
    assert item.group == (value if kind == "group" else "")
    assert pushpb.PushItem().parse(hand) == generated(route, data, kind, value)


@given(text, st.lists(st.tuples(text, blob, audiences), max_size=5))
def test_batches_match_the_generated_classes_both_ways(
    origin: str, items: list[tuple[str, bytes, tuple[str, object]]]
) -> None:
    messages = [generated(route, data, *audience) for route, data, audience in items]
    expected = bytes(pushpb.PushBatch(origin=origin, items=messages))
    assert pushwire.encode_batch(origin, [bytes(message) for message in messages]) == expected
    parsed_origin, raw = pushwire.batch_items(expected)
    assert parsed_origin == origin
    assert [pushpb.PushItem().parse(item) for item in raw] == messages


def test_an_audience_encodes_as_the_generated_class_would() -> None:
    for audience, expected in (
        (Audience.of_uids([300, 2, 2]), pushpb.PushItem(route="r", data=b"{}", uids=pushpb.Uids(uids=[2, 300]))),
        (Audience.of_group("room"), pushpb.PushItem(route="r", data=b"{}", group="room")),
        (Audience.all(), pushpb.PushItem(route="r", data=b"{}", everyone=True)),
    ):
        assert audience.encode("r", b"{}") == bytes(expected)
        assert audience.item("r", b"{}") == expected


def test_uids_not_packed_and_negative_ones_are_read_as_protobuf_reads_them() -> None:
    """proto3 parsers accept a repeated scalar packed or not; int64 -1 is ten bytes."""
    unpacked = b"".join(b"\x08" + varint(n) for n in (5, 300))
    item = b"\x0a\x01r" + b"\x1a" + varint(len(unpacked)) + unpacked
    assert pushwire.decode_item(item).uids == [5, 300]
    negative = bytes(pushpb.PushItem(route="r", uids=pushpb.Uids(uids=[-1, 7])))
    assert pushwire.decode_item(negative).uids == [-1, 7]
    # the last audience on the wire wins, as protobuf's oneof
    both = bytes(pushpb.PushItem(route="r", group="g")) + b"\x28\x01"
    assert pushwire.decode_item(both).kind == "everyone"
    assert betterproto.which_one_of(pushpb.PushItem().parse(both), "audience")[0] == "everyone"


@given(st.binary(max_size=60))
@example(b"\x1a\x02\x0a\x05")  # a packed field longer than its message
@example(b"\x1a\x03\x0a\x01\x80")  # a varint cut short
@example(b"\x0a\x01\xff")  # a route that is not UTF-8
@example(b"\x12" + b"\xff" * 11)  # a varint too long
def test_bad_bytes_raise_pushwireerror_only(data: bytes) -> None:
    for read in (pushwire.decode_item, pushwire.batch_items):
        try:
            read(data)
        except pushwire.PushWireError:
            pass
