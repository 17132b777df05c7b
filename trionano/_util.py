"""Small shared helpers: calling users' callbacks, and nurseries that never wrap errors."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

__all__ = ["call_user", "call_user_logged", "open_nursery_around", "passes_through"]


def passes_through(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a user's callback (a handler, hook, validator, pipeline
    function, timer), must propagate past the guard around it rather than be logged and
    answered: ``trio.Cancelled`` (its cancel scope catches it), ``KeyboardInterrupt`` (Ctrl-C
    stops the server; Trio may deliver it inside any callback), ``GeneratorExit`` (the frame is
    being closed), or a group holding any of those. Anything else, ``SystemExit`` included, is
    one callback's failure: a client's request must never end the server."""
    if isinstance(exc, (trio.Cancelled, KeyboardInterrupt, GeneratorExit)):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup((trio.Cancelled, KeyboardInterrupt, GeneratorExit)) is not None
    return False


async def call_user(func: Callable[..., object], *args: Any) -> object:
    """Call a user's callback that may be sync or async; await its result if awaitable.
    Returns what it returned; raises what it raised."""
    result = func(*args)
    if result is not None and inspect.isawaitable(result):
        result = await result
    return result


async def call_user_logged(logger: logging.Logger, what: str, func: Callable[..., object], *args: Any) -> bool:
    """:func:`call_user`, logging (with the traceback) instead of raising an ``Exception``:
    the one place a user's hook may fail without taking its caller down. ``what`` names the
    hook in the log line. Returns whether it succeeded. What :func:`passes_through` names
    (``trio.Cancelled``, ``KeyboardInterrupt``...) propagates; ``SystemExit`` is logged."""
    try:
        await call_user(func, *args)
    except BaseException as exc:
        if passes_through(exc):
            raise
        logger.exception("%s failed", what)
        return False
    return True


@asynccontextmanager
async def open_nursery_around(on_exit: Callable[[trio.Nursery], None]) -> AsyncIterator[trio.Nursery]:
    """A nursery for background tasks around a ``with`` block, whose own exception comes out
    as itself, never wrapped in an ExceptionGroup (so users of trionano's context managers
    catch what they expect). ``on_exit(nursery)`` runs when the block ends, to stop the
    background tasks (cancel them, or ask them to wind down)."""
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            yield nursery
        except trio.Cancelled:
            raise
        except BaseException as exc:
            error = exc
        finally:
            on_exit(nursery)
    if error is not None:
        raise error
