"""The one place where asyncio (grpclib) and Trio (everything else) meet.

Trio is the host: ``trio.run`` owns the thread, and a task of Trio's drives asyncio's loop one
iteration at a time (:class:`_DrivenLoop`). Between iterations the task waits in Trio for the
loop's epoll selector to become readable (one file descriptor standing for every socket asyncio
watches), for asyncio's next timer, or for Trio code to give asyncio work (``call_soon``, which
wakes it). Both sides share one thread and one scheduler: asyncio code runs inside that Trio
task, so a call from asyncio into Trio is a plain function call in Trio's context, and Trio
never hands its I/O wait to another thread (Trio's guest mode on asyncio, used before, waits
for Trio's I/O in a worker thread: every wake-up of an idle Trio then cost two thread switches
and, on a loaded machine, the run-queue waits of both threads; see ``python -m bench.cluster
tail``). Only public interfaces: asyncio's ``SelectorEventLoop(selector)``, ``loop.stop()``
from within an iteration (the loop then returns from ``run_forever`` once that iteration is
done), ``selectors.EpollSelector.fileno``, and ``trio.lowlevel.wait_readable``.

Traps handled here: grpclib objects may be made from Trio code (they look the loop up with
``asyncio.get_event_loop()``: the driven loop is set as the thread's loop); the driving task is
shielded from Trio's cancellation until the main function has returned, so asyncio keeps serving
Trio's clean-up (graceful gRPC close); SIGINT/SIGTERM are Trio's (``trio.open_signal_receiver``);
once Trio has finished, the asyncio tasks left are cancelled and run to their end on asyncio
alone, and calls from them into Trio are refused; a client deadline's ``asyncio.TimeoutError``
comes out as the builtin ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextvars
import selectors
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple

import outcome
import trio

from .._log import RateLimitedLog, flush_periodically
from ._errors import NodeStopping
from ._quiet import quiet_ordinary_events

__all__ = ["Bridge", "run"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


_TURNS = 8  # asyncio iterations in a row at most, before Trio's tasks get their turn


class _Selector(selectors.EpollSelector):
    """asyncio's selector, never blocking. The loop runs iterations in a row while it has
    work (at most ``_TURNS``); once it has none (nothing ready, no I/O), the selector notes how
    long the loop wanted to wait (``wanted``, None: until I/O) and stops the loop after this
    iteration: the driving Trio task does the waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: _DrivenLoop | None = None  # driven while set
        self.turns = 0
        self.wanted: float | None = 0.0
        self.idle = False  # the loop stopped for want of work (not after _TURNS)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        if loop is None:  # asyncio alone (after Trio has finished)
            return super().select(timeout)
        events = super().select(0)
        self.turns += 1
        if not events and timeout != 0:
            self.idle, self.wanted = True, timeout
            loop.more = False  # work given from here on makes the driver go on at once
            loop.stop()  # after this iteration
        elif self.turns >= _TURNS:
            self.idle = False
            loop.stop()
        return events


class _DrivenLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, run by :func:`_drive` while it has work. Work given to it once it has
    stopped (``call_soon``, ``call_at``: new tasks, resolved futures, set events, from Trio
    code or from its own last callbacks) wakes the driving task or keeps it going."""

    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.selector = selector
        self.waiting: trio.CancelScope | None = None  # the driving task's wait, while it waits
        self.more = False  # work was given since the loop chose to stop

    def call_soon(
        self, callback: Callable[[*Ts], object], *args: *Ts, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        handle = super().call_soon(callback, *args, context=context)
        self.more = True
        if self.waiting is not None:
            self.waiting.cancel()
        return handle

    def call_at(
        self, when: float, callback: Callable[[*Ts], object], *args: *Ts, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self.more = True
        if self.waiting is not None:
            self.waiting.cancel()  # the new timer may be due before the wait would end
        return handle


async def _drive(loop: _DrivenLoop, scope: trio.CancelScope) -> None:
    """Run ``loop`` until ``scope`` is cancelled: a few iterations at a time, letting Trio's
    other tasks run in between; when asyncio has nothing to do, wait (in Trio) for its
    selector's descriptor, its next timer or new work from Trio code."""
    selector = loop.selector
    fd = selector.fileno()
    with scope:
        while True:
            selector.turns = 0
            loop.run_forever()  # until the selector stops it
            wanted = selector.wanted
            if loop.more or not selector.idle or (wanted is not None and wanted <= 0):
                if scope.cancel_called:
                    return
                await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            with trio.CancelScope() as waiting:
                if wanted is not None:
                    waiting.deadline = trio.current_time() + wanted
                loop.waiting = waiting
                try:
                    await trio.lowlevel.wait_readable(fd)
                finally:
                    loop.waiting = None


