"""trionano's own exceptions. Where the meaning is Trio's, Trio's exceptions are used instead:
pushing to a session whose connection is gone raises ``trio.BrokenResourceError``."""

from __future__ import annotations

__all__ = [
    "ComponentError",
    "GroupError",
    "HandlerError",
    "HandshakeRejected",
    "Kicked",
    "MessageTooLarge",
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
    """A serialized message is larger than the server's ``max_packet_size`` allows (its
    Request is answered 413)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes is larger than the maximum of {limit}")
        self.size = size
        self.limit = limit


class HandlerError(TrionanoError):
    """Raise from a handler to answer its Request with this code and message (instead of 500)."""

    def __init__(self, message: str, *, code: int = 500) -> None:
        super().__init__(message)
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
