"""A TCP stream that waits only when the kernel says so.

trio's SocketStream checkpoints (yields to the scheduler) on every call, even when the kernel
could read or write at once; at tens of thousands of small messages a second those yields are
most of a connection's cost. FdStream reads and writes the socket's file descriptor directly
and waits (``trio.lowlevel.wait_readable``/``wait_writable``) only when the kernel has said it
must: a read or write failed with EAGAIN, or the last read was short (the receive buffer was
empty then, so the next read would most likely fail) or a write partial (the send buffer is
full).

Resource handling: FdStream owns the trio socket it wraps; :meth:`aclose` closes it, and from
then on no call touches the file descriptor number again (the kernel hands that number to the
next socket it opens, another client's). Close the stream, never the socket. One task may
receive while another sends (as an agent's reader and writer do); two at once on one side
raise ``trio.BusyResourceError``, as trio's streams do.

Checkpoints: every call is a cancel point: a cancelled scope raises ``trio.Cancelled`` before
the socket is touched, so a cancelled read never loses bytes and a cancelled send never half
happens. A call that must wait is a full checkpoint, as in trio (a read after a short read
waits at once: no read that fails with EAGAIN, no other checkpoint first). A call that need not
wait is a schedule point only every ``fair_every`` calls on its side (16 by default, counted
inline), so a busy connection still lets other tasks run; with ``fair_every=1`` every call is
a full checkpoint, trio's whole Stream contract. :meth:`FdStream.send_some_nowait` and
:meth:`FdStream.send_parts_nowait` are the exceptions: plain non-blocking writes, for a writer
that tries to write before it waits.

Vectored writes: :meth:`FdStream.send_parts_nowait` and :meth:`FdStream.send_all_parts` hand
the kernel a list of buffers in one ``writev`` (at most ``IOV_MAX`` buffers a call), so a
writer need not join packets shared by many connections (a broadcast's) into a private copy
of its own; a partial write goes on from a ``memoryview`` of the part it stopped in, and
nothing is copied (:func:`parts_after`).

Error handling: ``trio.ClosedResourceError`` once this side closed the stream (also for a task
blocked in it at the time: the close wakes it), or after :meth:`send_eof` for sending;
``trio.BrokenResourceError`` when the peer reset the connection or the socket failed
otherwise. End of file is ``b""``.
"""

from __future__ import annotations

import errno
import operator
import os
import socket as stdlib_socket
from collections.abc import Iterator, Sequence
from typing import Final

import trio

__all__ = ["IOV_MAX", "Buffer", "FdStream", "coalesce", "parts_after"]

Buffer = bytes | bytearray | memoryview

#: The most buffers one ``writev`` takes (POSIX's ``IOV_MAX``, 1024 on Linux); a longer list
#: is written in turns.
IOV_MAX: Final = 1024

_FAIR_EVERY: Final = 16
_READ_SIZE: Final = 65536
_CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})

_checkpoint: Final = trio.lowlevel.checkpoint
_checkpoint_if_cancelled: Final = trio.lowlevel.checkpoint_if_cancelled
_wait_readable: Final = trio.lowlevel.wait_readable
_wait_writable: Final = trio.lowlevel.wait_writable


