"""The only exceptions that leave :mod:`trionano.wire`.

Any other exception raised out of the wire layer is a bug (h11's convention).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["EventHint", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class EventHint(Protocol):
    """What a :class:`RemoteProtocolError` suggests sending: a :class:`~trionano.wire.Kick`
    (typed structurally here, so this module stays below the ones that raise it)."""

    @property
    def reason(self) -> str: ...

    def encode(self) -> bytes: ...


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
    """The peer sent something illegal. The connection cannot go on: close it.

    ``event_hint`` is what to send the peer before closing (wsproto's ``event_hint``, h11's
    ``error_status_hint``): a server-role :class:`~trionano.wire.Connection` sets it to a
    :class:`~trionano.wire.Kick` whose reason is ``"protocol error: <message>"``, and accepts
    exactly that Kick from :meth:`~trionano.wire.Connection.send` although it is now CLOSED.
    None when there is nothing to send (a client has no way to tell a server why).
    """

    def __init__(self, msg: str, *, event_hint: EventHint | None = None) -> None:
        super().__init__(msg)
        self.event_hint = event_hint
