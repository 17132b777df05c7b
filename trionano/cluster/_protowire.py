"""Protocol Buffers' wire format for the codecs written by hand (nano's hot clusterpb messages in
``_codec``, the fast path's frames in ``_frames``, push items in ``_pushwire``): varints and
length-delimited fields, byte-exact with what betterproto writes (default values omitted), and
the varint reader the decoders share."""

from __future__ import annotations

from typing import Final

__all__ = ["VarintError", "length_field", "read_varint", "string_field", "varint"]

_SMALL: Final = [bytes((n,)) for n in range(128)]
_U64: Final = 1 << 64


def varint(n: int) -> bytes:
    """``n`` as a base-128 varint; a negative ``n`` as its 64-bit two's complement (ten bytes),
    as protobuf writes an int64."""
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += _U64
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_field(tag: bytes, value: bytes) -> bytes:
    """A length-delimited field (``tag`` already encoded); nothing for empty ``value``."""
    return tag + varint(len(value)) + value if value else b""


def string_field(tag: bytes, value: str) -> bytes:
    """A string field, UTF-8 (raises UnicodeEncodeError for a lone surrogate); nothing for ""."""
    return length_field(tag, value.encode()) if value else b""


class VarintError(ValueError):
    """A varint longer than ten bytes."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos]``, as an unsigned 64-bit value (what a longer one carries past
    64 bits is dropped, as protobuf does), and the position after it. Raises IndexError when
    ``buf`` ends within it, VarintError past ten bytes."""
    byte = buf[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    result = byte & 0x7F
    shift = 7
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & (_U64 - 1), pos
        shift += 7
        if shift > 63:
            raise VarintError("varint too long")
