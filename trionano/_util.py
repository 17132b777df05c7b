"""Small shared helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

__all__ = ["open_nursery_around"]


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
