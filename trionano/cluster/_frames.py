"""The fast path's frames (``proto/stream.proto``, package ``trionano.cluster``), encoded and
decoded by hand: the hot path never builds a betterproto message. The bytes are protobuf's,
exactly as the generated classes would write them (the tests check both ways), so any
protobuf implementation can read a batch.

Frames are typed named tuples; :func:`encode_frame` turns one into the bytes of a ``Frame``,
:func:`join_batch` joins encoded frames into one ``Batch``, :func:`decode_batch` reads a
``Batch`` back. Decoding never raises anything but :class:`FrameError` (a ValueError) for
bytes that are not a batch; unknown fields and frame kinds are skipped (a newer peer's).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple, TypeAlias

from ._protowire import VarintError, length_field, read_varint, string_field, varint

__all__ = [
    "Audit",
    "Batch",
    "CloseSession",
    "Error",
    "Frame",
    "FrameError",
    "Notify",
    "Push",
    "PushBatch",
    "Request",
    "Response",
    "SessionClosed",
    "decode_batch",
    "encode_frame",
    "join_batch",
]


class FrameError(ValueError):
    """Bytes that are not a valid ``Batch``."""


class Request(NamedTuple):
    gate: str  # "" : the stream's other end
    sid: int
    mid: int
    route: str
    data: bytes


class Notify(NamedTuple):
    gate: str
    sid: int
    route: str
    data: bytes


class Response(NamedTuple):
    sid: int
    mid: int
    data: bytes


class Push(NamedTuple):
    sid: int
    route: str
    data: bytes


class SessionClosed(NamedTuple):
    sid: int


class CloseSession(NamedTuple):
    sid: int


class Error(NamedTuple):
    sid: int
    mid: int
    status: int  # a gRPC status code
    message: str


class PushBatch(NamedTuple):
    """Cluster-wide pushes: an encoded ``trionano.push.PushBatch`` (:mod:`._push` reads it)."""

    data: bytes


class Audit(NamedTuple):
    """Which of these sessions of the receiving gate have ended? (It answers SessionClosed
    for each it holds no live session for.)"""

    sids: tuple[int, ...]


Frame: TypeAlias = Request | Notify | Response | Push | SessionClosed | CloseSession | Error | PushBatch | Audit

_KIND: Final = {
    Request: 1,
    Notify: 2,
    Response: 3,
    Push: 4,
    SessionClosed: 5,
    CloseSession: 6,
    Error: 7,
    PushBatch: 8,
    Audit: 9,
}
_SFIXED64: Final = struct.Struct("<q")
_pack_q = _SFIXED64.pack
_unpack_q = _SFIXED64.unpack_from


def _sid(tag: bytes, sid: int) -> bytes:
    return tag + _pack_q(sid) if sid else b""


def _uint(tag: bytes, value: int) -> bytes:
    return tag + varint(value) if value else b""


def encode_frame(frame: Frame) -> bytes:
    """The bytes of one ``Frame`` field of a ``Batch`` (tag and length included): join them
    with :func:`join_batch`. Raises KeyError for an object that is not a frame."""
    if isinstance(frame, Request):
        gate, sid, mid, route, data = frame
        inner = b"".join(
            (
                string_field(b"\x0a", gate),
                _sid(b"\x11", sid),
                _uint(b"\x18", mid),
                string_field(b"\x22", route),
                length_field(b"\x2a", data),
            )
        )
    elif isinstance(frame, Response):
        inner = b"".join((_sid(b"\x09", frame.sid), _uint(b"\x10", frame.mid), length_field(b"\x1a", frame.data)))
    elif isinstance(frame, Push):
        inner = b"".join(
            (_sid(b"\x09", frame.sid), string_field(b"\x12", frame.route), length_field(b"\x1a", frame.data))
        )
    elif isinstance(frame, Notify):
        inner = b"".join(
            (
                string_field(b"\x0a", frame.gate),
                _sid(b"\x11", frame.sid),
                string_field(b"\x1a", frame.route),
                length_field(b"\x22", frame.data),
            )
        )
    elif isinstance(frame, SessionClosed | CloseSession):
        inner = _sid(b"\x09", frame.sid)
    elif isinstance(frame, Error):
        inner = b"".join(
            (
                _sid(b"\x09", frame.sid),
                _uint(b"\x10", frame.mid),
                _uint(b"\x18", frame.status),
                string_field(b"\x22", frame.message),
            )
        )
    elif isinstance(frame, Audit):
        packed = b"".join(_pack_q(sid) for sid in frame.sids)
        inner = length_field(b"\x0a", packed) if packed else b""
    else:
        inner = frame.data
    kind = type(frame)
    field = varint((_KIND[kind] << 3) | 2)
    frame_bytes = field + varint(len(inner)) + inner
    return b"\x0a" + varint(len(frame_bytes)) + frame_bytes


def join_batch(encoded: list[bytes]) -> bytes:
    """One ``Batch`` of frames encoded by :func:`encode_frame`, in order."""
    return b"".join(encoded)


class Batch:
    """A ``Batch`` as grpclib's protobuf codec sees it: raw bytes both ways (decoded by
    :func:`decode_batch` where errors can be handled), never a betterproto message."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # the protobuf method grpclib calls
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> Batch:
        return cls(data)


