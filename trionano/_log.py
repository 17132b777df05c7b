"""Logging that a peer cannot abuse: safe rendering of peer-controlled text, and warnings rate-limited per kind.

- :func:`client_text` renders a route, a name, a chat message... as one bounded, escaped line, so that what a client
  sends can neither forge a log line (newline + fake timestamp), nor hide text (bidi overrides), nor drive the
  operator's terminal (escape sequences), nor fill the disk.
- :class:`RateLimitedLog` lets through at most ``per_window`` records of each *kind* ("unknown route", "slow
  consumer"...) per ``window`` seconds and counts the rest, so that a flood of bad requests costs a few records, not
  35 MB of WARNING (and not the time to write them, which other clients would wait for).
- :func:`flush_periodically` is the task an owner of such logs runs so that what they suppressed is reported
  within about a second of its window's end (a server, a cluster node, the push API's server each run one).
- :func:`logger` hands out the package's loggers, one per area (``trionano.agent``, ``trionano.router``...).

As everywhere in trionano, nothing here configures handlers or levels: that is the application's business.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Final, Literal, NoReturn, get_args

import trio

__all__ = ["AREAS", "FLUSH_PERIOD", "Area", "RateLimitedLog", "client_text", "flush_periodically", "logger"]

Area = Literal["server", "agent", "router", "session", "group", "scheduler", "websocket", "cluster", "client"]
"""The areas of trionano that log, each to the logger ``trionano.<area>``."""
AREAS: Final[frozenset[str]] = frozenset(get_args(Area))
LOGGER_NAMES: Final[frozenset[str]] = frozenset(f"trionano.{area}" for area in AREAS)


def logger(area: Area) -> logging.Logger:
    """The logger of one area of trionano: ``logging.getLogger("trionano." + area)``.

    Error handling: ValueError if ``area`` is not one of :data:`AREAS` (mypy catches it first: see :data:`Area`).
    """
    if area not in AREAS:
        raise ValueError(f"unknown logging area {area!r}; one of {sorted(AREAS)}")
    return logging.getLogger("trionano." + area)


# --- client_text --------------------------------------------------------------------------------------------------

MIN_LIMIT: Final = 40
"""The smallest ``limit`` of :func:`client_text`: room for the longest suffix (31 characters) and a few more."""

# One token of a str or bytes repr, after its opening quote: a character that needs no escape, or a whole escape.
# The longest run of whole tokens is where a truncated repr may be cut without splitting an escape.
_WHOLE_TOKENS: Final = re.compile(r"(?:[^\\]++|\\[\\'nrt]|\\x[0-9a-f]{2}|\\u[0-9a-f]{4}|\\U[0-9a-f]{8})*+")
_LONGEST_ESCAPE: Final = 10  # \U0010ffff


def client_text(value: str | bytes, limit: int = 200) -> str:
    """``value``, text a peer controls, rendered safely for a log message (as a ``%s`` argument).

    The rendering is Python's ``repr`` of ``value`` (so ``'chat.say'``, ``b'\\x00\\xff'``): every character that is
    not printable is escaped, which covers every Unicode category C* (controls, including terminal escapes and C1
    controls; format characters, including the U+202E bidi override; surrogates; private use; unassigned) and the
    separators other than the space (U+2028, U+2029, U+00A0...). The result is one line of printable characters.

    It is at most ``limit`` characters long. A longer rendering is cut (never inside an escape) and ends, instead
    of its closing quote, with ``...`` and the length of ``value``: ``'aaaa... (100000 chars)'``,
    ``b'\\x16\\x03... (517 bytes)``. Only the first ``limit`` characters or bytes of ``value`` are ever looked at:
    the cost does not grow with ``value``.

    Distinct values whose repr fits in ``limit`` render differently (str and bytes too), and a cut rendering cannot
    be confused with a whole one. In particular a str of up to ``limit - 2`` printable characters other than
    quotes and backslashes is rendered whole, and so is any str shorter than ``(limit - 2) // 10`` characters (an
    escape takes up to 10). No bound can keep every value shorter than ``limit`` distinct: there are more of those
    than printable strings of ``limit`` characters.

    Error handling: ValueError if ``limit`` is under :data:`MIN_LIMIT`; TypeError if ``value`` is neither str nor
    bytes. A str or bytes subclass is rendered as its base type (its own ``__repr__`` is not called).
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}, not {limit!r}")
    # Each character or byte renders as at least one character: the first `limit` are enough to fill `limit`.
    cls = type(value)
    if cls is str or cls is bytes:  # the common case, and the quickest
        rendering = repr(value[:limit])
    elif isinstance(value, str):  # a subclass: its own __getitem__ and __repr__ are not to be trusted
        rendering = str.__repr__(str.__getitem__(value, slice(limit)))
    elif isinstance(value, bytes):
        rendering = bytes.__repr__(bytes.__getitem__(value, slice(limit)))
    else:
        raise TypeError(f"client_text takes str or bytes, not {type(value).__name__}")
    if len(rendering) <= limit:  # then value was not cut: a cut one renders as at least limit + 2 characters
        return rendering
    if isinstance(value, str):
        suffix, opening = f"... ({len(value)} chars)", 1  # after '
    else:
        suffix, opening = f"... ({len(value)} bytes)", 2  # after b'
    head = rendering[: limit - len(suffix)]
    if head.find("\\", len(head) - _LONGEST_ESCAPE + 1) != -1:  # an escape may straddle the cut
        match = _WHOLE_TOKENS.match(head, opening)
        assert match is not None  # the pattern matches the empty string
        head = head[: match.end()]
    return head + suffix


