"""Message layer: the flag byte, varint ids, routes and route compression (nano.md §2).

A message is the body of a Data packet::

    flag (type << 1 | route-compressed) | id (Request, Response) | route (Request, Notify, Push) | body
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import ClassVar, Final, Literal, TypeAlias

import attrs

from ._errors import LocalProtocolError, RemoteProtocolError
from ._packet import MAX_BODY_SIZE, PacketType, check_max_body

__all__ = [
    "MAX_ROUTE_LENGTH",
    "Message",
    "MessageCodec",
    "MessageType",
    "Notify",
    "Push",
    "Request",
    "Response",
    "RouteDict",
    "decode_message",
    "decode_route",
    "encode_message",
]

#: The longest route (in UTF-8 bytes) an uncompressed route field can carry.
MAX_ROUTE_LENGTH: Final = 255
MAX_MESSAGE_ID: Final = (1 << 64) - 1
_MAX_CODE: Final = 0xFFFF
_MAX_VARINT_BYTES: Final = 10  # ceil(64 / 7)
_PACK_HEADER: Final = struct.Struct(">I").pack
_DATA: Final = PacketType.DATA << 24
_BYTE: Final = tuple(bytes((n,)) for n in range(256))
# Caches of per-route encodings stop growing here; routes come from server code, but a server
# that pushes to computed routes must not grow memory without bound.
_CACHE_LIMIT: Final = 4096


class MessageType(enum.IntEnum):
    """A message's type, bits 1-3 of its flag byte."""

    REQUEST = 0
    NOTIFY = 1
    RESPONSE = 2
    PUSH = 3


_RESPONSE_FLAG: Final = _BYTE[MessageType.RESPONSE << 1]
# flag + id for the ids of a connection's first 128 requests: no varint encoding at all
_RESPONSE_HEADS: Final = tuple(_RESPONSE_FLAG + _BYTE[n] for n in range(0x80))


def _too_large(n: int, max_body: int) -> LocalProtocolError:
    return LocalProtocolError(f"packet size exceed: the packet is too large, body of {n} bytes > maximum {max_body}")


@attrs.frozen
class Request:
    """Client -> server, expects a Response with the same ``id``."""

    id: int
    route: str
    body: bytes = b""
    type: ClassVar[Literal[MessageType.REQUEST]] = MessageType.REQUEST


@attrs.frozen
class Notify:
    """Client -> server, no Response."""

    route: str
    body: bytes = b""
    type: ClassVar[Literal[MessageType.NOTIFY]] = MessageType.NOTIFY


@attrs.frozen
class Response:
    """Server -> client answer to the Request with the same ``id``."""

    id: int
    body: bytes = b""
    type: ClassVar[Literal[MessageType.RESPONSE]] = MessageType.RESPONSE


@attrs.frozen
class Push:
    """Server -> client, unsolicited, dispatched by ``route`` on the client."""

    route: str
    body: bytes = b""
    type: ClassVar[Literal[MessageType.PUSH]] = MessageType.PUSH


Message: TypeAlias = Request | Notify | Response | Push

# A Request built without attrs' frozen __init__ (which sets each field through
# object.__setattr__): the slots written directly, a third of the cost, for the decoder's hot path.
_new_request: Final = object.__new__
_set_request_id: Final = Request.__dict__["id"].__set__
_set_request_route: Final = Request.__dict__["route"].__set__
_set_request_body: Final = Request.__dict__["body"].__set__


