"""The hand codecs of nano's hot clusterpb messages (trionano.cluster._codec) write the bytes the
generated betterproto classes write, and read what those write, both ways; bad bytes raise
MessageError only."""

from __future__ import annotations

from typing import Any

import betterproto
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trionano.cluster import _codec as codec
from trionano.cluster._generated import clusterpb as pb

int64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
uint64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
text = st.text(max_size=12)
blob = st.binary(max_size=40)

PAIRS: list[tuple[type[Any], type[betterproto.Message], st.SearchStrategy[Any]]] = [
    (
        codec.RequestMessage,
        pb.RequestMessage,
        st.builds(codec.RequestMessage, text, int64, uint64, text, blob),
    ),
    (codec.NotifyMessage, pb.NotifyMessage, st.builds(codec.NotifyMessage, text, int64, text, blob)),
    (codec.ResponseMessage, pb.ResponseMessage, st.builds(codec.ResponseMessage, int64, uint64, blob)),
    (codec.PushMessage, pb.PushMessage, st.builds(codec.PushMessage, int64, text, blob)),
]


ZERO: dict[type[Any], object] = {
    codec.RequestMessage: codec.RequestMessage("", 0, 0, "", b""),
    codec.NotifyMessage: codec.NotifyMessage("", 0, "", b""),
    codec.ResponseMessage: codec.ResponseMessage(0, 0, b""),
    codec.PushMessage: codec.PushMessage(0, "", b""),
}


def generated(message: Any, cls: type[betterproto.Message]) -> betterproto.Message:
    return cls(**message._asdict())


@pytest.mark.parametrize(("hand", "cls", "messages"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_hand_codecs_match_the_generated_classes_both_ways(
    hand: type[Any], cls: type[betterproto.Message], messages: st.SearchStrategy[Any]
) -> None:
    @given(messages)
    @example(ZERO[hand])
    def check(message: Any) -> None:
        expected = bytes(generated(message, cls))
        assert message.SerializeToString() == expected
        assert hand.FromString(expected) == message
        assert cls().parse(message.SerializeToString()) == generated(message, cls)

    check()


def test_the_recorded_vectors() -> None:
    """The same hand-worked bytes tests/cluster/test_clusterpb.py checks the generated classes with."""
    assert codec.RequestMessage("g", 5, 300, "r.x", b"{}").SerializeToString().hex() == (
        "0a0167100518ac022203722e782a027b7d"
    )
    assert codec.NotifyMessage("g", 2, "r", b"d").SerializeToString().hex() == "0a016710021a0172220164"
    assert codec.ResponseMessage(1, 2, b"ok").SerializeToString().hex() == "080110021a026f6b"
    assert codec.PushMessage(3, "onX", b"{}").SerializeToString().hex() == "080312036f6e581a027b7d"
    assert codec.ResponseMessage(-1, 0, b"").SerializeToString().hex() == "08ffffffffffffffffff01"
    assert codec.MemberHandleResponse().SerializeToString() == b""
    assert isinstance(codec.MemberHandleResponse.FromString(b"\x08\x01"), codec.MemberHandleResponse)


def test_unknown_fields_are_skipped_and_the_last_value_wins() -> None:
    newer = bytes.fromhex("080110021a026f6b") + bytes.fromhex("2003") + bytes.fromhex("2a0178") + b"\x31" + bytes(8)
    assert codec.ResponseMessage.FromString(newer) == codec.ResponseMessage(1, 2, b"ok")
    twice = bytes.fromhex("0801") + bytes.fromhex("0809")
    assert codec.PushMessage.FromString(twice) == codec.PushMessage(9, "", b"")


@given(st.binary(max_size=60))
@example(b"\x0a\x05ab")  # truncated
@example(b"\x08" + b"\xff" * 11)  # varint too long
@example(b"\x0a\x02\xff\xfe")  # not UTF-8
@example(b"\x0b")  # a group
@example(b"\x08\x01\x12")  # wire type mismatch, then truncated
def test_bad_bytes_raise_message_error_only(data: bytes) -> None:
    for hand, _, _ in PAIRS:
        try:
            hand.FromString(data)
        except codec.MessageError:
            pass
