"""Ordinary events that asyncio and grpclib log on their own loggers, routed to trionano's.

A peer that stops, resumes or goes away makes asyncio log ``socket.send() raised exception.``
(WARNING, once a write to a lost connection has failed five times) and grpclib's server log
``Request was cancelled: Stream reset by remote party`` or ``Deadline exceeded`` (INFO, a
caller that gave up). Neither is a fault of this node, and both bypass trionano's loggers
and their rate limits. While a node runs (:func:`~._bridge.run`), a filter on those two
loggers drops these records and logs them on ``trionano.cluster`` at DEBUG, rate-limited
(what that log suppresses is reported every second by a task of the run, and when the block
ends); every other record goes through unchanged."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Final

from .._log import RateLimitedLog

__all__ = ["quiet_ordinary_events"]

_ORDINARY: Final = {
    ("asyncio", "socket.send() raised exception."): "a connection was lost while writing to it (asyncio: %s)",
    ("grpclib.server", "Request was cancelled: %s"): "a call was cancelled by its caller (grpclib: %s)",
    ("grpclib.server", "Deadline exceeded"): "a call's deadline passed (grpclib: %s)",
}


class _Ordinary(logging.Filter):
    def __init__(self, log: RateLimitedLog) -> None:
        super().__init__()
        self._log = log

    def filter(self, record: logging.LogRecord) -> bool:
        text = _ORDINARY.get((record.name, record.msg)) if isinstance(record.msg, str) else None
        if text is None:
            return True
        self._log.debug(record.msg, text, record.getMessage())
        return False


@contextlib.contextmanager
def quiet_ordinary_events() -> Iterator[RateLimitedLog]:
    """Route asyncio's and grpclib's records of ordinary events to ``trionano.cluster`` at
    DEBUG while the block runs (the filters are removed after it, and what was suppressed is
    reported). Yields the rate-limited log they go to: the block's owner reports it
    periodically (:func:`~trionano._log.flush_periodically`)."""
    log = RateLimitedLog(logging.getLogger("trionano.cluster"))
    ordinary = _Ordinary(log)
    loggers = [logging.getLogger(name) for name in ("asyncio", "grpclib.server")]
    for logger in loggers:
        logger.addFilter(ordinary)
    try:
        yield log
    finally:
        for logger in loggers:
            logger.removeFilter(ordinary)
        log.flush()  # what the last windows suppressed
