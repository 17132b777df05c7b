"""nano's hot ``clusterpb`` messages (``proto/cluster.proto``), encoded and decoded by hand:
``RequestMessage``, ``NotifyMessage``, ``ResponseMessage``, ``PushMessage`` and the empty
``MemberHandleResponse``. The bytes are protobuf's, exactly as the generated betterproto classes
(and Go nano's gogo-protobuf) write them: fields in number order, proto3 defaults left out,
``int64`` session ids as varints (a negative one in ten bytes). The tests check both ways.

Each class is what grpclib's protobuf codec needs (``SerializeToString`` / ``FromString``),
so the unary calls and handlers of the hot methods never build a betterproto message.
``FromString`` raises :class:`MessageError` (a ValueError) for bytes that are not the message;
unknown fields are skipped, a repeated field's last value wins (as protobuf's parsers do).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from ._protowire import VarintError, length_field, read_varint, string_field, varint

__all__ = [
    "MemberHandleResponse",
    "MessageError",
    "NotifyMessage",
    "PushMessage",
    "RequestMessage",
    "ResponseMessage",
]


class MessageError(ValueError):
    """Bytes that are not the expected ``clusterpb`` message."""


_U64: Final = 1 << 64


def _int_field(tag: bytes, value: int) -> bytes:
    return tag + varint(value) if value else b""


def _fields(buf: bytes, varints: int, lengths: int) -> tuple[list[int], list[bytes]]:
    """The last value of each field of the message ``buf``: field numbers set in the
    ``varints`` bitmask must be varints, those in ``lengths`` length-delimited (absent: 0 and
    b""); anything else is skipped when its wire type allows."""
    ints = [0] * 8
    blobs = [b""] * 8
    pos, end = 0, len(buf)
    try:
        while pos < end:
            key, pos = read_varint(buf, pos)
            number, wire = key >> 3, key & 7
            bit = 1 << number if number < 8 else 0
            if wire == 0:
                value, pos = read_varint(buf, pos)
                if bit & lengths:
                    raise MessageError(f"field {number}: expected a length-delimited value")
                if bit & varints:
                    ints[number] = value
            elif wire == 2:
                size, pos = read_varint(buf, pos)
                if pos + size > end:
                    raise MessageError("truncated message")
                if bit & varints:
                    raise MessageError(f"field {number}: expected a varint")
                if bit & lengths:
                    blobs[number] = buf[pos : pos + size]
                pos += size
            elif wire in (1, 5):
                if bit & (varints | lengths):
                    raise MessageError(f"field {number}: unexpected wire type {wire}")
                pos += 8 if wire == 1 else 4
            else:
                raise MessageError(f"unsupported wire type {wire}")
    except IndexError:
        raise MessageError("truncated message") from None
    except VarintError as exc:
        raise MessageError(str(exc)) from None
    if pos != end:
        raise MessageError("truncated message")
    return ints, blobs


def _int64(value: int) -> int:
    return value - _U64 if value >= 1 << 63 else value


def _text(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise MessageError(f"a string field is not UTF-8: {exc.reason}") from None


class RequestMessage(NamedTuple):
    """``clusterpb.RequestMessage``: a client's Request forwarded to a member."""

    gate_addr: str
    session_id: int  # int64
    id: int  # uint64
    route: str
    data: bytes

    def SerializeToString(self) -> bytes:  # protobuf's name, called by grpclib
        return b"".join(
            (
                string_field(b"\x0a", self.gate_addr),
                _int_field(b"\x10", self.session_id),
                _int_field(b"\x18", self.id),
                string_field(b"\x22", self.route),
                length_field(b"\x2a", self.data),
            )
        )

    @classmethod
    def FromString(cls, data: bytes) -> RequestMessage:
        ints, blobs = _fields(data, 0b1100, 0b110010)
        return cls(_text(blobs[1]), _int64(ints[2]), ints[3], _text(blobs[4]), blobs[5])


class NotifyMessage(NamedTuple):
    """``clusterpb.NotifyMessage``: a client's Notify (or a session.rpc) forwarded to a member."""

    gate_addr: str
    session_id: int  # int64
    route: str
    data: bytes

    def SerializeToString(self) -> bytes:
        return b"".join(
            (
                string_field(b"\x0a", self.gate_addr),
                _int_field(b"\x10", self.session_id),
                string_field(b"\x1a", self.route),
                length_field(b"\x22", self.data),
            )
        )

    @classmethod
    def FromString(cls, data: bytes) -> NotifyMessage:
        ints, blobs = _fields(data, 0b100, 0b11010)
        return cls(_text(blobs[1]), _int64(ints[2]), _text(blobs[3]), blobs[4])


class ResponseMessage(NamedTuple):
    """``clusterpb.ResponseMessage``: a member's Response for a gate's client."""

    session_id: int  # int64
    id: int  # uint64
    data: bytes

    def SerializeToString(self) -> bytes:
        return b"".join(
            (_int_field(b"\x08", self.session_id), _int_field(b"\x10", self.id), length_field(b"\x1a", self.data))
        )

    @classmethod
    def FromString(cls, data: bytes) -> ResponseMessage:
        ints, blobs = _fields(data, 0b110, 0b1000)
        return cls(_int64(ints[1]), ints[2], blobs[3])


class PushMessage(NamedTuple):
    """``clusterpb.PushMessage``: a member's push for a gate's client."""

    session_id: int  # int64
    route: str
    data: bytes

    def SerializeToString(self) -> bytes:
        return b"".join(
            (_int_field(b"\x08", self.session_id), string_field(b"\x12", self.route), length_field(b"\x1a", self.data))
        )

    @classmethod
    def FromString(cls, data: bytes) -> PushMessage:
        ints, blobs = _fields(data, 0b10, 0b1100)
        return cls(_int64(ints[1]), _text(blobs[2]), blobs[3])


class MemberHandleResponse:
    """``clusterpb.MemberHandleResponse``: empty (its bytes, whatever they hold, are ignored:
    a newer peer's fields)."""

    __slots__ = ()

    def SerializeToString(self) -> bytes:
        return b""

    @classmethod
    def FromString(cls, data: bytes) -> MemberHandleResponse:
        return _EMPTY


_EMPTY: Final = MemberHandleResponse()
