"""Pipelines: functions that see every message on its way in (before deserialization) and
out (after serialization), and may rewrite its body (nano.md §4.8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from .wire import MessageType

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["Pipeline", "PipelineChannel", "PipelineFunc", "PipelineMessage"]


@attrs.define
class PipelineMessage:
    """The message a pipeline function sees; it may replace ``data``."""

    type: MessageType
    route: str
    data: bytes
    id: int = 0


PipelineFunc = Callable[["Session", PipelineMessage], None]


class PipelineChannel:
    """An ordered list of functions. Run by the server: a function that raises drops the
    message (the server logs it); the functions after it do not run.

    ``funcs`` is the functions now, in order (a tuple, replaced when one is added: every
    message's path tests it, and a tuple's truth costs no call)."""

    def __init__(self) -> None:
        self.funcs: tuple[PipelineFunc, ...] = ()

    def push_front(self, func: PipelineFunc) -> None:
        self.funcs = (func, *self.funcs)

    def push_back(self, func: PipelineFunc) -> None:
        self.funcs = (*self.funcs, func)

    def __bool__(self) -> bool:
        return bool(self.funcs)

    def __len__(self) -> int:
        return len(self.funcs)

    def process(self, session: Session, message: PipelineMessage) -> None:
        """Run every function in order; their exceptions propagate to the caller."""
        for func in self.funcs:
            func(session, message)


class Pipeline:
    """``inbound`` runs before a handler's body is deserialized; ``outbound`` after a Push or
    Response is serialized, before it is queued for the connection. Control packets bypass it.

    An outbound function that leaves ``data`` as it is keeps a broadcast's shared encoding; one
    that rewrites it costs one more encode for that session."""

    def __init__(self) -> None:
        self.inbound = PipelineChannel()
        self.outbound = PipelineChannel()