def _fields(buf: bytes, pos: int, end: int, count: int) -> list[int | bytes]:
    """The last value of fields 1..count of the message in ``buf[pos:end]`` (index 0 unused;
    absent: 0). Length-delimited values are bytes; fixed64 are signed."""
    values: list[int | bytes] = [0] * (count + 1)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, pos = read_varint(buf, pos)
            value: int | bytes = buf[pos : pos + size]
            pos += size
        elif wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            (value,) = _unpack_q(buf, pos)
            pos += 8
        elif wire == 5:
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise FrameError(f"unsupported wire type {wire}")
        if 0 < number <= count:
            values[number] = value
    if pos != end:
        raise FrameError("truncated message")
    return values


def _sids(buf: bytes, pos: int, end: int) -> tuple[int, ...]:
    """Field 1 of ``buf[pos:end]``, a repeated sfixed64: packed runs and single values alike
    (protobuf accepts both); other fields are skipped."""
    sids: list[int] = []
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, pos = read_varint(buf, pos)
            if number == 1:
                if size % 8:
                    raise FrameError("a packed sfixed64 field of a size not a multiple of 8")
                sids.extend(value for (value,) in _SFIXED64.iter_unpack(buf[pos : pos + size]))
            pos += size
        elif wire == 1:
            if number == 1:
                sids.append(_unpack_q(buf, pos)[0])
            pos += 8
        elif wire == 0:
            _, pos = read_varint(buf, pos)
        elif wire == 5:
            pos += 4
        else:
            raise FrameError(f"unsupported wire type {wire}")
    if pos != end:
        raise FrameError("truncated message")
    return tuple(sids)


def _as_bytes(value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if value:
        raise FrameError("expected a length-delimited field")
    return b""


def _as_str(value: int | bytes) -> str:
    return _as_bytes(value).decode()


def _as_int(value: int | bytes) -> int:
    if isinstance(value, bytes):
        raise FrameError("expected a scalar field")
    return value


def _decode_frame(kind: int, buf: bytes, pos: int, end: int) -> Frame | None:
    if kind == 1:
        _, gate, sid, mid, route, data = _fields(buf, pos, end, 5)
        return Request(_as_str(gate), _as_int(sid), _as_int(mid), _as_str(route), _as_bytes(data))
    if kind == 3:
        _, sid, mid, data = _fields(buf, pos, end, 3)
        return Response(_as_int(sid), _as_int(mid), _as_bytes(data))
    if kind == 4:
        _, sid, route, data = _fields(buf, pos, end, 3)
        return Push(_as_int(sid), _as_str(route), _as_bytes(data))
    if kind == 2:
        _, gate, sid, route, data = _fields(buf, pos, end, 4)
        return Notify(_as_str(gate), _as_int(sid), _as_str(route), _as_bytes(data))
    if kind == 5:
        return SessionClosed(_as_int(_fields(buf, pos, end, 1)[1]))
    if kind == 6:
        return CloseSession(_as_int(_fields(buf, pos, end, 1)[1]))
    if kind == 7:
        _, sid, mid, status, message = _fields(buf, pos, end, 4)
        return Error(_as_int(sid), _as_int(mid), _as_int(status), _as_str(message))
    if kind == 8:
        return PushBatch(buf[pos:end])
    if kind == 9:
        return Audit(_sids(buf, pos, end))
    return None  # a kind this node does not know (a newer peer's): skipped


def decode_batch(data: bytes) -> list[Frame]:
    """The frames of a ``Batch``, in order. Raises FrameError for bytes that are not one."""
    frames: list[Frame] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            key, pos = read_varint(data, pos)
            if key != 0x0A:  # Batch.frames; anything else is skipped if its wire type allows
                if key & 7 != 2:
                    raise FrameError(f"unexpected field {key >> 3} of wire type {key & 7}")
                size, pos = read_varint(data, pos)
                pos += size
                continue
            size, pos = read_varint(data, pos)
            frame_end = pos + size
            if frame_end > end:
                raise FrameError("truncated frame")
            frame: Frame | None = None
            while pos < frame_end:  # a Frame: its one field (the last wins, as protobuf's oneof)
                fkey, pos = read_varint(data, pos)
                if fkey & 7 != 2:
                    raise FrameError(f"unexpected frame field of wire type {fkey & 7}")
                fsize, pos = read_varint(data, pos)
                if pos + fsize > frame_end:
                    raise FrameError("truncated frame")
                frame = _decode_frame(fkey >> 3, data, pos, pos + fsize) or frame
                pos += fsize
            if frame is not None:
                frames.append(frame)
    except FrameError:
        raise
    except VarintError as exc:
        raise FrameError("varint too long") from exc
    except (IndexError, struct.error) as exc:
        raise FrameError("truncated batch") from exc
    except UnicodeDecodeError as exc:
        raise FrameError(f"a string field is not UTF-8: {exc.reason}") from exc
    if pos != end:
        raise FrameError("truncated batch")
    return frames