# --- RateLimitedLog -----------------------------------------------------------------------------------------------

_ExcInfo = bool | BaseException | None


class _Kind:
    """What a RateLimitedLog remembers of one kind: its current window and what it suppressed in it."""

    __slots__ = ("emitted", "level", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start  # when the current window began (clock seconds)
        self.emitted = 0  # records let through in the current window
        self.suppressed = 0  # records dropped since the last report of them
        self.level = logging.NOTSET  # the highest level among those


class RateLimitedLog:
    """A :class:`logging.Logger` front that lets through at most ``per_window`` records of each kind per ``window``
    seconds, and reports how many it dropped.

    ``log.warning(kind, msg, *args)`` (and ``debug``, ``info``, ``error``, ``exception``, ``log(level, ...)``) logs
    ``msg % args`` to ``logger`` as ``logger.warning(msg, *args)`` would, unless ``per_window`` records of ``kind``
    were already let through in the current window of that kind. A window starts with the first record of its kind
    and lasts ``window`` seconds of ``clock``; the next record after it starts the next window. A dropped record is
    counted, never formatted (a suppressed call costs a level check, a clock reading, a dict look-up and a few
    comparisons; the arguments are still evaluated by the caller, so keep them cheap: :func:`client_text` is).
    The first record let through after some were dropped reports them, appended to its message: ``unknown route
    'x' (1234 similar messages suppressed in the last 10.0 s)``, whatever its level. A window that ends without a
    record of its kind after it is reported by the next record of *any* kind, or by :meth:`flush_due` (a server
    calls it every second: see ``Server.serve``), as its own record: ``1234 similar messages suppressed in the last
    10.0 s (unknown route)``; so a flood that stops is reported within a second of its window's end, with no task
    per kind. :meth:`flush` reports the counts still pending (call it at shutdown). A record below the logger's
    effective level is neither logged nor counted. Each method returns whether it logged the record.

    ``kind`` must be a constant string of the calling code, never text from a peer: the state kept per kind is what
    bounds this object's memory. As a guard, past ``max_kinds`` distinct kinds every new kind shares one overflow
    kind (an ERROR says so, once). ``msg`` is a constant %-format string too, and ``args`` positional (not the
    single mapping ``logging`` also accepts); peer-controlled arguments go through :func:`client_text`.

    Resource handling: owned by one server (or client, or node), never shared through a module global; call it from
    one thread. It holds ``logger`` and ``clock``, and a few numbers per kind.

    Error handling: the constructor raises ValueError unless ``per_window`` and ``max_kinds`` are at least 1 and
    ``window`` is positive and finite. The logging methods raise nothing of their own; ``clock`` errors propagate.
    """

    __slots__ = (
        "_clock",
        "_due",
        "_kinds",
        "_logger",
        "_max_kinds",
        "_overflow",
        "_per_window",
        "_window",
        "suppressed_total",
    )

    def __init__(
        self,
        logger: logging.Logger,
        *,
        per_window: int = 10,
        window: float = 10.0,
        max_kinds: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_window < 1:
            raise ValueError(f"per_window must be at least 1, not {per_window!r}")
        if not (window > 0 and window < float("inf")):
            raise ValueError(f"window must be positive and finite, not {window!r}")
        if max_kinds < 1:
            raise ValueError(f"max_kinds must be at least 1, not {max_kinds!r}")
        self._logger: Final = logger
        self._per_window: Final = per_window
        self._window: Final = float(window)
        self._max_kinds: Final = max_kinds
        self._clock: Final = clock
        self._kinds: Final[dict[str, _Kind]] = {}
        self._overflow: _Kind | None = None
        self._due = math.inf  # the earliest end of a window with records dropped and not reported
        self.suppressed_total = 0
        """Records dropped since construction, over all kinds."""

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    def debug(self, kind: str, msg: str, *args: object, exc_info: _ExcInfo = None) -> bool:
        return self._log(logging.DEBUG, kind, msg, args, exc_info)

    def info(self, kind: str, msg: str, *args: object, exc_info: _ExcInfo = None) -> bool:
        return self._log(logging.INFO, kind, msg, args, exc_info)

    def warning(self, kind: str, msg: str, *args: object, exc_info: _ExcInfo = None) -> bool:
        return self._log(logging.WARNING, kind, msg, args, exc_info)

    def error(self, kind: str, msg: str, *args: object, exc_info: _ExcInfo = None) -> bool:
        return self._log(logging.ERROR, kind, msg, args, exc_info)

    def exception(self, kind: str, msg: str, *args: object, exc_info: _ExcInfo = True) -> bool:
        """:meth:`error` with the exception being handled (as :meth:`logging.Logger.exception`)."""
        return self._log(logging.ERROR, kind, msg, args, exc_info)

    def log(self, level: int, kind: str, msg: str, *args: object, exc_info: _ExcInfo = None) -> bool:
        return self._log(level, kind, msg, args, exc_info)

    def pending(self, kind: str) -> int:
        """How many records of ``kind`` were dropped and not yet reported."""
        state = self._kinds.get(kind)
        return 0 if state is None else state.suppressed

    def flush(self) -> int:
        """Log, for each kind with dropped records not yet reported, one record saying how many, at the highest
        level among them; return the total reported. The windows go on: this lets nothing more through."""
        return self._report(self._clock(), ended_only=False)

    def flush_due(self) -> int:
        """:meth:`flush` for the kinds whose window has ended only (what a record of any kind would report); return
        the total reported. Costs a clock reading and a comparison when there is nothing to report."""
        now = self._clock()
        return self._report(now, ended_only=True) if now >= self._due else 0

    def _report(self, now: float, *, ended_only: bool) -> int:
        total = 0
        due = math.inf
        window = self._window
        states = list(self._kinds.items())
        if self._overflow is not None:
            states.append(("kinds beyond max_kinds", self._overflow))
        for kind, state in states:
            if state.suppressed:
                if ended_only and now - state.start < window:
                    due = min(due, state.start + window)
                    continue
                self._logger.log(
                    state.level,
                    "%d similar messages suppressed in the last %.1f s (%s)",
                    state.suppressed,
                    now - state.start,
                    kind,
                )
                total += state.suppressed
                state.suppressed = 0
                state.level = logging.NOTSET
        self._due = due
        return total

    def _log(self, level: int, kind: str, msg: str, args: tuple[object, ...], exc_info: _ExcInfo) -> bool:
        logger = self._logger
        if not logger.isEnabledFor(level):
            return False
        now = self._clock()
        state = self._kinds.get(kind)
        if state is None:
            state = self._new_kind(kind, now)
        reported, elapsed = 0, 0.0
        if now - state.start >= self._window:
            reported, elapsed = state.suppressed, now - state.start
            state.start = now
            state.emitted = state.suppressed = 0
            state.level = logging.NOTSET
        elif state.emitted >= self._per_window:
            state.suppressed += 1
            if level > state.level:
                state.level = level
            self.suppressed_total += 1
            due = state.start + self._window
            if due < self._due:
                self._due = due
            elif now >= self._due:  # another kind's window has ended with records dropped: report them
                self._report(now, ended_only=True)
            return False
        if now >= self._due:  # another kind's window has ended with records dropped: report them first
            self._report(now, ended_only=True)
        state.emitted += 1
        if reported:
            if not args:
                msg = msg.replace("%", "%%")  # no args: logging would not have %-formatted msg
            msg += " (%d similar messages suppressed in the last %.1f s)"
            args = (*args, reported, elapsed)
        # stacklevel 3: the record names our caller (the caller of warning() etc.), not this module
        logger.log(level, msg, *args, exc_info=exc_info, stacklevel=3)
        return True

    def _new_kind(self, kind: str, now: float) -> _Kind:
        if len(self._kinds) < self._max_kinds:
            state = self._kinds[kind] = _Kind(now)
            return state
        if self._overflow is None:
            self._overflow = _Kind(now)
            self._logger.error(
                "more than %d kinds of rate-limited messages: the next ones share one limit (kinds must be constant"
                " strings; this one is %s)",
                self._max_kinds,
                client_text(kind),
                stacklevel=4,  # the caller of warning() etc.
            )
        return self._overflow


#: How often :func:`flush_periodically` reports the windows that have ended, in seconds.
FLUSH_PERIOD: Final = 1.0


async def flush_periodically(logs: Iterable[RateLimitedLog], *, period: float = FLUSH_PERIOD) -> NoReturn:
    """Every ``period`` seconds (1), :meth:`RateLimitedLog.flush_due` each of ``logs``: a flood that stops is
    reported within about ``period`` of its window's end, not at the next record of its kind, which may never come.
    A comparison per log when there is nothing to report.

    Never returns: run it as a task of the logs' owner (one task for all its logs), cancelled when the owner stops;
    the owner then calls :meth:`RateLimitedLog.flush` on each, once nothing more is logged to them (what the last
    windows suppressed)."""
    owned = tuple(logs)
    while True:
        await trio.sleep(period)
        for log in owned:
            log.flush_due()
