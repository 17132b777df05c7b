"""Running a server as a program: SIGINT and SIGTERM become the graceful shutdown.

``trionano.run(server, *endpoints)`` is the one obvious way to run a server from a script:
Ctrl-C or a ``kill`` kicks every client with reason "shutdown", runs the components' shutdown
hooks and returns, without a traceback. A second signal while shutting down stops at once.
Inside an existing ``trio.run``, :func:`serve_until_signalled` does the same as a task.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
from typing import Final

import trio

from ._listen import Endpoint
from ._server import Server

__all__ = ["GC_THRESHOLDS", "SHUTDOWN_SIGNALS", "run", "serve_until_signalled", "tune_gc"]

#: The signals that shut a server down gracefully.
SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

_logger = logging.getLogger("trionano.server")

#: The cyclic garbage collector's thresholds :func:`tune_gc` sets (CPython's are 700, 10, 10).
GC_THRESHOLDS: Final = (20_000, 10, 6_000)


def tune_gc() -> None:
    """Set CPython's cyclic garbage collector up for a long-running server, once it has
    started: the objects alive now (modules, classes, components: never garbage) are frozen
    out of every later collection (``gc.freeze``), and the thresholds become
    :data:`GC_THRESHOLDS`: the youngest generation is collected every 20,000 net allocations
    instead of 700, the middle one every 10 of those (CPython's own ratio), and a full
    collection may run after 6,000 middle ones (and, as always in CPython, only once the
    objects promoted since the last full one reach a quarter of what it kept, and only from
    an automatic collection).

    Why: each waiting task holds a few fresh objects (its coroutine frames); with a thousand
    connections, thousands of them are alive at every young collection, survive it, and push
    the collector into frequent full collections of every object the server holds. Measured
    (bench/runtime.py B1, 1,000 connections): about 20 CPU-us per request in the collector
    with the defaults, under 1 with these. The middle generation stays at CPython's 10: a
    middle collection walks everything promoted since the last, and with 50,000 members
    receiving broadcasts a multiplier of 50 made it 20-40 ms. Full collections walk every
    object the sessions hold (1.3-1.4 s at 50,000 sessions, 3.7 million objects, on
    bench/push.py's machine), so they are kept rare: a large broadcast collects the young and
    middle generations itself every 2,048 members it reaches (see :mod:`trionano._fanout`,
    1 ms each), six times as often as CPython's cadence would, and each of those counts
    towards a full one; the full threshold is 6,000 rather than 1,000 so that a server
    broadcasting to large groups has its full collections no sooner than before. Elsewhere
    the full threshold hardly matters: 6,000 middle collections are 1.3 billion net
    allocations (1,000: 220 million). Garbage in reference cycles that has lived long waits
    for a full collection (a closed connection leaves none: reference counting frees it).

    Process-wide: :func:`run` calls it unless told not to; a program that runs the server
    otherwise may call it itself. ``gc.unfreeze()`` and ``gc.set_threshold`` undo it."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve_until_signalled(
    server: Server,
    *endpoints: Endpoint,
    gc_tuning: bool = False,
    task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``server`` on ``endpoints`` until SIGINT or SIGTERM, then shut it down gracefully
    (:meth:`Server.shutdown`); a second signal cancels it at once. ``task_status.started`` gets
    the bound ports. ``gc_tuning``: call :func:`tune_gc` once the server listens. Must run in
    the main thread (Trio's signal rules). Returns once the server has stopped; raises what
    :meth:`Server.serve` raises."""
    with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            ports: list[int] = await nursery.start(functools.partial(server.serve, *endpoints))
            if gc_tuning:
                tune_gc()
            task_status.started(ports)

            async def watch() -> None:
                async for signum in signals:
                    if not server.is_stopping:
                        _logger.info("%s: shutting down gracefully", signal.Signals(signum).name)
                        server.shutdown()
                    else:
                        _logger.warning("%s again: stopping now", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await server.wait_stopped()
            nursery.cancel_scope.cancel()


def run(server: Server, *endpoints: Endpoint, gc_tuning: bool = True) -> None:
    """Serve ``server`` on ``endpoints`` in a new Trio run until SIGINT or SIGTERM (see
    :func:`serve_until_signalled`). For a script's ``if __name__ == "__main__":``. The process
    is the server's: once it listens, the garbage collector is tuned for it (:func:`tune_gc`)
    unless ``gc_tuning`` is False."""
    trio.run(functools.partial(serve_until_signalled, server, *endpoints, gc_tuning=gc_tuning))
