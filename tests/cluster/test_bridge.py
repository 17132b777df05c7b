"""The asyncio <-> Trio bridge: an idle node (Trio driving asyncio's loop in one thread) wakes
for its timers, its sockets, asyncio's timers and sockets, and work given to asyncio from Trio;
calls from asyncio run in order, with their results and errors; no other thread is involved."""

from __future__ import annotations

import asyncio
import functools
import socket
import subprocess
import sys
import threading

import trio

from trionano.cluster import Bridge, NodeStopping, run

from ._harness import ROOT


def test_an_idle_trio_wakes_for_timers_sockets_and_asyncio() -> None:
    seen: dict[str, object] = {}

    async def main(bridge: Bridge) -> None:
        with trio.fail_after(10):
            await trio.sleep(0.05)  # a timer wakes it
            left, plain_right = socket.socketpair()
            with left, trio.socket.from_stdlib_socket(plain_right) as right:

                async def later() -> None:
                    await asyncio.sleep(0.05)
                    left.send(b"x")  # from asyncio's side; Trio waits on `right`

                task = bridge.loop.create_task(later())
                seen["socket"] = await right.recv(1)  # its socket wakes it

                async def finished() -> None:
                    await task

                await bridge.to_asyncio(finished)

            async def from_asyncio() -> int:
                await asyncio.sleep(0.05)  # Trio is idle meanwhile
                return await bridge.call_soon(lambda: 41 + 1)

            seen["call"] = await bridge.to_asyncio(from_asyncio)

    run(main)
    assert seen["socket"] == b"x"
    assert seen["call"] == 42


def test_calls_from_asyncio_run_in_order_at_the_next_tick() -> None:
    results: list[object] = []

    async def main(bridge: Bridge) -> None:
        order: list[int] = []

        def take(n: int) -> int:
            order.append(n)
            if n == 3:
                raise KeyError(n)
            return n * 10

        async def calls() -> list[object]:
            outcomes = await asyncio.gather(*(bridge.call_soon(take, n) for n in range(6)), return_exceptions=True)
            return [order, outcomes]

        with trio.fail_after(10):
            results.extend(await bridge.to_asyncio(calls))

    run(main)
    order, outcomes = results
    assert order == [0, 1, 2, 3, 4, 5]
    assert isinstance(outcomes, list)
    assert outcomes[:3] == [0, 10, 20]
    assert isinstance(outcomes[3], KeyError)
    assert outcomes[4:] == [40, 50]


def test_calls_into_a_stopping_trio_are_refused() -> None:
    refused: list[BaseException] = []

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as finished:
            finished.cancel_scope.cancel()
        stopping = Bridge(bridge.loop, trio.lowlevel.current_trio_token(), finished)

        async def call() -> None:
            try:
                await stopping.call_soon(lambda: None)
            except NodeStopping as exc:
                refused.append(exc)

        with trio.fail_after(10):
            await bridge.to_asyncio(call)

    run(main)
    assert len(refused) == 1


def test_trio_and_asyncio_share_one_thread_and_wake_each_other() -> None:
    """No thread waits for either side's I/O: asyncio's sockets and timers wake the Trio task
    that drives asyncio, and work that Trio code gives asyncio while it is idle (a new task, a
    resolved future) is run without any I/O to wake it. In a fresh interpreter: an earlier
    test's idle Trio worker threads would be counted otherwise."""
    code = "from tests.cluster.test_bridge import share_one_thread; share_one_thread(); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok", done.stdout + done.stderr


def share_one_thread() -> None:
    """The body of the test above, run in its own interpreter."""
    seen: dict[str, object] = {}

    async def main(bridge: Bridge) -> None:
        with trio.fail_after(10):
            loop = bridge.loop
            future: asyncio.Future[str] = loop.create_future()

            async def waits() -> str:
                return await future

            task = loop.create_task(waits())
            await trio.sleep(0.05)  # asyncio idle meanwhile, its task waiting on the future
            future.set_result("set from Trio")  # no I/O follows: the set alone must wake asyncio

            async def finished() -> str:
                return await task

            seen["future"] = await bridge.to_asyncio(finished)

            async def over_a_socket() -> bytes:
                reader, writer = await asyncio.open_connection(*address)
                writer.write(b"ping")
                await writer.drain()
                data = await reader.readexactly(4)
                writer.close()
                await writer.wait_closed()
                return data

            async def serve(stream: trio.SocketStream) -> None:
                await stream.send_all(await stream.receive_some(4))

            async with trio.open_nursery() as nursery:
                (listener,) = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
                address = listener.socket.getsockname()[:2]
                seen["echo"] = await bridge.to_asyncio(over_a_socket)  # asyncio's socket, Trio's server
                nursery.cancel_scope.cancel()
            seen["threads"] = [thread.name for thread in threading.enumerate()]

    run(main)
    assert seen["future"] == "set from Trio"
    assert seen["echo"] == b"ping"
    assert seen["threads"] == [threading.main_thread().name]


def test_a_call_from_asyncio_cut_short_by_trio_stopping_ends_in_node_stopping() -> None:
    """A grpclib handler waiting on Trio work (``to_trio``) while the node stops gets
    NodeStopping (grpclib answers UNAVAILABLE), or asyncio's own cancellation when the loop's
    tasks are cancelled first as it closes; never Trio's Cancelled: a cancellation, alone or in
    a group from a nursery, belongs to Trio (it goes on up there), and in asyncio it was logged
    as "Task exception was never retrieved" with a traceback."""
    seen: list[BaseException] = []

    async def main(bridge: Bridge) -> None:
        started = trio.Event()

        async def work() -> None:
            async with trio.open_nursery() as nursery:  # two tasks: a group of Cancelled
                nursery.start_soon(trio.sleep_forever)
                started.set()
                await trio.sleep_forever()

        async def handler() -> None:
            try:
                await bridge.to_trio(work)
            except BaseException as exc:  # what the handler sees is the question
                seen.append(exc)

        bridge.loop.create_task(handler())
        with trio.fail_after(10):
            await started.wait()

    run(main)
    assert len(seen) == 1
    assert isinstance(seen[0], NodeStopping | asyncio.CancelledError), repr(seen[0])
