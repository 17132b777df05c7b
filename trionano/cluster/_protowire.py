"""Protocol Buffers' wire format, the encoding side, for the codecs written by hand (nano's hot
clusterpb messages in ``_codec``, the fast path's frames in ``_frames``): varints and
length-delimited fields, byte-exact with what betterproto writes (default values omitted)."""

from __future__ import annotations

from typing import Final

__all__ = ["length_field", "string_field", "varint"]

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
