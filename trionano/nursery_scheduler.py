"""nano's logic scheduler on Trio: tasks run one at a time, so game state needs no locks.

Every handler call, session-close hook and timer callback of a server runs serially in the
scheduler's main lane, in the order it was pushed (per session: arrival order). Named lanes
(nano's ``WithSchedulerName``) are further serial queues, each its own task, for components
whose work may run beside the main lane's. Timers fire inside the main lane on a tick of
``precision`` seconds, with nano's rules: the first firing at creation + interval rounded up
to the next tick, at most one firing per tick.

Resource handling: :meth:`Scheduler.run` owns every lane task; it returns after
:meth:`Scheduler.stop` once the queued tasks have run. Error handling: an exception from a task
or timer is logged (``Handle message panic`` / ``Handle timer panic``) and the scheduler goes
on, ``SystemExit`` included (only ``trio.Cancelled``, ``KeyboardInterrupt`` and
``GeneratorExit`` propagate: see :func:`trionano._util.passes_through`); ``push`` on a
stopped scheduler raises ``trio.ClosedResourceError``.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
from collections.abc import Callable
from typing import Final

import attrs
import trio

from ._util import passes_through

__all__ = ["Lane", "Scheduler", "Task", "Timer"]

#: A task: a function of no arguments, sync or async (what it returns is awaited if awaitable,
#: otherwise ignored).
Task = Callable[[], object]
TimerCondition = Callable[[float], bool]

MAIN_LANE: Final = ""


async def run_task(task: Task, logger: logging.Logger, what: str = "Handle message panic") -> None:
    """Run a sync or async task; log what it raises. ``trio.Cancelled`` and
    ``KeyboardInterrupt`` pass through (:func:`~trionano._util.passes_through`)."""
    try:
        result = task()
        if result is not None and inspect.isawaitable(result):
            await result
    except BaseException as exc:
        if passes_through(exc):
            raise
        logger.exception(what)


class Lane:
    """A serial queue of tasks with its own task. Created by :meth:`Scheduler.lane`."""

    def __init__(self, name: str, backlog: int, logger: logging.Logger) -> None:
        self.name: Final = name
        self._send, self._receive = trio.open_memory_channel[Task](backlog)
        self._logger = logger
        #: ``push_nowait(task)``: queue ``task`` or raise ``trio.WouldBlock`` when the lane is
        #: full (``trio.ClosedResourceError`` once closed). The channel's own method: no call
        #: of ours in between, on every message's path.
        self.push_nowait: Final[Callable[[Task], None]] = self._send.send_nowait

    async def push(self, task: Task) -> None:
        """Queue ``task``; waits while the lane is full (backpressure on the pusher)."""
        await self._send.send(task)

    def close(self) -> None:
        """Take no more tasks; :meth:`run` returns once the queued ones have run."""
        self._send.close()

    async def run(self) -> None:
        """Run the queued tasks one at a time until :meth:`close`; started by the scheduler."""
        # Drain everything queued per wake-up: one task switch for a batch, not one per task.
        logger = self._logger
        receive = self._receive
        async with receive:
            while True:
                try:
                    task = receive.receive_nowait()
                except trio.WouldBlock:
                    try:
                        task = await receive.receive()
                    except trio.EndOfChannel:
                        return
                except trio.EndOfChannel:
                    return
                try:  # run_task, inlined: no coroutine object per task
                    result = task()
                    if result is not None and inspect.isawaitable(result):
                        await result
                except BaseException as exc:
                    if passes_through(exc):
                        raise
                    logger.exception("Handle message panic")


@attrs.define(eq=False)
class Timer:
    """A timer of a :class:`Scheduler`. ``stop()`` is idempotent; a stopped timer never fires."""

    id: int
    interval: float
    fn: Task
    count: int  # firings left; -1 is forever
    next_due: float
    condition: TimerCondition | None = None

    @property
    def stopped(self) -> bool:
        """Whether the timer will never fire again (stopped, or out of firings)."""
        return self.count == 0

    def stop(self) -> None:
        """Never fire again. Idempotent; safe from the timer's own callback."""
        self.count = 0


