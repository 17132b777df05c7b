"""The only exceptions that leave :mod:`trionano.wire`.

Any other exception raised out of the wire layer is a bug (h11's convention).
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Something broke the pomelo protocol. Never raised itself: see the two sides below.

    ``str(error)`` starts with nano's own error text where nano has one (``wrong packet type``,
    ``packet size exceed``, ``wrong message type``, ``invalid message``, ``wrong message``,
    ``route info not found in dictionary``), so logs read the same as a Go node's.
    """

    def __init__(self, msg: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract: raise LocalProtocolError or RemoteProtocolError")
        super().__init__(msg)


class LocalProtocolError(ProtocolError):
    """The caller asked for something illegal: encoding a frame the peer would reject, or an
    event the connection's state does not allow. Nothing was emitted."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something illegal. The connection cannot go on: close it."""
