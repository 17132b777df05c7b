"""In-process timing for bench servers: where a loaded server's pauses come from.

:class:`Trace` records, with ``time.perf_counter`` (CLOCK_MONOTONIC, comparable across the
processes of one machine), every cyclic-GC collection (generation, duration, objects
collected, the objects in the generations it walks with ``sizes``, and its thread CPU time,
which another process on the same core does not stretch) through ``gc.callbacks``, and, as a
Trio instrument, every scheduler batch (the run between two I/O waits: its duration, thread
CPU time, task steps) and every task step longer than ``long_step``. ``dump(path)`` writes
them as JSON for an analysis beside a client's own timestamps (bench/push.py ``--trace``).
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

import trio

__all__ = ["Trace"]


class Trace(trio.abc.Instrument):
    def __init__(self, *, steps: bool = True, sizes: bool = False, long_step: float = 0.0005) -> None:
        # start, s, generation, collected, sizes, CPU s
        self.gc: list[tuple[float, float, int, int, list[int], float]] = []
        self.batches: list[tuple[float, float, float, int]] = []  # start, seconds, CPU seconds, steps
        self.long_steps: list[tuple[float, float, str]] = []  # start, seconds, task name
        self._gc_start = 0.0
        self._gc_cpu = 0.0
        self._sizes = sizes  # objects in each generation collected (counted outside the pause)
        self._gc_sizes: list[int] = []
        self._batch_start = 0.0
        self._batch_cpu = 0.0
        self._steps = 0
        self._long = long_step
        self._step_hooks = _StepHooks(self) if steps else None

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)
        trio.lowlevel.add_instrument(self)
        if self._step_hooks is not None:
            trio.lowlevel.add_instrument(self._step_hooks)
        self._batch_start = time.perf_counter()
        self._batch_cpu = time.thread_time()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            if self._sizes:
                self._gc_sizes = [len(gc.get_objects(g)) for g in range(info["generation"] + 1)]
            self._gc_cpu = time.thread_time()
            self._gc_start = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_start
            cpu = time.thread_time() - self._gc_cpu
            self.gc.append((self._gc_start, took, info["generation"], info["collected"], self._gc_sizes, cpu))

    def after_io_wait(self, timeout: float) -> None:
        self._batch_start = time.perf_counter()
        self._batch_cpu = time.thread_time()
        self._steps = 0

    def before_io_wait(self, timeout: float) -> None:
        now = time.perf_counter()
        self.batches.append(
            (self._batch_start, now - self._batch_start, time.thread_time() - self._batch_cpu, self._steps)
        )

    def dump(self, path: str) -> None:
        with open(path, "w") as out:
            json.dump({"gc": self.gc, "batches": self.batches, "long_steps": self.long_steps}, out)


class _StepHooks(trio.abc.Instrument):
    """The per-step hooks (costlier: two calls per task step)."""

    def __init__(self, trace: Trace) -> None:
        self._trace = trace
        self._start = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._start = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        trace = self._trace
        trace._steps += 1
        took = time.perf_counter() - self._start
        if took > trace._long:
            trace.long_steps.append((self._start, took, task.name))
