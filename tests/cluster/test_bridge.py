"""The asyncio <-> Trio bridge: an idle Trio (hosted in guest mode) wakes for its timers, its
sockets and calls from asyncio; calls from asyncio run in order, at Trio's next tick, with their
results and errors."""

from __future__ import annotations

import asyncio
import socket

import trio

from trionano.cluster import Bridge, NodeStopping, run


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
