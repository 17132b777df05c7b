"""The one place where asyncio (grpclib) and Trio (everything else) meet.

Trio runs as a guest on the asyncio loop (``trio.lowlevel.start_guest_run``): both share the
loop's thread, so each side may start work on the other directly, and cancellation crosses in
both directions. Measured on this project's machine: ~1.12x the CPU per gRPC call of pure
asyncio (trio-asyncio ~1.5x, a loop in a thread ~1.3x).

Crossings from asyncio to Trio are queued and run together at Trio's next tick: one crossing
per wake-up of the asyncio loop, however many calls and batches it brought
(:meth:`Bridge.call_soon`, :meth:`Bridge.to_trio_nowait`). An idle Trio waits for its I/O in
guest mode's worker thread, as Trio ships it: waking it costs two thread switches
(``python -m bench.cluster crossing`` measures a crossing into an idle Trio).

Traps handled here: grpclib objects are made while the asyncio loop runs (they are, whenever
Trio code runs); on Ctrl-C ``asyncio.run`` cancels its main task, which cancels Trio's root
scope and then waits for Trio to finish, so the guest run is never abandoned; a client
deadline's ``asyncio.TimeoutError`` comes out as the builtin ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple

import outcome
import trio

from ._errors import NodeStopping

__all__ = ["Bridge", "run"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Bridge:
    """Calls across the two loops. Made by :func:`run`; owned by the Trio main function."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self.loop = loop
        self._token = token
        self._nursery = nursery
        self._soon: list[Callable[[], object]] = []  # for Trio, from asyncio: run at its next tick

    # -- asyncio -> Trio: one crossing per wake-up ------------------------------------------

    def _cross(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` (synchronous, never raises) for Trio; the first one queued since Trio
        last ran them schedules the run, the others ride along (one crossing per wake-up of
        the asyncio loop, however many calls and batches it brought). Raises RunFinishedError
        once Trio has finished."""
        soon = self._soon
        soon.append(fn)
        if len(soon) == 1:
            try:
                self._token.run_sync_soon(self._run_soon)
            except trio.RunFinishedError:
                soon.clear()
                raise

    def _run_soon(self) -> None:
        soon, self._soon = self._soon, []
        for fn in soon:
            fn()

    async def call_soon(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """From asyncio (a grpclib handler): call ``fn(*args)`` (synchronous) in Trio's context
        at its next tick and return its result: no Trio task, and one crossing for all the
        calls of a wake-up. Raises what ``fn`` raises; NodeStopping once Trio is winding down.
        Cancelling the asyncio side before ``fn`` runs drops the call."""
        future: asyncio.Future[T] = self.loop.create_future()

        def call() -> None:
            if future.cancelled():
                return
            if self._nursery.cancel_scope.cancel_called:
                future.set_exception(NodeStopping("this node is stopping"))
                return
            try:
                future.set_result(fn(*args))
            except Exception as exc:
                future.set_exception(exc)

        try:
            self._cross(call)
        except trio.RunFinishedError as exc:
            raise NodeStopping("this node has stopped") from exc
        return await future

    async def to_asyncio(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """From Trio: run ``make()`` as an asyncio task and wait for it. Cancelling the Trio
        side cancels the task. Raises what the coroutine raises (timeouts as TimeoutError);
        NodeStopping when the asyncio side cancelled it (the loop is stopping)."""
        task = self.loop.create_task(make())
        done = trio.Event()
        task.add_done_callback(lambda _: self._done(done))
        try:
            await done.wait()
        except trio.Cancelled:
            task.cancel()
            raise
        try:
            return task.result()
        except TimeoutError as exc:  # the same class on 3.11+, named here for clarity
            raise TimeoutError(str(exc) or "deadline exceeded") from exc
        except asyncio.CancelledError as exc:
            raise NodeStopping("the call was cancelled: the node is stopping") from exc

    def _done(self, done: trio.Event) -> None:
        try:
            self._cross(done.set)
        except trio.RunFinishedError:
            pass

    def to_trio_nowait(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """From asyncio: call ``fn(*args)`` soon in Trio's context (synchronous, no task: the
        cheapest crossing; the fast path's one per batch). ``fn`` must not raise. Dropped
        once Trio has finished."""
        try:
            self._cross(functools.partial(fn, *args))
        except trio.RunFinishedError:
            pass

    async def to_trio(self, fn: Callable[[], Awaitable[T]]) -> T:
        """From asyncio (a grpclib handler): run ``fn()`` as a Trio task and wait for it.
        Cancelling the asyncio side cancels the Trio task. Raises what ``fn`` raises;
        NodeStopping once Trio is winding down (it starts nothing new then)."""
        future: asyncio.Future[T] = self.loop.create_future()
        scope = trio.CancelScope()

        async def runner() -> None:
            with scope:
                result = await outcome.acapture(fn)
                if not future.done():
                    if isinstance(result, outcome.Value):
                        future.set_result(result.value)
                    else:
                        future.set_exception(result.error)
            if scope.cancelled_caught and not future.done():
                future.cancel()

        def start() -> None:
            try:
                self._nursery.start_soon(runner)
            except RuntimeError:  # "Nursery is closed to new arrivals": Trio is winding down
                future.set_exception(NodeStopping("this node is stopping"))

        try:
            self._cross(start)
        except trio.RunFinishedError as exc:
            raise NodeStopping("this node has stopped") from exc
        try:
            return await future
        except asyncio.CancelledError:
            self._token.run_sync_soon(scope.cancel)
            raise


def run(
    main: Callable[[Bridge], Awaitable[None]],
    *,
    on_signal: Callable[[], None] | None = None,
) -> None:
    """Run ``main(bridge)`` in Trio hosted on a fresh asyncio loop, until it returns.

    SIGINT/SIGTERM call ``on_signal()`` in Trio (a graceful stop) when given; a second signal,
    or any signal without it, cancels Trio's root scope and waits for it to unwind. Raises what
    ``main`` raises."""

    async def host() -> None:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        signals = 0

        def on_host_signal() -> None:
            nonlocal signals
            signals += 1
            if on_signal is not None and signals == 1 and tokens:
                tokens[0].run_sync_soon(on_signal)
            elif main_task is not None:
                main_task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_host_signal)
        finished: asyncio.Future[outcome.Outcome[None]] = loop.create_future()
        root = trio.CancelScope()
        tokens: list[trio.lowlevel.TrioToken] = []

        async def trio_main() -> None:
            tokens.append(trio.lowlevel.current_trio_token())
            with root:
                async with trio.open_nursery() as nursery:
                    await main(Bridge(loop, tokens[0], nursery))
                    nursery.cancel_scope.cancel()  # calls from asyncio still in flight

        def done(result: outcome.Outcome[None]) -> None:
            if not finished.done():
                finished.set_result(result)

        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=done,
            host_uses_signal_set_wakeup_fd=True,  # asyncio owns the wakeup fd (its signal handlers)
        )
        try:
            result = await asyncio.shield(finished)
        except asyncio.CancelledError:
            if tokens:
                tokens[0].run_sync_soon(root.cancel)
            (await finished).unwrap()
            raise
        result.unwrap()

    asyncio.run(host())
