"""The fast path's hand-written frame codec writes and reads exactly what protobuf (the
betterproto classes generated from proto/stream.proto) does, and bad bytes never raise
anything but FrameError."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from trionano.cluster import _frames as frames
from trionano.cluster._generated.trionano import cluster as streampb
from trionano.cluster._generated.trionano import push as pushpb

sid = st.integers(-(2**63), 2**63 - 1)
uint64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=20)
data = st.binary(max_size=40)

frame = st.one_of(
    st.builds(frames.Request, text, sid, uint64, text, data),
    st.builds(frames.Notify, text, sid, text, data),
    st.builds(frames.Response, sid, uint64, data),
    st.builds(frames.Push, sid, text, data),
    st.builds(frames.SessionClosed, sid),
    st.builds(frames.CloseSession, sid),
    st.builds(frames.Error, sid, uint64, st.integers(0, 2**32 - 1), text),
    st.builds(
        lambda origin, route, body: frames.PushBatch(
            bytes(pushpb.PushBatch(origin=origin, items=[pushpb.PushItem(route=route, data=body, everyone=True)]))
        ),
        text,
        text,
        data,
    ),
    st.builds(lambda sids: frames.Audit(tuple(sids)), st.lists(sid, max_size=5)),
)

_FIELD = {
    frames.Request: "request",
    frames.Notify: "notify",
    frames.Response: "response",
    frames.Push: "push",
    frames.SessionClosed: "session_closed",
    frames.CloseSession: "close_session",
    frames.Error: "error",
    frames.PushBatch: "push_batch",
    frames.Audit: "audit",
}


def generated(item: frames.Frame) -> streampb.Frame:
    """The same frame as a betterproto message."""
    if isinstance(item, frames.PushBatch):
        return streampb.Frame(push_batch=pushpb.PushBatch().parse(item.data))
    if isinstance(item, frames.Audit):
        return streampb.Frame(audit=streampb.Audit(session_ids=list(item.sids)))
    message_class = getattr(streampb, type(item).__name__)
    return streampb.Frame(**{_FIELD[type(item)]: message_class(*item)})


@given(st.lists(frame, max_size=6))
@example([frames.Request("", 0, 0, "", b"")])  # every field at its default: nothing but the frame's tag
@example([frames.Response(-1, 2**64 - 1, b"x" * 200)])  # a negative id, a 10-byte varint, a 2-byte length
def test_frames_are_protobufs_both_ways(items: list[frames.Frame]) -> None:
    encoded = frames.join_batch([frames.encode_frame(item) for item in items])
    reference = bytes(streampb.Batch(frames=[generated(item) for item in items]))
    assert encoded == reference
    assert frames.decode_batch(reference) == items


def test_an_audit_reads_unpacked_ids_too() -> None:
    """protobuf's parsers accept a repeated scalar packed or one value per field: so does this."""
    inner = b"\x09" + (7).to_bytes(8, "little") + b"\x0a\x08" + (-1).to_bytes(8, "little", signed=True)
    frame = b"\x4a" + bytes([len(inner)]) + inner
    batch = b"\x0a" + bytes([len(frame)]) + frame
    assert frames.decode_batch(batch) == [frames.Audit((7, -1))]


@given(st.binary(max_size=200))
@example(b"\x0a\x05\x0a\x03\x0a\x01")  # a frame whose inner message is cut short
@example(b"\x0a\x02\x1a\x80")  # a length that is an unfinished varint
@example(b"\x0a\x04\x0a\x02\x0a\xff")  # a string that is not UTF-8
@example(b"\x0a" + b"\xff" * 11)  # a varint too long
def test_any_bytes_decode_or_raise_frame_error(data: bytes) -> None:
    try:
        frames.decode_batch(data)
    except frames.FrameError:
        pass


def test_unknown_frame_kinds_and_fields_are_skipped() -> None:
    """A newer peer's frames: a kind this node does not know, and an unknown field in a known
    one, are skipped; what it knows still reads."""
    unknown_kind = b"\x0a\x04\x7a\x02\x08\x01"  # Frame field 15: a message {1: 1}
    response = frames.encode_frame(frames.Response(5, 6, b"ok"))
    assert frames.decode_batch(unknown_kind + response) == [frames.Response(5, 6, b"ok")]
    push = bytes(streampb.Push(session_id=7, route="r", data=b"d"))
    inner = push + b"\x78\x01"  # field 15, a varint
    frame = b"\x22" + bytes([len(inner)]) + inner  # Frame.push
    assert frames.decode_batch(b"\x0a" + bytes([len(frame)]) + frame) == [frames.Push(7, "r", b"d")]
