"""A TCP stream that waits only when the kernel says so.

trio's SocketStream checkpoints (yields to the scheduler) on every call, even when the kernel
could read or write at once; at tens of thousands of small messages a second those yields are
most of a connection's cost. FdStream reads and writes the socket's file descriptor directly
and waits (``trio.lowlevel.wait_readable``/``wait_writable``) only on EAGAIN. Every 16
operations that did not wait it checkpoints anyway, so it stays fair to other tasks and
notices cancellation.

Owned by one reader task and one writer task at most (as an agent uses it); it owns the trio
socket it wraps and closes it.
"""

from __future__ import annotations

import errno
import os
from typing import Final

import trio

__all__ = ["FdStream"]

_FAIR_ROUNDS: Final = 16


class FdStream(trio.abc.Stream):
    """A connected TCP socket as a trio Stream (see the module docstring)."""

    __slots__ = ("_fd", "_rounds", "socket")

    def __init__(self, socket: trio.socket.SocketType) -> None:
        self.socket: Final = socket
        self._fd = socket.fileno()
        self._rounds = 0

    @classmethod
    def from_stream(cls, stream: trio.SocketStream) -> FdStream:
        return cls(stream.socket)

    async def _fair(self) -> None:
        self._rounds += 1
        if self._rounds >= _FAIR_ROUNDS:
            self._rounds = 0
            await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Bytes as soon as the kernel has any; b"" at end of file. Raises
        trio.BrokenResourceError (reset), trio.ClosedResourceError (closed here)."""
        size = max_bytes or 65536
        while True:
            try:
                data = os.read(self._fd, size)
            except BlockingIOError:
                self._rounds = 0
                await trio.lowlevel.wait_readable(self.socket)
                continue
            except OSError as exc:
                raise _translate(exc) from exc
            await self._fair()
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Hand all of ``data`` to the kernel. Raises trio.BrokenResourceError (the peer is
        gone), trio.ClosedResourceError (closed here)."""
        view = data
        while True:
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                self._rounds = 0
                await trio.lowlevel.wait_writable(self.socket)
                continue
            except OSError as exc:
                raise _translate(exc) from exc
            if sent == len(view):
                await self._fair()
                return
            view = memoryview(view)[sent:]

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.socket)

    async def aclose(self) -> None:
        self.socket.close()  # trio's close wakes any task waiting on it with ClosedResourceError
        await trio.lowlevel.checkpoint()


def _translate(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the connection was closed")
    return trio.BrokenResourceError(str(exc))
