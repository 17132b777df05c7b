"""The scheduler: serial lanes and nano's timers, on trio's MockClock."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from trionano.nursery_scheduler import Lane, Scheduler


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    sched = Scheduler(precision=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        yield sched
        sched.stop()


async def test_tasks_run_serially_in_push_order(scheduler: Scheduler, autojump_clock: trio.testing.MockClock) -> None:
    log: list[str] = []

    async def slow(name: str) -> None:
        log.append(f"{name} start")
        await trio.sleep(1)
        log.append(f"{name} end")

    await scheduler.push(lambda: slow("a"))
    await scheduler.push(lambda: log.append("b"))
    await scheduler.push(lambda: slow("c"))
    await trio.sleep(5)
    assert log == ["a start", "a end", "b", "c start", "c end"]


async def test_a_failing_task_is_logged_and_the_scheduler_goes_on(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    done = trio.Event()
    await scheduler.push(lambda: 1 / 0)
    await scheduler.push(done.set)
    await done.wait()
    assert any("Handle message panic" in r.getMessage() for r in caplog.records)


async def test_push_waits_when_full_and_push_nowait_raises(autojump_clock: trio.testing.MockClock) -> None:
    sched = Scheduler(backlog=1)
    sched.push_nowait(lambda: None)
    with pytest.raises(trio.WouldBlock):
        sched.push_nowait(lambda: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await sched.push(lambda: None)
        sched.stop()
    with pytest.raises(trio.ClosedResourceError):
        await sched.push(lambda: None)


async def test_every_fires_each_interval_until_stopped(
    scheduler: Scheduler, autojump_clock: trio.testing.MockClock
) -> None:
    fired: list[float] = []
    start = trio.current_time()
    timer = scheduler.every(2, lambda: fired.append(trio.current_time() - start))
    await trio.sleep(7.5)
    assert fired == [2, 4, 6]
    timer.stop()
    timer.stop()  # idempotent
    await trio.sleep(5)
    assert len(fired) == 3


async def test_count_after_and_condition(scheduler: Scheduler, autojump_clock: trio.testing.MockClock) -> None:
    counted: list[int] = []
    once: list[int] = []
    cond: list[float] = []
    start = trio.current_time()
    scheduler.count(1, 3, lambda: counted.append(1))
    scheduler.after(5, lambda: once.append(1))
    scheduler.condition(lambda now: int(now - start) % 4 == 0, lambda: cond.append(trio.current_time() - start))
    await trio.sleep(12.5)
    assert len(counted) == 3
    assert once == [1]
    assert cond == [4, 8, 12]


async def test_first_firing_rounds_up_to_the_next_tick(
    scheduler: Scheduler, autojump_clock: trio.testing.MockClock
) -> None:
    fired: list[float] = []
    start = trio.current_time()
    await trio.sleep(0.3)
    scheduler.after(1.2, lambda: fired.append(trio.current_time() - start))  # due at 1.5
    await trio.sleep(5)
    assert fired == [2.0]  # the tick after 1.5


async def test_at_most_one_firing_per_tick(autojump_clock: trio.testing.MockClock) -> None:
    # nano's TestNewTimer: a 1 ms timer on a 1 s tick fires once per tick, catching up slowly
    sched = Scheduler(precision=1.0)
    fired: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        timers = [sched.every(0.001, lambda: fired.append(1)) for _ in range(100)]
        await trio.sleep(2.5)
        assert len(fired) == 200
        for timer in timers:
            timer.stop()
        sched.stop()


async def test_timer_errors_are_logged(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    good: list[int] = []
    scheduler.after(1, lambda: 1 / 0)
    scheduler.after(1, lambda: good.append(1))
    await trio.sleep(2)
    assert good == [1]
    assert any("Handle timer panic" in r.getMessage() for r in caplog.records)


async def test_async_timer_callbacks_run_in_the_main_lane(
    scheduler: Scheduler, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[str] = []

    async def tick() -> None:
        log.append("timer start")
        await trio.sleep(0.5)
        log.append("timer end")

    scheduler.after(1, tick)
    await trio.sleep(1.25)  # the timer is mid-await now
    await scheduler.push(lambda: log.append("task"))  # runs only once the timer is done
    await trio.sleep(2)
    assert log == ["timer start", "timer end", "task"]


def test_timer_validation() -> None:
    sched = Scheduler()
    with pytest.raises(ValueError, match="non-positive interval"):
        sched.every(0, lambda: None)
    with pytest.raises(ValueError, match="nil timer function"):
        sched.every(1, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nil condition"):
        sched.condition(None, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="can not less than a Millisecond"):
        Scheduler(precision=0.0001)


async def test_named_lanes_are_serial_among_themselves_and_beside_main(
    scheduler: Scheduler, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[str] = []
    lane = scheduler.lane("room-1")
    assert isinstance(lane, Lane)
    assert scheduler.lane("room-1") is lane
    assert scheduler.lane("") is not lane

    async def work(name: str, seconds: float) -> None:
        log.append(f"{name}+")
        await trio.sleep(seconds)
        log.append(f"{name}-")

    await lane.push(lambda: work("L1", 2))
    await lane.push(lambda: work("L2", 1))
    await scheduler.push(lambda: work("M", 1))
    await trio.sleep(5)
    assert log.index("L1-") < log.index("L2+")  # serial within the lane
    assert log.index("M-") < log.index("L1-")  # the main lane did not wait for it


async def test_stop_runs_what_is_queued(autojump_clock: trio.testing.MockClock) -> None:
    sched = Scheduler()
    ran: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        for n in range(5):
            sched.push_nowait(lambda n=n: ran.append(n))  # type: ignore[misc]
        sched.stop()
    assert ran == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        sched.lane("late")


def test_logger_default() -> None:
    assert Scheduler()._logger.name == "trionano.scheduler"
    assert Scheduler(logger=logging.getLogger("x"))._logger.name == "x"


async def test_an_interval_shorter_than_the_tick_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = Scheduler(precision=0.5)
    with caplog.at_level(logging.WARNING, logger="trionano.scheduler"):
        scheduler.every(0.01, lambda: None)
        scheduler.every(0.5, lambda: None)
    (record,) = caplog.records
    assert "fires at most once per tick" in record.getMessage()


async def test_a_one_shot_timer_shorter_than_the_tick_is_logged_as_late_not_repeating(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = Scheduler(precision=1.0)
    with caplog.at_level(logging.WARNING, logger="trionano.scheduler"):
        scheduler.after(0.2, lambda: None)
        scheduler.count(0.2, 3, lambda: None)
    after, count = (record.getMessage() for record in caplog.records)
    assert "every" not in after
    assert "once per tick" not in after
    assert "a timer after 0.2s fires on the first tick after that: up to 1s late" in after
    assert "a timer every 0.2s fires at most once per tick of 1s" in count


async def test_the_scheduler_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = Scheduler(precision=0.01, backlog=1000)

    def boom() -> None:
        raise SystemExit(7)

    with caplog.at_level(logging.WARNING, logger="trionano.scheduler"):
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            for _ in range(500):
                scheduler.after(0.001, boom)  # shorter than the tick: a warning each, and a panic each
                scheduler.push_nowait(boom)  # a task that raises: a message panic each
            await trio.sleep(0.1)
            scheduler.stop()
    kinds: dict[str, int] = {}
    for record in caplog.records:
        message = record.getMessage()
        kind = message.split(" ", 3)[0] if message.startswith("Handle") else message[:20]
        kinds[kind] = kinds.get(kind, 0) + 1
    assert len(caplog.records) <= 3 * 10, kinds
    assert scheduler.log.suppressed_total == 3 * 500 - 3 * 10
