"""The one place where asyncio (grpclib) and Trio (everything else) meet.

Trio runs as a guest on the asyncio loop (``trio.lowlevel.start_guest_run``): both share the
loop's thread, so each side may start work on the other directly, and cancellation crosses in
both directions. Measured on this project's machine: ~1.12x the CPU per gRPC call of pure
asyncio (trio-asyncio ~1.5x, a loop in a thread ~1.3x).

Crossings from asyncio to Trio are queued and run together at Trio's next tick: one crossing
per wake-up of the asyncio loop, however many calls and batches it brought
(:meth:`Bridge.call_soon`, :meth:`Bridge.to_trio_nowait`). An idle Trio waits on asyncio's own
selector rather than in guest mode's worker thread (:func:`_first_tick`): waking it costs no
thread switch (``python -m bench.cluster crossing``: p99 of a crossing into an idle Trio
~3.6 ms -> ~0.3 ms on this project's loaded 2-core machine).

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
from typing import Any, Final, TypeVar, TypeVarTuple

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
    guest_thread: bool = False,
) -> None:
    """Run ``main(bridge)`` in Trio hosted on a fresh asyncio loop, until it returns.

    An idle Trio waits on asyncio's own selector (see :func:`_first_tick`);
    ``guest_thread`` True keeps Trio's stock guest mode (its waits in a worker thread), for
    comparison (``python -m bench.cluster crossing``).

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
            run_sync_soon_not_threadsafe=loop.call_soon if guest_thread else _first_tick(loop),
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


# -- Trio's idle wait on asyncio's selector, not in a thread ----------------------------------
#
# Stock guest mode waits for Trio's I/O in a worker thread (``get_events(timeout)``), which
# hands back to the host with ``call_soon_threadsafe``: every wake-up of an idle Trio (a client
# socket readable, a crossing from asyncio) costs two thread switches and a GIL handoff, the
# tail of a lightly loaded node's latency (issue #11: p99 31 ms at half load). On Linux, Trio's
# I/O manager is one epoll object, itself pollable: the host's selector waits on its fd (and a
# timer for Trio's next deadline) instead, and calls the tick in its own thread. The tick is
# Trio's own (``GuestState.guest_tick`` in trio/_core/_run.py, trio 0.35), but for that wait.
# Any other I/O manager, or a Trio whose internals differ, keeps the stock thread.


#: Trio releases whose ``GuestState.guest_tick`` the override below was checked against (the
#: tests fail, rather than lose the selector wait silently, past them: re-check, then widen)
_VERIFIED_TRIO: Final = ((0, 35), (0, 36))


def _version(text: str) -> tuple[int, int]:
    major, _, rest = text.partition(".")
    minor = rest.partition(".")[0]
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (0, 0)


def _first_tick(loop: asyncio.AbstractEventLoop) -> Callable[[Callable[[], object]], object]:
    """``run_sync_soon_not_threadsafe`` for :func:`trio.lowlevel.start_guest_run`: the first
    call carries the guest's tick, whose state is switched to :func:`_threadless_state`'s class
    when this Trio allows it."""
    first = True

    def call_soon(fn: Callable[[], object]) -> object:
        nonlocal first
        if first:
            first = False
            state = getattr(fn, "__self__", None)
            threadless = _threadless_state(loop, state)
            if threadless is not None and state is not None:
                state.__class__ = threadless
                fn = state.guest_tick
        return loop.call_soon(fn)

    return call_soon


def _threadless_state(loop: asyncio.AbstractEventLoop, state: object) -> type | None:
    """A subclass of Trio's GuestState whose idle wait is on ``loop``'s selector, or None when
    this Trio does not look like the one it was written against."""
    try:
        from outcome import Error, capture
        from sniffio import thread_local as sniffio_library
        from trio._core._run import GuestState  # private: checked below, fallback otherwise
    except ImportError:  # pragma: no cover - another trio layout
        return None
    if not _VERIFIED_TRIO[0] <= _version(trio.__version__) < _VERIFIED_TRIO[1]:
        return None  # a Trio whose guest tick this was not checked against: the stock thread
    runner = getattr(state, "runner", None)
    epoll = getattr(getattr(runner, "io_manager", None), "_epoll", None)
    if type(state) is not GuestState or not hasattr(epoll, "fileno") or not hasattr(GuestState, "__slots__"):
        return None
    assert epoll is not None
    epoll_fd: int = epoll.fileno()

    class ThreadlessGuestState(GuestState):
        __slots__ = ()

        def guest_tick(self) -> None:
            prev_library, sniffio_library.name = sniffio_library.name, "trio"
            try:
                timeout = self.unrolled_run_next_send.send(self.unrolled_run_gen)
            except StopIteration:
                assert self.runner.main_task_outcome is not None
                self.done_callback(self.runner.main_task_outcome)
                return
            except trio.TrioInternalError as exc:
                self.done_callback(Error(exc))
                return
            finally:
                sniffio_library.name = prev_library
            io_manager = self.runner.io_manager
            events = capture(io_manager.get_events, 0)
            if timeout <= 0 or isinstance(events, Error) or events.value:
                self.unrolled_run_next_send = events
                self.runner.guest_tick_scheduled = True
                self.run_sync_soon_not_threadsafe(self.guest_tick)
                return
            # idle: wait for Trio's epoll fd (its sockets, its wakeup socket) or its deadline
            self.runner.guest_tick_scheduled = False
            woken = False

            def wake() -> None:
                nonlocal woken
                if woken:
                    return
                woken = True
                loop.remove_reader(epoll_fd)
                timer.cancel()
                self.unrolled_run_next_send = capture(io_manager.get_events, 0)
                self.runner.guest_tick_scheduled = True
                self.guest_tick()

            loop.add_reader(epoll_fd, wake)
            timer = loop.call_later(timeout, wake)

    return ThreadlessGuestState
