"""FdStream: trio's generic stream checks, and what a server needs beyond them: a closed stream
never touches its old file descriptor number again, a close wakes a blocked task, two tasks on
one side are refused, and the peer's reset and end of file come out as trio's."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trionano._fdstream import FdStream


def socket_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    a, b = socket.socketpair()
    return trio.socket.from_stdlib_socket(a), trio.socket.from_stdlib_socket(b)


async def fd_stream_pair(fair_every: int = 16) -> tuple[FdStream, FdStream]:
    a, b = socket_pair()
    return FdStream(a, fair_every=fair_every), FdStream(b, fair_every=fair_every)


def fill(stream: FdStream) -> None:
    """Fill the kernel's buffers from ``stream`` to its peer: sending blocks until it reads."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    while True:
        try:
            os.write(stream.socket.fileno(), b"x" * 65536)
        except BlockingIOError:
            return


async def clogged_pair(fair_every: int = 16) -> tuple[FdStream, FdStream]:
    """A pair clogged both ways."""
    left, right = await fd_stream_pair(fair_every)
    fill(left)
    fill(right)
    return left, right


async def trio_contract_pair() -> tuple[FdStream, FdStream]:
    return await fd_stream_pair(fair_every=1)


async def trio_contract_clogged_pair() -> tuple[FdStream, FdStream]:
    return await clogged_pair(fair_every=1)


async def test_trio_stream_contract() -> None:
    # With fair_every=1 every call is a checkpoint, as the generic checks demand; the default
    # skips the schedule point when the kernel did not make it wait, and is tested below.
    await trio.testing.check_half_closeable_stream(trio_contract_pair, trio_contract_clogged_pair)


async def test_busy_connection_still_yields_and_notices_cancellation() -> None:
    left, right = await fd_stream_pair()
    async with left, right:
        others = 0

        async def other() -> None:
            nonlocal others
            while True:
                others += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(160):  # the kernel never makes these wait
                await left.send_all(b"x")
                assert await right.receive_some(1) == b"x"
            assert others >= 10  # 160 calls on each side, a schedule point every 16
            nursery.cancel_scope.cancel()

        await left.send_all(b"kept")
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await right.receive_some(10)  # data waiting, but cancelled: nothing taken
            with pytest.raises(trio.Cancelled):
                await left.send_all(b"lost")
        assert await right.receive_some(10) == b"kept"


async def test_receive_and_send_after_close_raise_closed() -> None:
    left, right = await fd_stream_pair()
    await right.send_all(b"unread")
    await left.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await left.receive_some(10)
    with pytest.raises(trio.ClosedResourceError):
        await left.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await left.wait_send_all_might_not_block()
    with pytest.raises(trio.ClosedResourceError):
        await left.send_eof()
    await left.aclose()  # idempotent
    await right.aclose()


def reuse_descriptor(fd: int) -> tuple[list[socket.socket], socket.socket, socket.socket]:
    """Open socket pairs until one end gets descriptor number ``fd`` (the kernel hands out the
    lowest free one): (every socket opened, that end, its peer), both ends non-blocking."""
    opened: list[socket.socket] = []
    for _ in range(32):
        a, b = socket.socketpair()
        opened += (a, b)
        for end, peer in ((a, b), (b, a)):
            if end.fileno() == fd:
                a.setblocking(False)
                b.setblocking(False)
                return opened, end, peer
    for sock in opened:
        sock.close()
    pytest.skip(f"the kernel did not reuse descriptor {fd}")


async def test_closed_stream_never_reads_or_writes_a_reused_descriptor() -> None:
    victim, victim_peer = await fd_stream_pair()
    old_fd = victim.socket.fileno()
    await victim.aclose()
    opened, newcomer, newcomer_peer = reuse_descriptor(old_fd)
    try:
        newcomer_peer.send(b"someone else's bytes")
        with pytest.raises(trio.ClosedResourceError):
            await victim.receive_some(100)
        with pytest.raises(trio.ClosedResourceError):
            await victim.send_all(b"into someone else's socket")
        # the newcomer's bytes are all still there, and nothing was written onto its socket
        assert newcomer.recv(100) == b"someone else's bytes"
        with pytest.raises(BlockingIOError):
            newcomer_peer.recv(100)
    finally:
        await victim_peer.aclose()
        for sock in opened:
            sock.close()


async def test_close_wakes_blocked_reader_and_writer() -> None:
    left, right = await fd_stream_pair()
    fill(left)  # nothing to read, no room to write
    async with right:
        results: dict[str, type[BaseException]] = {}

        async def blocked(name: str, call: Callable[[], Awaitable[object]]) -> None:
            try:
                await call()
            except trio.ClosedResourceError as exc:
                results[name] = type(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked, "reader", lambda: left.receive_some(10))
            nursery.start_soon(blocked, "writer", lambda: left.send_all(b"y"))
            await trio.testing.wait_all_tasks_blocked()
            assert results == {}
            await left.aclose()
        assert results == {"reader": trio.ClosedResourceError, "writer": trio.ClosedResourceError}