class Bridge:
    """Calls across the two loops. Made by :func:`run`; owned by the Trio main function.
    Code on asyncio's side runs inside Trio (in the task that drives asyncio), so its calls
    into Trio are direct; ``call_soon``, ``to_trio_nowait`` and ``to_trio`` refuse once
    Trio has finished (the asyncio tasks left are then being cancelled)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self.loop = loop
        self._token = token
        self._nursery = nursery
        self.finished = False  # Trio has finished: nothing more runs there

    # -- asyncio -> Trio --------------------------------------------------------------------

    async def call_soon(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """From asyncio (a grpclib handler): call ``fn(*args)`` (synchronous) in Trio's
        context and return its result: no Trio task, no thread. Raises what ``fn`` raises;
        NodeStopping once Trio is winding down."""
        if self.finished:
            raise NodeStopping("this node has stopped")
        if self._nursery.cancel_scope.cancel_called:
            raise NodeStopping("this node is stopping")
        return fn(*args)

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
            # the task may still end with an error of its own (grpclib turns the cancel of a
            # call whose channel is closing into StreamTerminatedError): no one waits for it
            # any more, and asyncio would log it as "never retrieved"
            task.add_done_callback(_retrieved)
            raise
        try:
            return task.result()
        except TimeoutError as exc:  # the same class on 3.11+, named here for clarity
            raise TimeoutError(str(exc) or "deadline exceeded") from exc
        except asyncio.CancelledError as exc:
            raise NodeStopping("the call was cancelled: the node is stopping") from exc

    def _done(self, done: trio.Event) -> None:
        if not self.finished:
            done.set()

    def to_trio_nowait(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """From asyncio: call ``fn(*args)`` now in Trio's context (synchronous, no task: the
        fast path's one per batch). ``fn`` must not raise. Dropped once Trio has finished."""
        if not self.finished:
            fn(*args)

    async def to_trio(self, fn: Callable[[], Awaitable[T]]) -> T:
        """From asyncio (a grpclib handler): run ``fn()`` as a Trio task and wait for it.
        Cancelling the asyncio side cancels the Trio task. Raises what ``fn`` raises;
        NodeStopping once Trio is winding down (it starts nothing new then), or when the node
        stopping cancels ``fn`` (Trio's Cancelled stays in Trio)."""
        if self.finished:
            raise NodeStopping("this node has stopped")
        future: asyncio.Future[T] = self.loop.create_future()
        scope = trio.CancelScope()

        async def runner() -> None:
            with scope:
                result = await outcome.acapture(fn)
                if isinstance(result, outcome.Error) and _cancelled_only(result.error):
                    # Trio's cancellation (this call's own scope, or the node stopping) goes on
                    # up in Trio; the asyncio side is told the node stops (or is cancelled)
                    if not future.done():
                        future.set_exception(NodeStopping("the call was cancelled: the node is stopping"))
                    result.unwrap()
                if not future.done():
                    if isinstance(result, outcome.Value):
                        future.set_result(result.value)
                    else:
                        future.set_exception(result.error)
            if scope.cancelled_caught and not future.done():
                future.cancel()

        try:
            self._nursery.start_soon(runner)
        except RuntimeError:  # "Nursery is closed to new arrivals": Trio is winding down
            raise NodeStopping("this node is stopping") from None
        try:
            return await future
        except asyncio.CancelledError:
            if not self.finished:
                scope.cancel()
            raise


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark the outcome of a task no one waits for as seen."""
    if not task.cancelled():
        task.exception()


def _cancelled_only(error: BaseException) -> bool:
    """Whether ``error`` is Trio's Cancelled, or a group (a nursery's) of nothing else."""
    if isinstance(error, trio.Cancelled):
        return True
    return isinstance(error, BaseExceptionGroup) and error.split(trio.Cancelled)[1] is None


def run(
    main: Callable[[Bridge], Awaitable[None]],
    *,
    on_signal: Callable[[], None] | None = None,
) -> None:
    """Run ``main(bridge)`` in Trio, with a fresh asyncio loop driven by it, until it returns.
    Must be called from the main thread (Trio's signal handling).

    SIGINT/SIGTERM call ``on_signal()`` in Trio (a graceful stop) when given; a second signal,
    or any signal without it, cancels ``main`` and waits for it to unwind. Raises what ``main``
    raises."""
    loop = _DrivenLoop()
    asyncio.set_event_loop(loop)  # grpclib looks it up from Trio code too
    bridges: list[Bridge] = []

    async def trio_main(quiet: RateLimitedLog) -> None:
        driving = trio.CancelScope(shield=True)  # asyncio serves Trio's clean-up to the end
        root = trio.CancelScope()
        ended: list[outcome.Outcome[None]] = []

        async def main_in_root() -> None:
            with root:
                async with trio.open_nursery() as nursery:
                    bridge = Bridge(loop, trio.lowlevel.current_trio_token(), nursery)
                    bridges.append(bridge)
                    await main(bridge)
                    nursery.cancel_scope.cancel()  # calls from asyncio still in flight

        async with trio.open_nursery() as host:
            host.start_soon(_drive, loop, driving)
            host.start_soon(flush_periodically, [quiet])  # asyncio's and grpclib's ordinary events
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

                async def watch(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                    count = 0
                    task_status.started()  # before main runs: a main that returns at once ends it
                    async for _ in signals:
                        count += 1
                        if on_signal is not None and count == 1:
                            on_signal()
                        else:
                            root.cancel()

                await host.start(watch)
                try:
                    ended.append(await outcome.acapture(main_in_root))
                finally:
                    for bridge in bridges:
                        bridge.finished = True
                    host.cancel_scope.cancel()
                    driving.cancel()
        ended[0].unwrap()  # what main raised, as it raised it

    try:
        with quiet_ordinary_events() as quiet:
            trio.run(trio_main, quiet)
    finally:
        for bridge in bridges:
            bridge.finished = True
        loop.selector.loop = None  # asyncio on its own from here
        _close(loop)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """As ``asyncio.run`` ends: cancel the tasks left and run them to their end, then close."""
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
