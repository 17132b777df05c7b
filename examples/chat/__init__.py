"""nano's chat demo on trionano (nano.md §6.1): a room everyone joins, messages broadcast to all.

Routes: ``room.join`` (Request) and ``room.message`` (Notify); pushes: ``onMembers``,
``onNewUser``, ``onMessage``. Run it with ``python -m examples.chat --port 3250``.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import attrs
import trio

import trionano
from trionano import Component, Components, Config, Group, HandlerError, Pipeline, PipelineMessage, Session

logger = logging.getLogger("examples.chat")

#: Route compression for every route and push of the demo (``--dict``).
ROUTES = trionano.wire.RouteDict({"room.join": 1, "room.message": 2, "onMembers": 3, "onNewUser": 4, "onMessage": 5})


@attrs.frozen
class UserMessage:
    name: str
    content: str


@attrs.define
class Traffic:
    """The demo's pipeline: counts the bytes of message bodies in and out."""

    inbound: int = 0
    outbound: int = 0

    def count_in(self, session: Session, message: PipelineMessage) -> None:
        self.inbound += len(message.data)

    def count_out(self, session: Session, message: PipelineMessage) -> None:
        self.outbound += len(message.data)

    def pipeline(self) -> Pipeline:
        pipeline = Pipeline()
        pipeline.inbound.push_back(self.count_in)
        pipeline.outbound.push_back(self.count_out)
        return pipeline


class RoomManager(Component):
    """Registered as service ``room`` with lower-cased handler names, as in nano's demo."""

    def __init__(self, traffic: Traffic) -> None:
        self.room = Group("room")
        self.traffic = traffic

    def after_init(self) -> None:
        self.server.on_session_closed(self.leave)
        self.server.scheduler.every(60, self.report)

    def report(self) -> None:
        logger.info(
            "UserCount: %d, bytes in: %d, bytes out: %d", self.room.count(), self.traffic.inbound, self.traffic.outbound
        )

    def leave(self, session: Session) -> None:
        if not self.room.closed:
            self.room.leave(session)

    def join(self, session: Session, msg: bytes) -> dict[str, Any]:
        session.bind(session.id)
        # nano's members slice is nil for the first user, which Go writes as null
        session.push("onMembers", {"members": self.room.members() or None})
        self.room.broadcast("onNewUser", {"content": f"New user: {session.id}"})
        self.room.add(session)
        return {"code": 0, "result": "success"}

    def message(self, session: Session, msg: UserMessage) -> None:
        if session not in self.room:
            raise HandlerError("not join room yet")
        self.room.broadcast("onMessage", msg)


def build(*, use_dict: bool = False, heartbeat: float = 30.0) -> tuple[trionano.Server, RoomManager]:
    """The demo's server, not yet running."""
    traffic = Traffic()
    room = RoomManager(traffic)
    components = Components()
    components.register(room, name="room", name_func=str.lower)
    config = Config(
        heartbeat=heartbeat,
        routes=ROUTES if use_dict else trionano.wire.RouteDict(),
        pipeline=traffic.pipeline(),
        logger_name="examples.chat",
    )
    return trionano.Server(components, config), room


async def main(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    use_dict: bool = False,
    heartbeat: float = 30.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the chat over TCP until SIGINT/SIGTERM; reports the bound port."""
    server, _ = build(use_dict=use_dict, heartbeat=heartbeat)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: trionano.serve_tcp(server, port, host=host, task_status=task_status)
        )
        logger.info("chat server on tcp://%s:%d", host, port)
        task_status.started(port)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                logger.info("shutting down")
                server.shutdown()
                break