async def test_close_after_wake_up_before_the_read_never_reads_a_reused_descriptor() -> None:
    # The race the WebSocket churn hit: a reader is made runnable by data arriving; before it
    # runs, another task closes the stream and a third opens a socket that gets the same
    # descriptor number (the kernel hands out the lowest free one). When the reader runs, it
    # must raise rather than read the newcomer's bytes. Tasks woken by one epoll poll run in
    # the order they were woken or its reverse, so this tries until the race happened.
    raced = 0
    for _ in range(200):
        left, right = await fd_stream_pair()
        close_alarm, close_alarm_peer = socket_pair()
        reuse_alarm, reuse_alarm_peer = socket_pair()
        await right.send_all(b"a")
        assert await left.receive_some(10) == b"a"
        fd = left.socket.fileno()
        outcome: list[bytes | BaseException] = []
        opened: list[socket.socket] = []

        async def reader(stream: FdStream, outcome: list[bytes | BaseException]) -> None:
            try:
                outcome.append(await stream.receive_some(100))
            except trio.ClosedResourceError as exc:
                outcome.append(exc)

        async def closer(stream: FdStream, outcome: list[bytes | BaseException]) -> None:
            await trio.lowlevel.wait_readable(close_alarm)  # noqa: B023 - awaited in this turn
            if not outcome:
                await stream.aclose()

        async def reuser(fd: int, outcome: list[bytes | BaseException], opened: list[socket.socket]) -> None:
            nonlocal raced
            await trio.lowlevel.wait_readable(reuse_alarm)  # noqa: B023 - awaited in this turn
            if outcome or left.socket.fileno() != -1:  # noqa: B023 - not the order sought
                return
            sockets, _, newcomer_peer = reuse_descriptor(fd)
            opened.extend(sockets)
            newcomer_peer.send(b"someone else's bytes")
            raced += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, left, outcome)
            nursery.start_soon(closer, left, outcome)
            nursery.start_soon(reuser, fd, outcome, opened)
            await trio.testing.wait_all_tasks_blocked()
            os.write(close_alarm_peer.fileno(), b"!")  # woken in this order by one poll
            os.write(reuse_alarm_peer.fileno(), b"!")
            os.write(right.socket.fileno(), b"b")
        assert len(outcome) == 1
        assert outcome[0] == b"b" or isinstance(outcome[0], trio.ClosedResourceError), outcome
        for sock in opened:
            sock.close()
        for alarm in (close_alarm, close_alarm_peer, reuse_alarm, reuse_alarm_peer):
            alarm.close()
        await left.aclose()
        await right.aclose()
        if raced >= 3:
            return
    pytest.fail(f"the race happened only {raced} times in 200 tries")


async def test_concurrent_readers_or_writers_are_busy() -> None:
    left, right = await fd_stream_pair()
    fill(left)  # nothing to read, no room to write
    async with left, right:
        receive: Callable[[], Awaitable[object]] = lambda: left.receive_some(10)  # noqa: E731
        send: Callable[[], Awaitable[object]] = lambda: left.send_all(b"z")  # noqa: E731
        wait = left.wait_send_all_might_not_block
        for blocked, refused in (
            (receive, receive),
            (send, send),
            (send, wait),
            (send, left.send_eof),
            (wait, send),
            (wait, left.send_eof),
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await refused()
                nursery.cancel_scope.cancel()
        # a reader and a writer at once is how an agent uses it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.receive_some, 10)
            nursery.start_soon(left.send_all, b"z")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()


async def send_until_broken(stream: FdStream) -> None:
    while True:
        await stream.send_all(b"x" * 65536)


async def test_writing_to_a_closed_peer_is_broken() -> None:
    left, right = await fd_stream_pair()
    async with left:
        await right.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await send_until_broken(left)


async def test_tcp_reset_is_broken() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    accepted, _ = await listener.accept()
    listener.close()
    stream = FdStream(accepted)
    async with stream:
        await stream.send_all(b"unread by the peer")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # SO_LINGER 0: a RST
        with pytest.raises(trio.BrokenResourceError, match="reset"):
            await stream.receive_some(10)
        with pytest.raises(trio.BrokenResourceError):
            await send_until_broken(stream)


async def test_end_of_file_is_empty_bytes() -> None:
    left, right = await fd_stream_pair()
    async with left:
        await right.send_all(b"last")
        await right.aclose()
        assert await left.receive_some(10) == b"last"
        assert await left.receive_some(10) == b""
        assert await left.receive_some(10) == b""


async def test_refuses_a_datagram_socket_and_a_zero_fairness() -> None:
    with trio.socket.socket(type=socket.SOCK_DGRAM) as sock, pytest.raises(ValueError, match="stream"):
        FdStream(sock)
    a, b = socket_pair()
    with a, b, pytest.raises(ValueError, match="fair_every"):
        FdStream(a, fair_every=0)
