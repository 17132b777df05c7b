"""trionano's own exceptions. Where the meaning is Trio's, Trio's exceptions are used instead:
pushing to a session whose connection is gone raises ``trio.BrokenResourceError``."""

from __future__ import annotations

from typing import Final

__all__ = [
    "ComponentError",
    "GroupError",
    "HandlerError",
    "HandshakeRejected",
    "Kicked",
    "MessageTooLarge",
    "ResponseError",
    "SerializeError",
    "SessionError",
    "TrionanoError",
]


class TrionanoError(Exception):
    """Base of trionano's exceptions."""


class ComponentError(TrionanoError):
    """A component cannot be registered (raised at registration, never at run time)."""


class SessionError(TrionanoError):
    """A session was asked for something it cannot do (``illegal uid``, a response with no
    request to answer: ``current session working on notify mode``)."""


class GroupError(TrionanoError):
    """A group operation failed; ``str()`` is nano's text (``group closed``, ``close closed
    group``, ``member not found in the group``, ``session has existed in the current group``)."""


class SerializeError(TrionanoError):
    """A value could not be serialized, or a body deserialized to the handler's type."""


class MessageTooLarge(TrionanoError):
    """A serialized message does not fit in one packet of the server's ``max_packet_size``
    (its Request is answered 413). ``size`` is the body's length, ``limit`` the packet's."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a body of {size} bytes does not fit in a packet of at most {limit} bytes with its header")
        self.size = size
        self.limit = limit


#: The error codes a Response may carry (a JSON number every client reads exactly: int32).
ERROR_CODES: Final = range(-(1 << 31), 1 << 31)


class HandlerError(TrionanoError):
    """Raise from a handler to answer its Request with ``{"code": code, "message": message}``
    (instead of 500). ``code`` is an int32 (else the answer's code is 500); ``message`` is
    sent as ``str(message)``: ``HandlerError(404)`` answers code 500 with message "404"."""

    def __init__(self, message: object, *, code: int = 500) -> None:
        super().__init__(message)
        self.code: int = code if type(code) is int and code in ERROR_CODES else 500
        self.message: str = message if isinstance(message, str) else str(message)


class ResponseError(TrionanoError):
    """An error Response ``{"code": code, "message": message}`` to a client's request
    (raised by ``trionano.client`` with ``check=True``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"error {code}: {message}")
        self.code = code
        self.message = message


class HandshakeRejected(TrionanoError):
    """Raise from a handshake validator to refuse a client: it gets a handshake response with
    ``code`` (pomelo's 500 "handshake fail" by default, or 501 "client version not fullfill")
    and the connection is closed."""

    def __init__(self, reason: str = "handshake rejected", *, code: int = 500) -> None:
        super().__init__(reason)
        self.code = code


class Kicked(TrionanoError):
    """The server kicked this client (raised by the client); ``reason`` is the server's."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"kicked by the server: {reason}" if reason else "kicked by the server")
        self.reason = reason