class Scheduler:
    """One server's scheduler: the main lane, named lanes and timers.

    ``backlog`` tasks may wait per lane; ``precision`` is the timer tick in seconds (>= 1 ms).
    """

    def __init__(self, *, backlog: int = 256, precision: float = 1.0, logger: logging.Logger | None = None) -> None:
        if precision < 0.001:
            raise ValueError("time precision can not less than a Millisecond")
        self.precision: Final = precision
        self._backlog = backlog
        self._logger = logger or logging.getLogger("trionano.scheduler")
        self._main = Lane(MAIN_LANE, backlog, self._logger)
        self._lanes: dict[str, Lane] = {}
        self._nursery: trio.Nursery | None = None
        self._timers: list[Timer] = []  # active, in creation order
        self._pending: list[Timer] = []  # created since the last tick
        self._timer_ids = itertools.count(1)
        self._timers_changed = trio.Event()
        self._epoch = 0.0
        self._stopped = False

    # -- tasks ------------------------------------------------------------------------------

    async def push(self, task: Task) -> None:
        """Queue ``task`` on the main lane; waits while it is full."""
        await self._main.push(task)

    def push_nowait(self, task: Task) -> None:
        """Queue ``task`` on the main lane or raise ``trio.WouldBlock``."""
        self._main.push_nowait(task)

    def lane(self, name: str) -> Lane:
        """The named lane, created (and its task started) on first use. The empty name is the
        main lane. Raises RuntimeError before :meth:`run` has started, or after :meth:`stop`."""
        if name == MAIN_LANE:
            return self._main
        lane = self._lanes.get(name)
        if lane is None:
            if self._nursery is None or self._stopped:
                raise RuntimeError("the scheduler is not running")
            lane = self._lanes[name] = Lane(name, self._backlog, self._logger)
            self._nursery.start_soon(lane.run, name=f"trionano lane {name!r}")
        return lane

    # -- timers -----------------------------------------------------------------------------

    def _add(self, interval: float, fn: Task, count: int, condition: TimerCondition | None = None) -> Timer:
        if fn is None:
            raise ValueError("nano/timer: nil timer function")
        if condition is None and not 0 < interval < math.inf:
            raise ValueError("non-positive interval for NewTimer")
        if condition is None and interval < self.precision:
            self._logger.warning(
                "a timer every %gs fires at most once per tick of %gs (Config.timer_precision)",
                interval,
                self.precision,
            )
        now = trio.current_time() if self._nursery is not None else self._epoch
        timer = Timer(next(self._timer_ids), interval, fn, count, now + interval, condition)
        self._pending.append(timer)
        self._timers_changed.set()
        return timer

    def every(self, interval: float, fn: Task) -> Timer:
        """Call ``fn`` every ``interval`` seconds until stopped (nano's NewTimer). Timers fire
        on the scheduler's tick (``precision``, ``Config.timer_precision``: 1 s by default, as
        nano's): an interval shorter than the tick fires once per tick, and is logged."""
        return self._add(interval, fn, -1)

    def count(self, interval: float, count: int, fn: Task) -> Timer:
        """Call ``fn`` every ``interval`` seconds, ``count`` times (nano's NewCountTimer)."""
        if count < 1:
            raise ValueError("a count timer fires at least once")
        return self._add(interval, fn, count)

    def after(self, delay: float, fn: Task) -> Timer:
        """Call ``fn`` once, ``delay`` seconds from now (nano's NewAfterTimer)."""
        return self._add(delay, fn, 1)

    def condition(self, condition: TimerCondition, fn: Task) -> Timer:
        """Call ``fn`` on every tick where ``condition(now)`` is true (nano's NewCondTimer)."""
        if condition is None:
            raise ValueError("nano/timer: nil condition")
        return self._add(math.inf, fn, -1, condition)

    async def _cron(self) -> None:
        """One tick, run inside the main lane."""
        now = trio.current_time()
        if self._pending:
            self._timers.extend(self._pending)
            self._pending.clear()
        for timer in self._timers:
            if timer.stopped:
                continue
            if timer.condition is not None:
                try:
                    due = timer.condition(now)
                except BaseException as exc:
                    if passes_through(exc):
                        raise
                    self._logger.exception("Handle timer panic")
                    continue
                if due:
                    await run_task(timer.fn, self._logger, "Handle timer panic")
            elif timer.next_due <= now:
                timer.next_due += timer.interval
                if timer.count > 0:
                    timer.count -= 1
                await run_task(timer.fn, self._logger, "Handle timer panic")
        self._timers = [t for t in self._timers if not t.stopped]

    async def _ticker(self) -> None:
        """Queue a tick on the main lane every ``precision`` seconds while timers exist."""
        precision = self.precision
        while True:
            if not self._timers and not self._pending:
                self._timers_changed = trio.Event()
                await self._timers_changed.wait()
            now = trio.current_time()
            # ticks sit on the grid epoch + k * precision, as nano's ticker does
            tick = self._epoch + math.floor((now - self._epoch) / precision + 1) * precision
            await trio.sleep_until(tick)
            try:
                await self._main.push(self._cron)
            except trio.ClosedResourceError:
                return

    # -- life -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the lanes and timers until :meth:`stop`; the caller's nursery owns this task."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._epoch = trio.current_time()
            for timer in self._pending:  # timers made before run() count from now
                timer.next_due = self._epoch + timer.interval
            ticker = trio.CancelScope()

            async def tick() -> None:
                with ticker:
                    await self._ticker()

            nursery.start_soon(tick, name="trionano scheduler ticker")
            task_status.started()
            await self._main.run()
            ticker.cancel()
        self._nursery = None

    def stop(self) -> None:
        """Stop taking tasks: queued ones still run, then :meth:`run` returns. Idempotent."""
        self._stopped = True
        self._main.close()
        for lane in self._lanes.values():
            lane.close()
