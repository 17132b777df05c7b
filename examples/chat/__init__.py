"""nano's chat demo on trionano (nano.md §6.1): a room everyone joins, messages broadcast to all.

Routes: ``room.join`` (Request) and ``room.message`` (Notify); pushes: ``onMembers``,
``onNewUser``, ``onMessage``. Unlike nano's demo, which shows session ids, users are shown by
name: ``room.join`` may carry ``{"name": ...}`` (without one a user is ``user <id>``), the
members list and the join line carry names, and a message from a user who joined with a name
carries that name whatever the message says. Run it with ``python -m examples.chat --port 3250
--ws-port 3251`` and open http://127.0.0.1:3251/: the page and its WebSocket share that port, as in nano.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import attrs
import trio

import trionano
from trionano import Component, Components, Config, Group, HandlerError, Pipeline, PipelineMessage, Session

logger = logging.getLogger("examples.chat")
WEB = Path(__file__).resolve().parent / "web"

#: Route compression for every route and push of the demo (``--dict``).
ROUTES = trionano.wire.RouteDict({"room.join": 1, "room.message": 2, "onMembers": 3, "onNewUser": 4, "onMessage": 5})


@attrs.frozen
class UserMessage:
    """What a client says. Defaults make a missing field read as Go's zero value, as nano's
    JSON decoding does: the official pomelo client may send only ``{"content": ...}``."""

    name: str = ""
    content: str = ""


@attrs.frozen
class JoinRequest:
    """What a client joins with: nano's demo sends ``{}``, our page ``{"name": ...}``."""

    name: str = ""


#: The name a session joined with (absent: it joined without one).
NAME = trionano.SessionKey[str]("name")


def display_name(session: Session) -> str:
    return session.get(NAME) or f"user {session.id}"


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

    def join(self, session: Session, msg: JoinRequest) -> dict[str, Any]:
        session.bind(session.id)
        name = msg.name.strip()[:40]
        if name:
            session[NAME] = name
        # nano's members slice is nil for the first user, which Go writes as null
        members = [display_name(member) for member in self.room.sessions()]
        session.push("onMembers", {"members": members or None})
        self.room.broadcast("onNewUser", {"content": f"New user: {display_name(session)}"})
        self.room.add(session)
        return {"code": 0, "result": "success"}

    def message(self, session: Session, msg: UserMessage) -> None:
        if session not in self.room:
            raise HandlerError("not join room yet")
        name = session.get(NAME)
        self.room.broadcast("onMessage", msg if name is None else attrs.evolve(msg, name=name))


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
    )
    return trionano.Server(components, config), room


async def main(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ws_port: int | None = None,
    use_dict: bool = False,
    heartbeat: float = 30.0,
    task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the chat over TCP (and, with ``ws_port``, WebSocket plus the page) until
    SIGINT/SIGTERM; reports the bound ports: [tcp] or [tcp, ws]."""
    server, _ = build(use_dict=use_dict, heartbeat=heartbeat)
    endpoints: list[trionano.Endpoint] = [trionano.TCPEndpoint(host, port)]
    if ws_port is not None:
        endpoints.append(
            trionano.WebSocketEndpoint(
                host, ws_port, static_dir=WEB, static_files={"/trionano.js": trionano.BROWSER_CLIENT}
            )
        )
    async with trio.open_nursery() as nursery:
        ports: list[int] = await nursery.start(functools.partial(trionano.serve_until_signalled, server, *endpoints))
        logger.info("chat server: tcp://%s:%d", host, ports[0])
        if ws_port is not None:
            logger.info("chat page and WebSocket: open http://%s:%d/", host, ports[1])
        task_status.started(ports)
