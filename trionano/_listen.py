"""Listening: endpoints bind, accept, and hand each connection to a connection handler.

An :class:`Endpoint` knows nothing of the server: it is started with a
:data:`ConnectionHandler`, ``(stream, remote_address)``, and calls it in a task of the nursery
it is given for every connection it accepts. Accepting follows Trio's ``serve_listeners``
policy: when the process or the system is out of file descriptors, memory or buffers
(EMFILE, ENFILE, ENOMEM, ENOBUFS) it waits 100 ms and tries again, logging at most a few lines;
any other error of ``accept`` is raised.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import attrs
import trio

from ._fdstream import FdStream
from ._log import RateLimitedLog, flush_periodically

__all__ = [
    "ConnectionHandler",
    "Endpoint",
    "TCPEndpoint",
    "accept_forever",
    "open_listeners",
    "peer_host",
    "remote_address",
]

#: Called for every accepted connection with the stream and the peer's ``"host:port"``; it
#: owns the stream and must close it.
ConnectionHandler = Callable[[trio.abc.Stream, str], Awaitable[None]]

#: Trio's own list (``trio._highlevel_serve_listeners``): errors that mean "out of capacity".
ACCEPT_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_RETRY_SECONDS: Final = 0.1


class Endpoint(Protocol):
    """A transport a server listens on (:class:`TCPEndpoint`,
    :class:`~trionano.WebSocketEndpoint`)."""

    async def start(self, handle: ConnectionHandler, nursery: trio.Nursery) -> int:
        """Bind, start accepting in ``nursery`` (each connection handed to ``handle`` in a task
        of ``nursery``), and return the bound port."""
        ...

    async def aclose(self) -> None:
        """Stop accepting. Connections already made belong to their handlers."""
        ...


def _socket_of(stream: trio.abc.Stream) -> Any:
    layer: Any = stream
    while layer is not None:  # an SSLStream wraps the SocketStream that has the socket
        sock = getattr(layer, "socket", None)
        if sock is not None:
            return sock
        layer = getattr(layer, "transport_stream", None)
    return None


def remote_address(stream: trio.abc.Stream) -> str:
    """The peer of an accepted stream as ``"host:port"`` (``"unknown"`` if it is gone)."""
    try:
        host, port = _socket_of(stream).getpeername()[:2]
    except (AttributeError, OSError, ValueError, TypeError):
        return "unknown"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_host(address: str) -> str | None:
    """The peer a ``"host:port"`` (``"[v6]:port"``) address of :func:`remote_address` belongs
    to, for the per-peer bounds: the IPv4 address; for IPv6 its /64 network (one subscriber's
    share, which a client may hop across at will); an IPv4-mapped IPv6 address as the IPv4
    address. None for anything else (``"unknown"``, a custom transport's text)."""
    host = address.rpartition(":")[0]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


async def open_listeners(
    host: str | None, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[list[trio.abc.Listener[Any]], int]:
    """TCP listeners on ``host:port`` (TLS-wrapped with ``ssl_context``) and the bound port.
    Raises OSError naming the address (e.g. the port is taken: EADDRINUSE)."""
    try:
        sockets = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(exc.errno, f"cannot listen on {host or '*'}:{port}: {reason}") from exc
    bound: int = sockets[0].socket.getsockname()[1]
    if ssl_context is None:
        return list(sockets), bound
    return [trio.SSLListener(sock, ssl_context) for sock in sockets], bound


async def accept_forever(
    listener: trio.abc.Listener[Any],
    handle: ConnectionHandler,
    nursery: trio.Nursery,
    *,
    send_buffer: int | None = None,
    log: RateLimitedLog | None = None,
) -> None:
    """Hand every accepted connection to ``handle`` (a task in ``nursery``) until the listener
    is closed. Plain TCP streams become :class:`~trionano._fdstream.FdStream`. Raises what
    ``accept`` raises beyond the capacity errors (see the module docstring), which go to
    ``log`` (its endpoint's: see :func:`flush_while_open`)."""
    if log is None:
        log = RateLimitedLog(logging.getLogger("trionano.server"))
    while True:
        try:
            stream = await listener.accept()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        except OSError as exc:
            if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                raise
            log.warning(
                "accept capacity",
                "accept failed: %s (%s); retrying in %.1f s",
                errno.errorcode.get(exc.errno or 0, "?"),
                exc.strerror,
                ACCEPT_RETRY_SECONDS,
            )
            await trio.sleep(ACCEPT_RETRY_SECONDS)
            continue
        address = remote_address(stream)
        if send_buffer is not None:
            sock = _socket_of(stream)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            except OSError:
                pass  # the peer is already gone: its handler will see it
        if type(stream) is trio.SocketStream:
            stream = FdStream.from_stream(stream)
        nursery.start_soon(handle, stream, address)


async def flush_while_open(log: RateLimitedLog, scope: trio.CancelScope) -> None:
    """An endpoint's task beside its accept loops: reports what ``log`` suppressed within
    about a second of each window's end (:func:`~trionano._log.flush_periodically`) until
    ``scope`` is cancelled, which the endpoint's ``aclose`` does before it flushes ``log``."""
    with scope:
        await flush_periodically((log,))


@attrs.define(eq=False)
class TCPEndpoint:
    """Plain TCP, or TLS with ``ssl_context`` (trio.SSLStream). ``port`` 0 picks a free one.
    ``send_buffer`` sets SO_SNDBUF on each connection: a small one bounds the kernel memory a
    stalled client can pin, so the slow-consumer policy sees it sooner."""

    host: str | None = None
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    send_buffer: int | None = None
    _listeners: list[trio.abc.Listener[Any]] = attrs.field(factory=list, init=False)
    # what the accept loops log (capacity errors), rate-limited: its summaries are flushed
    # every second while the endpoint is open, and at aclose
    _log: RateLimitedLog = attrs.field(init=False, factory=lambda: RateLimitedLog(logging.getLogger("trionano.server")))
    _flushing: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)

    async def start(self, handle: ConnectionHandler, nursery: trio.Nursery) -> int:
        """Bind (every address of ``host``; all interfaces for None) and accept in
        ``nursery``; returns the bound port. Raises OSError when it cannot bind."""
        self._listeners, port = await open_listeners(self.host, self.port, self.ssl_context)
        for listener in self._listeners:
            accept = functools.partial(accept_forever, send_buffer=self.send_buffer, log=self._log)
            nursery.start_soon(accept, listener, handle, nursery)
        self._flushing = trio.CancelScope()
        nursery.start_soon(flush_while_open, self._log, self._flushing)
        return port

    async def aclose(self) -> None:
        """Stop accepting; connections already accepted go on. What the accept loops' log
        suppressed is reported now."""
        self._flushing.cancel()
        for listener in self._listeners:
            await listener.aclose()
        self._log.flush()
