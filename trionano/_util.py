"""Small shared helpers: calling users' callbacks, and nurseries that never wrap errors."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

__all__ = ["call_user", "call_user_logged", "open_nursery_around"]


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
    hook in the log line. Returns whether it succeeded; ``trio.Cancelled`` passes through."""
    try:
        await call_user(func, *args)
    except Exception:
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