class FdStream(trio.abc.HalfCloseableStream):
    """A connected TCP socket as a trio Stream (see the module docstring).

    Raises ValueError for a socket that is not a stream socket, or ``fair_every`` below 1.
    """

    __slots__ = (
        "_fair_every",
        "_read_budget",
        "_read_drained",
        "_receiving",
        "_rfd",
        "_sending",
        "_wfd",
        "_write_budget",
        "socket",
    )

    def __init__(self, socket: trio.socket.SocketType, *, fair_every: int = _FAIR_EVERY) -> None:
        if socket.type != stdlib_socket.SOCK_STREAM:
            raise ValueError("FdStream needs a stream socket")
        if fair_every < 1:
            raise ValueError("fair_every must be at least 1")
        self.socket: Final = socket
        # -1 once closed (both) or after send_eof (_wfd): checked before every os.read/os.write,
        # so a number the kernel has given to another socket is never used
        self._rfd = self._wfd = socket.fileno()
        self._fair_every = fair_every
        self._read_budget = self._write_budget = fair_every
        self._read_drained = False  # the last read was short: wait before the next one
        self._receiving = self._sending = False  # trio's ConflictDetector, inlined

    @classmethod
    def from_stream(cls, stream: trio.SocketStream) -> FdStream:
        """Take over a SocketStream's socket (with the options it set, e.g. TCP_NODELAY)."""
        return cls(stream.socket)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Bytes as soon as the kernel has any, at most ``max_bytes`` (64 KiB by default);
        b"" at end of file. Raises trio.BusyResourceError, trio.ClosedResourceError,
        trio.BrokenResourceError, ValueError (``max_bytes`` < 1)."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        size = _READ_SIZE if max_bytes is None else operator.index(max_bytes)
        if size < 1:
            raise ValueError("max_bytes must be at least 1")
        self._receiving = True
        try:
            if self._read_drained:
                pass  # it waits for the kernel below: a full checkpoint already
            elif self._read_budget > 1:
                self._read_budget -= 1
                await _checkpoint_if_cancelled()
            else:
                self._read_budget = self._fair_every
                await _checkpoint()
            while True:
                fd = self._rfd
                if fd < 0:
                    raise trio.ClosedResourceError("this stream was closed")
                if self._read_drained:
                    await _wait_readable(fd)  # trio's socket close wakes it with ClosedResourceError
                    self._read_drained = False
                    self._read_budget = self._fair_every
                    continue
                try:
                    data = os.read(fd, size)
                except BlockingIOError:
                    self._read_drained = True
                    continue
                except OSError as exc:
                    raise _translate(exc) from exc
                self._read_drained = len(data) < size
                return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Hand all of ``data`` to the kernel. Raises trio.BusyResourceError,
        trio.ClosedResourceError (also after send_eof), trio.BrokenResourceError (the peer is
        gone)."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await self._fair_send()
            view = data
            full = False
            while True:
                fd = self._wfd
                if fd < 0:
                    raise trio.ClosedResourceError("this stream was closed for sending")
                if full:
                    await _wait_writable(fd)
                    full = False
                    self._write_budget = self._fair_every
                    continue
                try:
                    sent = os.write(fd, view)
                except BlockingIOError:
                    full = True
                    continue
                except OSError as exc:
                    raise _translate(exc) from exc
                if sent == len(view):
                    return
                view = memoryview(view)[sent:]
                full = True
        finally:
            self._sending = False

    async def _fair_send(self) -> None:
        """A send's checkpoint: a cancellation point every time, a yield to other tasks every
        ``fair_every`` sends (a writer that never waits must not starve the others)."""
        self._write_budget -= 1
        if self._write_budget > 0:
            await _checkpoint_if_cancelled()
        else:
            self._write_budget = self._fair_every
            await _checkpoint()

    def send_parts_nowait(self, parts: Sequence[Buffer]) -> int:
        """Hand the kernel what it takes now of the bytes of ``parts`` one after another, as
        one ``writev`` (one per ``IOV_MAX`` buffers), without waiting and without joining
        them: the number of bytes written (fewer than the parts hold when the send buffer
        filled; 0 only for parts that hold none). Not a checkpoint. Raises trio.WouldBlock
        (the send buffer is full: nothing written), trio.BusyResourceError (a send is under
        way), trio.ClosedResourceError (also after send_eof), trio.BrokenResourceError."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        fd = self._wfd
        if fd < 0:
            raise trio.ClosedResourceError("this stream was closed for sending")
        if len(parts) <= IOV_MAX:  # the common case: one call
            try:
                return os.writev(fd, parts)
            except BlockingIOError:
                raise trio.WouldBlock from None
            except OSError as exc:
                raise _translate(exc) from exc
        total = 0
        for first in range(0, len(parts), IOV_MAX):
            batch = parts[first : first + IOV_MAX]
            try:
                sent = os.writev(fd, batch)
            except BlockingIOError:
                if total:
                    return total
                raise trio.WouldBlock from None
            except OSError as exc:
                raise _translate(exc) from exc
            total += sent
            if sent < sum(map(len, batch)):  # the send buffer is full
                break
        return total

    async def send_all_parts(self, parts: Sequence[Buffer], start: int = 0) -> None:
        """Hand all the bytes of ``parts`` to the kernel, from byte ``start`` of them on (what
        :meth:`send_parts_nowait` returned), in ``writev`` calls (see it), waiting while the
        send buffer is full; nothing is joined or copied, and ``parts`` are only read (the
        caller keeps them alive until it returns). Raises what :meth:`send_all` raises."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await self._fair_send()
            pending = parts_after(parts, start)
            full = False
            while pending:
                fd = self._wfd
                if fd < 0:
                    raise trio.ClosedResourceError("this stream was closed for sending")
                if full:
                    await _wait_writable(fd)
                    full = False
                    self._write_budget = self._fair_every
                    continue
                batch = pending if len(pending) <= IOV_MAX else pending[:IOV_MAX]
                try:
                    sent = os.writev(fd, batch)
                except BlockingIOError:
                    full = True
                    continue
                except OSError as exc:
                    raise _translate(exc) from exc
                full = sent < sum(map(len, batch))
                pending = parts_after(pending, sent)
        finally:
            self._sending = False

    def send_some_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Hand the kernel what it takes of ``data`` now, without waiting: the number of bytes
        written (at least 1; fewer than ``len(data)`` when the send buffer filled). Not a
        checkpoint: a writer that loops on it checkpoints on its own. Raises trio.WouldBlock
        (the send buffer is full: nothing written), trio.BusyResourceError (a send_all is
        under way), trio.ClosedResourceError (also after send_eof),
        trio.BrokenResourceError."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        fd = self._wfd
        if fd < 0:
            raise trio.ClosedResourceError("this stream was closed for sending")
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            raise trio.WouldBlock from None
        except OSError as exc:
            raise _translate(exc) from exc
        return sent

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            fd = self._wfd
            if fd < 0:
                raise trio.ClosedResourceError("this stream was closed for sending")
            await _wait_writable(fd)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Shut the socket down for writing (the peer reads b""); idempotent. Raises
        trio.BusyResourceError, trio.ClosedResourceError (closed), trio.BrokenResourceError."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await _checkpoint()
            if self._rfd < 0:
                raise trio.ClosedResourceError("this stream was closed")
            if self._wfd < 0:
                return
            self._wfd = -1
            try:
                self.socket.shutdown(stdlib_socket.SHUT_WR)
            except OSError as exc:
                raise _translate(exc) from exc
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Close the socket; idempotent, and closes even when cancelled."""
        self._rfd = self._wfd = -1
        self.socket.close()  # trio's close wakes any task waiting on it with ClosedResourceError
        await _checkpoint()


def parts_after(parts: Sequence[Buffer], start: int) -> list[Buffer]:
    """The buffers of ``parts`` from byte ``start`` of their bytes on: the part ``start``
    falls in as a ``memoryview`` of its tail, the ones after it as they are (nothing copied),
    empty parts before it left out; [] once ``start`` is past them all. Raises ValueError for
    a negative ``start``."""
    if start < 0:
        raise ValueError("start must not be negative")
    for index, part in enumerate(parts):
        size = len(part)
        if start < size:
            if start:
                return [memoryview(part)[start:], *parts[index + 1 :]]
            return list(parts[index:])
        start -= size
    return []


def coalesce(parts: Sequence[Buffer], limit: int) -> Iterator[Buffer]:
    """The bytes of ``parts`` as buffers for a stream that cannot write vectored (TLS): runs of
    parts of at most ``limit`` bytes in all joined into one, a part alone as it is (no copy),
    so no buffer made here holds more than ``limit`` bytes."""
    run: list[Buffer] = []
    size = 0
    for part in parts:
        length = len(part)
        if run and size + length > limit:
            yield run[0] if len(run) == 1 else b"".join(run)
            run = []
            size = 0
        run.append(part)
        size += length
    if run:
        yield run[0] if len(run) == 1 else b"".join(run)


def _translate(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this stream was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")