class RouteDict(Mapping[str, int]):
    """An immutable two-way route dictionary (route compression, nano.md §2.4).

    Maps route -> code; :meth:`route` maps back. Codes are 1..65535: pomelo's JS clients never
    compress a route whose code is 0 (they test ``dict[route]`` for truth). Routes are stripped
    of surrounding white space as nano does. Raises LocalProtocolError when built with an empty
    or over-long route, a code out of range, or a duplicated route or code (nano only logs
    duplicates and lets the last one win).
    """

    __slots__ = ("_codes", "_routes")

    def __init__(self, routes: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        pairs = routes.items() if isinstance(routes, Mapping) else routes
        to_code: dict[str, int] = {}
        to_route: dict[int, str] = {}
        for raw_route, code in pairs:
            route = raw_route.strip()
            if not route or len(route.encode()) > MAX_ROUTE_LENGTH:
                raise LocalProtocolError(f"dictionary route {raw_route!r} must be 1..255 UTF-8 bytes")
            if type(code) is not int or not 1 <= code <= _MAX_CODE:
                raise LocalProtocolError(f"dictionary code for {route!r} must be in 1..65535, not {code!r}")
            if route in to_code or code in to_route:
                raise LocalProtocolError(f"duplicated route(route: {route}, code: {code})")
            to_code[route] = code
            to_route[code] = route
        self._routes: Final = to_code
        self._codes: Final = to_route

    def __getitem__(self, route: str) -> int:
        return self._routes[route]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        return f"RouteDict({self._routes!r})"

    def code(self, route: str) -> int | None:
        """The code of ``route``, or None when it is not in the dictionary."""
        return self._routes.get(route)

    def route(self, code: int) -> str | None:
        """The route of ``code``, or None when it is not in the dictionary."""
        return self._codes.get(code)

    @property
    def codes(self) -> Mapping[int, str]:
        """code -> route, read-only."""
        return MappingProxyType(self._codes)


EMPTY_ROUTES: Final = RouteDict()


def encode_varint(n: int) -> bytes:
    """Base-128, least significant group first. Raises LocalProtocolError outside 0..2^64-1."""
    if n < 0x80:
        if n < 0:
            raise LocalProtocolError(f"message id must be in 0..2^64-1, not {n}")
        return _BYTE[n]
    if n > MAX_MESSAGE_ID:
        raise LocalProtocolError(f"message id must be in 0..2^64-1, not {n}")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class MessageCodec:
    """Encodes and decodes messages with one route dictionary. Owned by a server or a client
    (never shared through module state); immutable apart from its encoding caches.

    The ``*_packet`` methods return a whole Data packet (header included), so a broadcast is
    encoded once and the same bytes are queued for every receiver.
    """

    __slots__ = ("_prefixes", "_push_prefixes", "max_body", "routes")

    def __init__(self, routes: RouteDict = EMPTY_ROUTES, *, max_body: int = MAX_BODY_SIZE) -> None:
        self.routes: Final = routes
        self.max_body: Final = check_max_body(max_body)
        # (type, route) -> flag byte + route field
        self._prefixes: dict[tuple[int, str], bytes] = {}
        # route -> a Push's flag byte + route field: the hot path, looked up without a tuple
        self._push_prefixes: dict[str, bytes] = {}

    def _prefix(self, mtype: int, route: str) -> bytes:
        key = (mtype, route)
        prefix = self._prefixes.get(key)
        if prefix is not None:
            return prefix
        code = self.routes.code(route)
        if code is not None:
            prefix = bytes((mtype << 1 | 1, code >> 8, code & 0xFF))
        else:
            raw = route.encode()
            if len(raw) > MAX_ROUTE_LENGTH:
                raise LocalProtocolError(f"route is {len(raw)} UTF-8 bytes, the maximum is {MAX_ROUTE_LENGTH}")
            prefix = bytes((mtype << 1, len(raw))) + raw
        if len(self._prefixes) < _CACHE_LIMIT:
            self._prefixes[key] = prefix
        return prefix

    def encode(self, message: Message) -> bytes:
        """The message frame (a Data packet's body). Raises LocalProtocolError."""
        if isinstance(message, Push | Notify):
            return self._prefix(message.type, message.route) + message.body
        if isinstance(message, Response):
            return _RESPONSE_FLAG + encode_varint(message.id) + message.body
        if isinstance(message, Request):
            prefix = self._prefix(MessageType.REQUEST, message.route)
            return prefix[:1] + encode_varint(message.id) + prefix[1:] + message.body
        raise LocalProtocolError(f"wrong message type: {message!r}")

    def _packet(self, frame_head: bytes, body: bytes) -> bytes:
        n = len(frame_head) + len(body)
        if n > self.max_body:
            raise _too_large(n, self.max_body)
        return _PACK_HEADER(_DATA | n) + frame_head + body

    def packet(self, message: Message) -> bytes:
        """``message`` as a whole Data packet. Raises LocalProtocolError (``packet size
        exceed: the packet is too large`` for a frame over ``max_body``)."""
        frame = self.encode(message)
        return self._packet(b"", frame)

    def push_packet(self, route: str, body: bytes) -> bytes:
        """A Push as a whole Data packet: the hot path of every push and broadcast (inlined:
        one call). Raises LocalProtocolError, as :meth:`packet`."""
        prefix = self._push_prefixes.get(route)
        if prefix is None:
            prefix = self._prefix(MessageType.PUSH, route)
            if len(self._push_prefixes) < _CACHE_LIMIT:
                self._push_prefixes[route] = prefix
        n = len(prefix) + len(body)
        if n > self.max_body:
            raise _too_large(n, self.max_body)
        return _PACK_HEADER(_DATA | n) + prefix + body

    def response_packet(self, id: int, body: bytes) -> bytes:
        """A Response as a whole Data packet (inlined: one call). Raises LocalProtocolError,
        as :meth:`packet`."""
        head = _RESPONSE_HEADS[id] if 0 <= id < 0x80 else _RESPONSE_FLAG + encode_varint(id)
        n = len(head) + len(body)
        if n > self.max_body:
            raise _too_large(n, self.max_body)
        return _PACK_HEADER(_DATA | n) + head + body

    def request_packet(self, id: int, route: str, body: bytes) -> bytes:
        """A Request as a whole Data packet. Raises LocalProtocolError, as :meth:`packet`."""
        prefix = self._prefix(MessageType.REQUEST, route)
        return self._packet(prefix[:1] + encode_varint(id) + prefix[1:], body)

    def notify_packet(self, route: str, body: bytes) -> bytes:
        """A Notify as a whole Data packet. Raises LocalProtocolError, as :meth:`packet`."""
        return self._packet(self._prefix(MessageType.NOTIFY, route), body)

    def decode(self, data: bytes) -> Message:
        """Parse one message frame. Raises RemoteProtocolError with nano's error text.

        Unlike nano: an unterminated or over-64-bit id, a truncated route code and a route that
        is neither UTF-8 nor CESU-8 are errors (``wrong message``), and a Response may have an
        empty body. A CESU-8 route (pomelo's JS client) decodes as :func:`decode_route` says.
        """
        n = len(data)
        if n < 2:
            raise RemoteProtocolError(f"invalid message: {n} bytes is shorter than a message header")
        flag = data[0]
        if flag == 0 and data[1] < 0x80 and n > 2:
            # the hot path: a Request with a one-byte id and an uncompressed route
            end = 3 + data[2]
            if end <= n:
                try:
                    request_route = data[3:end].decode()
                except UnicodeDecodeError:
                    request_route = decode_route(data[3:end])
                request = _new_request(Request)
                _set_request_id(request, data[1])
                _set_request_route(request, request_route)
                _set_request_body(request, data[end:])
                return request
        mtype = flag >> 1 & 0x07
        if mtype > MessageType.PUSH:
            raise RemoteProtocolError(f"wrong message type: {mtype}")
        offset = 1
        id = 0
        if mtype == MessageType.REQUEST or mtype == MessageType.RESPONSE:
            shift = 0
            while True:
                if offset >= n or offset > _MAX_VARINT_BYTES:
                    raise RemoteProtocolError("wrong message: unterminated message id")
                b = data[offset]
                offset += 1
                id |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            if id > MAX_MESSAGE_ID:
                raise RemoteProtocolError("wrong message: message id exceeds 64 bits")
            if mtype == MessageType.RESPONSE:
                return Response(id, data[offset:])
        if offset >= n:
            raise RemoteProtocolError("wrong message: the route is missing")
        if flag & 1:
            if offset + 2 > n:
                raise RemoteProtocolError("wrong message: truncated route code")
            code = data[offset] << 8 | data[offset + 1]
            route = self.routes.route(code)
            if route is None:
                raise RemoteProtocolError(f"route info not found in dictionary: code {code}")
            offset += 2
        else:
            end = offset + 1 + data[offset]
            if end > n:
                raise RemoteProtocolError("wrong message: the route length overruns the message")
            try:
                route = data[offset + 1 : end].decode()
            except UnicodeDecodeError:
                route = decode_route(data[offset + 1 : end])
            offset = end
        body = data[offset:]
        if mtype == MessageType.REQUEST:
            return Request(id, route, body)
        if mtype == MessageType.NOTIFY:
            return Notify(route, body)
        return Push(route, body)


def decode_route(raw: bytes) -> str:
    """An uncompressed route's text: UTF-8, or CESU-8 as pomelo's JS client sends it (its
    ``protocol.js`` ``strencode`` encodes each UTF-16 code unit on its own, so U+1F600 arrives
    as two 3-byte surrogate sequences), decoded to the same str as its UTF-8 spelling; a lone
    surrogate becomes U+FFFD (as in bodies: see ``trionano._serializer``), so such a route
    names no handler and is answered 404. Raises RemoteProtocolError (``wrong message: the
    route is not UTF-8``) for any other invalid bytes."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise RemoteProtocolError("wrong message: the route is not UTF-8") from None
    # joins each high + low surrogate pair into its character; a lone one becomes U+FFFD
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def encode_message(message: Message, routes: RouteDict = EMPTY_ROUTES) -> bytes:
    """One-off :meth:`MessageCodec.encode`; hold a codec where speed matters."""
    return MessageCodec(routes).encode(message)


def decode_message(data: bytes, routes: RouteDict = EMPTY_ROUTES) -> Message:
    """One-off :meth:`MessageCodec.decode`."""
    return MessageCodec(routes).decode(data)


def build_message(type: int, *, id: int = 0, route: str = "", body: bytes = b"") -> Message:
    """A message from its parts, as nano's ``message.New`` takes them.

    Raises LocalProtocolError (``wrong message type``) for a type outside 0..3.
    """
    if type == MessageType.REQUEST:
        return Request(id, route, body)
    if type == MessageType.NOTIFY:
        return Notify(route, body)
    if type == MessageType.RESPONSE:
        return Response(id, body)
    if type == MessageType.PUSH:
        return Push(route, body)
    raise LocalProtocolError(f"wrong message type: {type}")
