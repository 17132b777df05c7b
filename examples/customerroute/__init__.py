"""nano's customerroute demo (nano.md §6.4): users sharded over two chat backends by uid.

The gate's ``RegisterService.Login`` binds an increasing uid, RPCs ``ChatRoomService.JoinRoom``
and answers; its custom route selector picks ``members[uid % len(members)]`` (sorted by
address), and the choice sticks to the session. Users on the same backend see each other's
``onMessage``. One command per process::

    python -m examples.customerroute master --listen 127.0.0.1:34567
    python -m examples.customerroute chat --listen 127.0.0.1:34580
    python -m examples.customerroute chat --listen 127.0.0.1:34581
    python -m examples.customerroute gate --listen 127.0.0.1:34570 --gate-address 127.0.0.1:34590
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from trionano import Component, Components, Config, Group, Session
from trionano.cluster import ClusterConfig, MemberInfo, Node


@attrs.frozen
class LoginRequest:
    nickname: str


@attrs.frozen
class ChatMessage:
    name: str
    content: str


class RegisterService(Component):
    """On the gate."""

    def __init__(self) -> None:
        self.next_uid = 0

    def Login(self, session: Session, msg: LoginRequest) -> dict[str, Any]:  # nano's route names
        self.next_uid += 1
        session.bind(self.next_uid)
        session.rpc("ChatRoomService.JoinRoom", {"nickname": msg.nickname, "uid": session.uid})
        return {"uid": session.uid}


class ChatRoomService(Component):
    """On each chat backend: one room per backend."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.room = Group("room")

    def after_init(self) -> None:
        self.server.on_session_closed(self.closed)

    def closed(self, session: Session) -> None:
        if not self.room.closed:
            self.room.leave(session)

    def JoinRoom(self, session: Session, msg: dict[str, Any]) -> None:
        session.bind(msg["uid"])
        self.room.add(session)
        session.push("onJoined", {"server": self.label, "members": self.room.members()})

    def SendMessage(self, session: Session, msg: ChatMessage) -> None:
        self.room.broadcast("onMessage", {"name": msg.name, "content": msg.content, "server": self.label})


def by_uid(service: str, session: Session, members: Sequence[MemberInfo]) -> MemberInfo | None:
    """nano's demo selector: ``members[uid % len(members)]``, over a stable order."""
    ordered = sorted(members, key=lambda member: member.service_addr)
    return ordered[session.uid % len(ordered)] if ordered else None


def build(role: str, *, listen: str, master: str, heartbeat: float = 30.0) -> Node:
    components = Components()
    if role == "gate":
        components.register(RegisterService())
    elif role == "chat":
        components.register(ChatRoomService(listen))
    config = ClusterConfig(
        service_address=listen,
        master_address=None if role == "master" else master,
        is_master=role == "master",
        label=role,
        heartbeat=heartbeat,
        remote_route=by_uid if role == "gate" else None,
    )
    return Node(components, config, Config(heartbeat=heartbeat))
