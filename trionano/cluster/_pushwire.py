"""``trionano.push`` messages (``proto/push.proto``) encoded and decoded by hand, as ``_codec``
does for nano's hot messages: a push's audience may name 10,000 uids, which betterproto encodes
at ~3 us and parses at ~10 us each (a 10,000-uid push held a node's loop for 25 to 50 ms to
encode, per gate, and each gate's for 100 to 160 ms to parse). Here a push item is encoded
once at the origin, whatever the number of gates, and a batch is the items' bytes joined; the
gate decodes one item at a time. The bytes are protobuf's, exactly as the generated betterproto
classes write them (fields in number order, defaults left out, the oneof audience always
written, ``uids`` packed); the tests check both ways.

Decoding raises :class:`PushWireError` (a ValueError) for bytes that are not the message;
unknown fields are skipped; ``uids`` is read packed or not (protobuf's parsers accept both);
of the oneof audience and of repeated scalars' other fields, the last one on the wire wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

from ._protowire import VarintError, length_field, read_varint, string_field, varint

__all__ = [
    "EncodedPushBatch",
    "PushItem",
    "PushWireError",
    "batch_items",
    "decode_item",
    "encode_batch",
    "encode_item",
    "packed_varints",
]

_U64: Final = 1 << 64
_I64: Final = 1 << 63


class PushWireError(ValueError):
    """Bytes that are not the expected ``trionano.push`` message."""


class PushItem(NamedTuple):
    """A decoded ``trionano.push.PushItem``: ``kind`` is "uids", "group", "everyone" or ""
    (no audience); ``uids`` (int64 values, in wire order) for "uids", ``group`` for "group"."""

    route: str
    data: bytes
    kind: str
    uids: list[int]
    group: str


class EncodedPushBatch:
    """A ``trionano.push.PushBatch`` as grpclib's protobuf codec sees it: raw bytes both ways
    (:func:`encode_batch` makes them; :func:`batch_items` reads them where errors can be
    handled), never a betterproto message."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # the protobuf method grpclib calls
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> EncodedPushBatch:
        return cls(data)


def packed_varints(values: Sequence[int]) -> bytes:
    """``values`` (integers from 0 to 2**64-1) as the varints of a packed repeated field,
    without its tag and length."""
    out = bytearray()
    append = out.append
    for n in values:
        while n >= 128:
            append((n & 0x7F) | 0x80)
            n >>= 7
        append(n)
    return bytes(out)


def encode_item(
    route: str, data: bytes, *, uids: Sequence[int] | None = None, group: str | None = None, everyone: bool = False
) -> bytes:
    """The bytes of one ``PushItem`` for exactly one audience: ``uids`` (1 to 2**63-1 each),
    ``group`` or ``everyone``. Raises UnicodeEncodeError for text that cannot be UTF-8 (a lone
    surrogate), ValueError for no audience or several."""
    if (uids is not None) + (group is not None) + everyone != 1:
        raise ValueError("a push item has exactly one audience")
    head = string_field(b"\x0a", route) + length_field(b"\x12", data)
    if uids is not None:
        packed = packed_varints(uids)
        inner = b"\x0a" + varint(len(packed)) + packed if packed else b""
        return head + b"\x1a" + varint(len(inner)) + inner
    if group is not None:
        name = group.encode()
        return head + b"\x22" + varint(len(name)) + name
    return head + b"\x28\x01"


def encode_batch(origin: str, items: Sequence[bytes]) -> bytes:
    """The bytes of one ``PushBatch`` from ``origin`` of ``items`` (:func:`encode_item`'s)."""
    parts = [string_field(b"\x0a", origin)]
    for item in items:
        parts.append(b"\x12" + varint(len(item)))
        parts.append(item)
    return b"".join(parts)


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return read_varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        size, pos = read_varint(buf, pos)
        return pos + size
    if wire == 5:
        return pos + 4
    raise PushWireError(f"unsupported wire type {wire}")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field of the message ``buf``; for a
    varint, ``start`` is its value and ``end`` the position after it."""
    pos, end = 0, len(buf)
    try:
        while pos < end:
            key, pos = read_varint(buf, pos)
            number, wire = key >> 3, key & 7
            if wire == 2:
                size, pos = read_varint(buf, pos)
                stop = pos + size
                if stop > end:
                    raise PushWireError("truncated field")
                yield number, wire, pos, stop
                pos = stop
            elif wire == 0:
                value, pos = read_varint(buf, pos)
                yield number, wire, value, pos
            else:
                pos = _skip(buf, pos, wire)
                if pos > end:
                    raise PushWireError("truncated field")
    except IndexError:
        raise PushWireError("truncated message") from None
    except VarintError as exc:
        raise PushWireError(str(exc)) from None


def batch_items(data: bytes) -> tuple[str, list[bytes]]:
    """The origin and the items (each still encoded: :func:`decode_item`) of a ``PushBatch``.
    Raises PushWireError."""
    origin = b""
    items: list[bytes] = []
    for number, wire, start, stop in _fields(data):
        if wire != 2:
            if number in (1, 2):
                raise PushWireError(f"field {number} is length-delimited")
            continue
        if number == 1:
            origin = data[start:stop]
        elif number == 2:
            items.append(data[start:stop])
    try:
        return origin.decode(), items
    except UnicodeDecodeError:
        raise PushWireError("origin is not UTF-8") from None


def _signed(n: int) -> int:
    return n - _U64 if n >= _I64 else n


def _unpack_uids(buf: bytes, start: int, stop: int, out: list[int]) -> None:
    """Append the varints of ``buf[start:stop]`` (a packed int64 field's value) to ``out``."""
    append = out.append
    byte = 0
    it = iter(buf[start:stop])
    for byte in it:
        if byte < 0x80:  # one byte: 0 to 127
            append(byte)
            continue
        value = byte & 0x7F
        shift = 7
        for byte in it:
            if byte < 0x80:
                value |= byte << shift
                break
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 63:
                raise PushWireError("varint too long")
        else:
            raise PushWireError("truncated packed varints")
        append(value if value < _I64 else _signed(value & (_U64 - 1)))


def _uids(buf: bytes) -> list[int]:
    uids: list[int] = []
    for number, wire, start, stop in _fields(buf):
        if number != 1:
            continue
        if wire == 2:
            _unpack_uids(buf, start, stop, uids)
        elif wire == 0:
            uids.append(_signed(start))
        else:
            raise PushWireError("uids: a varint field")
    return uids


def decode_item(data: bytes) -> PushItem:
    """One ``PushItem`` (:func:`batch_items`' bytes). Raises PushWireError."""
    route = body = b""
    kind = ""
    audience = b""
    for number, wire, start, stop in _fields(data):
        if number in (1, 2, 3, 4):
            if wire != 2:
                raise PushWireError(f"field {number} is length-delimited")
            value = data[start:stop]
            if number == 1:
                route = value
            elif number == 2:
                body = value
            else:
                kind, audience = ("uids" if number == 3 else "group"), value
        elif number == 5:
            if wire != 0:
                raise PushWireError("everyone is a bool")
            kind = "everyone"
    try:
        text = route.decode()
        if kind == "group":
            return PushItem(text, body, kind, [], audience.decode())
    except UnicodeDecodeError:
        raise PushWireError("a string field is not UTF-8") from None
    return PushItem(text, body, kind, _uids(audience) if kind == "uids" else [], "")
