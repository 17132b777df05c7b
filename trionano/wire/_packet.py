"""Packet framing: a 1-byte type, a 3-byte big-endian body length, the body (nano.md §1)."""

from __future__ import annotations

import enum
import struct
from typing import Final

import attrs

from ._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEAD_LENGTH",
    "MAX_BODY_SIZE",
    "Packet",
    "PacketDecoder",
    "PacketType",
    "encode_packet",
]

HEAD_LENGTH: Final = 4
#: nano's ``MaxPacketSize``: the largest body a decoder accepts by default (exactly this is legal).
MAX_BODY_SIZE: Final = 64 * 1024
#: The 3-byte length field cannot say more than this, whatever a caller configures.
_LENGTH_FIELD_MAX: Final = (1 << 24) - 1

_HEADER: Final = struct.Struct(">I")


class PacketType(enum.IntEnum):
    """A packet's type, its first byte."""

    HANDSHAKE = 0x01
    HANDSHAKE_ACK = 0x02
    HEARTBEAT = 0x03
    DATA = 0x04
    KICK = 0x05


# Indexed by the raw type byte; a tuple lookup is several times cheaper than PacketType(n).
_TYPE_BY_BYTE: Final[tuple[PacketType | None, ...]] = tuple(
    PacketType(n) if n in PacketType._value2member_map_ else None for n in range(256)
)


@attrs.frozen
class Packet:
    """One packet off the wire. ``body`` is the raw body bytes (a copy, never a view)."""

    type: PacketType
    body: bytes = b""


def check_max_body(max_body: int) -> int:
    """Validate a configured maximum body size; returns it. Raises LocalProtocolError."""
    if not 0 <= max_body <= _LENGTH_FIELD_MAX:
        raise LocalProtocolError(f"maximum packet body must be in 0..{_LENGTH_FIELD_MAX}, not {max_body}")
    return max_body


def encode_packet(type: int, body: bytes = b"", *, max_body: int = MAX_BODY_SIZE) -> bytes:
    """Frame ``body`` as one packet.

    Raises LocalProtocolError (``wrong packet type``) for a type outside 1..5 and (``packet
    size exceed: the packet is too large``) for a body over ``max_body``: nano encodes such frames and its own
    decoder then rejects them; trionano never emits what a decoder would reject.
    """
    if not PacketType.HANDSHAKE <= type <= PacketType.KICK:
        raise LocalProtocolError(f"wrong packet type: {type}")
    n = len(body)
    if n > max_body:
        raise LocalProtocolError(f"packet size exceed: the packet is too large, body of {n} bytes > maximum {max_body}")
    return _HEADER.pack(type << 24 | n) + body


class PacketDecoder:
    """Streaming decoder: feed it bytes in any chunking, take packets out as soon as their last
    byte has arrived.

    Usage::

        decoder.feed(chunk)
        while (packet := decoder.next_packet()) is not None:
            ...

    ``next_packet`` raises RemoteProtocolError (``wrong packet type`` / ``packet size exceed``)
    when it reaches a bad header, after every packet before it has been handed out. After an
    error the decoder is spent: every later call raises the same error.

    Work is linear in the bytes received, however they are chunked: each call does a bounded
    amount of bookkeeping, and each byte is copied at most six times: into the pending tail, by
    the join that brings it in, and as left-over (slice and join) by at most two more joins, the
    one that completes its packet's header and the one that completes its packet. A read
    holding only whole packets is not copied at all.
    """

    __slots__ = ("_buf", "_copied", "_error", "_pos", "_tail", "max_body")

    def __init__(self, *, max_body: int = MAX_BODY_SIZE) -> None:
        self.max_body: Final = check_max_body(max_body)
        self._buf = b""  # bytes not yet consumed start at _pos
        self._pos = 0
        # Bytes arrived after _buf, not yet joined to it. One growing buffer, not a list of
        # chunks: its length is the running total, and a peer that trickles single bytes costs
        # one byte of memory per byte, not one object.
        self._tail = bytearray()
        self._copied = 0  # bytes copied into _tail or by joins: the work, for tests to bound
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as packets."""
        return len(self._buf) - self._pos + len(self._tail)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes. Cheap: joining is deferred until a packet can be complete."""
        if not data:
            return
        if self._pos == len(self._buf) and not self._tail and type(data) is bytes:
            self._buf, self._pos = data, 0  # the usual case: nothing left over, no copy at all
        else:
            self._tail += data
            self._copied += len(data)

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None until more bytes arrive. Raises RemoteProtocolError."""
        raw = self.next_raw()
        return None if raw is None else Packet(raw[0], raw[1])

    def next_raw(self) -> tuple[PacketType, bytes] | None:
        """:meth:`next_packet` as a ``(type, body)`` pair, for hot loops."""
        if self._error is not None:
            raise self._error
        while True:
            buf, pos = self._buf, self._pos
            need = HEAD_LENGTH
            if len(buf) - pos >= HEAD_LENGTH:
                header = _HEADER.unpack_from(buf, pos)[0]
                ptype = _TYPE_BY_BYTE[header >> 24]
                if ptype is None:
                    raise self._fail(f"wrong packet type: {header >> 24}")
                size = header & 0xFFFFFF
                if size > self.max_body:
                    raise self._fail(f"packet size exceed: body of {size} bytes > maximum {self.max_body}")
                end = pos + HEAD_LENGTH + size
                if len(buf) >= end:
                    self._pos = end
                    return ptype, buf[pos + HEAD_LENGTH : end]
                need = HEAD_LENGTH + size
            # Join the tail only once it can complete what is pending (the header, then the
            # packet): a 64 KiB body fed one byte at a time is joined twice, not per byte.
            tail = self._tail
            if len(buf) - pos + len(tail) < need:
                return None
            leftover = buf[pos:]  # a copy unless pos == 0; cheaper than joining a memoryview
            joined = leftover + tail
            self._copied += len(joined) + (len(leftover) if pos else 0)
            self._buf, self._pos = joined, 0
            tail.clear()

    def _fail(self, msg: str) -> RemoteProtocolError:
        self._error = RemoteProtocolError(msg)
        self._buf, self._pos = b"", 0
        self._tail.clear()
        return self._error
