"""Running a server as a program: SIGINT and SIGTERM become the graceful shutdown.

``trionano.run(server, *endpoints)`` is the one obvious way to run a server from a script:
Ctrl-C or a ``kill`` kicks every client with reason "shutdown", runs the components' shutdown
hooks and returns, without a traceback. A second signal while shutting down stops at once.
Inside an existing ``trio.run``, :func:`serve_until_signalled` does the same as a task.
"""

from __future__ import annotations

import functools
import logging
import signal
from typing import Final

import trio

from ._listen import Endpoint
from ._server import Server

__all__ = ["SHUTDOWN_SIGNALS", "run", "serve_until_signalled"]

#: The signals that shut a server down gracefully.
SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

_logger = logging.getLogger("trionano.server")


async def serve_until_signalled(
    server: Server, *endpoints: Endpoint, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``server`` on ``endpoints`` until SIGINT or SIGTERM, then shut it down gracefully
    (:meth:`Server.shutdown`); a second signal cancels it at once. ``task_status.started`` gets
    the bound ports. Must run in the main thread (Trio's signal rules). Returns once the server
    has stopped; raises what :meth:`Server.serve` raises."""
    with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            ports: list[int] = await nursery.start(functools.partial(server.serve, *endpoints))
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


def run(server: Server, *endpoints: Endpoint) -> None:
    """Serve ``server`` on ``endpoints`` in a new Trio run until SIGINT or SIGTERM (see
    :func:`serve_until_signalled`). For a script's ``if __name__ == "__main__":``."""
    trio.run(functools.partial(serve_until_signalled, server, *endpoints))
