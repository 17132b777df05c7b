"""Where the frames that come in over a node's streams go (Trio side): requests, notifies and
session ends to the stand-ins (:mod:`._remote`), replies and pushes for this node's clients to
the gate (:mod:`._gate`), cluster-wide pushes to the push hub (:mod:`._push`). One batch at a
time, in order, per stream."""

from __future__ import annotations

import logging

from .._log import RateLimitedLog
from . import _frames as frames
from ._gate import Gate
from ._links import Link
from ._push import PushHub
from ._remote import RemoteSessions

__all__ = ["FrameReceiver"]

_logger = logging.getLogger("trionano.cluster")


class FrameReceiver:
    """The node's :class:`~._links.Receiver`."""

    def __init__(self, gate: Gate, remote: RemoteSessions, push: PushHub, log: RateLimitedLog) -> None:
        self._gate = gate
        self._remote = remote
        self._push = push
        self._log = log

    async def receive(self, link: Link, batch: list[frames.Frame]) -> None:
        gate, remote = self._gate, self._remote
        for frame in batch:
            try:
                match frame:
                    case frames.Request():
                        await remote.on_request(link, frame)
                    case frames.Response():
                        gate.on_response(frame)
                    case frames.Notify():
                        await remote.on_notify(link, frame)
                    case frames.Push(sid, route, data):
                        gate.on_push(sid, route, data)
                    case frames.SessionClosed(sid):
                        remote.on_session_closed(sid)
                    case frames.CloseSession(sid):
                        gate.on_close_session(sid)
                    case frames.Error():
                        gate.on_error(frame)
                    case frames.PushBatch(data):
                        self._push.on_push_batch(data)  # never waits: the stream is read on
                    case frames.Audit(sids):
                        gate.on_audit(link, sids)
            except Exception:  # a bug here must not end the stream for everyone else
                self._log.error("frame", "frame %s from %s failed", type(frame).__name__, link.peer, exc_info=True)

    def link_down(self, link: Link) -> None:
        self._gate.link_down(link)
