"""nano's cluster demo (nano.md §6.3): a master, a gate and a chat backend, JSON throughout.

- master: ``TopicService`` (NewUser, Stats); also answers Login's RPC.
- gate: ``BindService`` (Login); clients connect to ``ws://GATE/nano``.
- chat: ``RoomService`` (JoinRoom, SyncMessage).

Pushes: onMembers, onNewUser and onMessage (from chat), onBalance (master).
The gate -> master -> chat RPC chain carries the client's gate and session id, so chat's
pushes go straight to the gate. One command per process, as nano's::

    python -m examples.cluster master --listen 127.0.0.1:34567
    python -m examples.cluster chat --listen 127.0.0.1:34580 --master 127.0.0.1:34567
    python -m examples.cluster gate --listen 127.0.0.1:34570 --gate-address 127.0.0.1:34590 --master 127.0.0.1:34567

Start as many gates (or chats) as you like, each with its own addresses: session ids are unique
across the cluster without configuration. Or all three at once: ``python -m examples.cluster local``.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from trionano import Component, Components, Config, Group, HandlerError, Session
from trionano.cluster import ClusterConfig, MemberInfo, Node

logger = logging.getLogger("examples.cluster")


@attrs.frozen
class LoginRequest:
    nickname: str


@attrs.frozen
class NewUserRequest:
    nickname: str
    gateUid: int  # nano's field names, as the JS client sends them


@attrs.frozen
class JoinRoomRequest:
    nickname: str
    gateUid: int
    masterUid: int
    members: str | None = None  # the others' nicknames, comma-separated (nano's master sends none)


@attrs.frozen
class MasterStats:
    uid: int


@attrs.frozen
class SyncMessage:
    name: str
    content: str


class BindService(Component):
    """On the gate."""

    def __init__(self) -> None:
        self.next_uid = 0

    def Login(self, session: Session, msg: LoginRequest) -> dict[str, Any]:  # nano's route names
        self.next_uid += 1
        session.bind(self.next_uid)
        session.rpc("TopicService.NewUser", {"nickname": msg.nickname, "gateUid": session.uid})
        return {}

    def BindChatServer(self, session: Session, msg: dict[str, Any]) -> None:
        raise HandlerError("not implement")


class TopicService(Component):
    """On the master."""

    def __init__(self) -> None:
        self.next_uid = 0
        self.users: dict[int, dict[str, Any]] = {}

    def after_init(self) -> None:
        self.server.on_session_closed(self.closed)

    def closed(self, session: Session) -> None:  # not a handler: no message argument
        self.users.pop(session.uid, None)

    def NewUser(self, session: Session, msg: NewUserRequest) -> None:
        self.next_uid += 1
        session.bind(self.next_uid)
        names = ",".join(user["nickname"] for user in self.users.values())
        self.users[session.uid] = {"nickname": msg.nickname, "balance": 1000}
        # chat seats the user in its room, then pushes the member list (nano's demo pushes it
        # from here, before the RPC): the client answers onMembers by talking to the room,
        # through the gate straight to chat, and nothing would order that path after this RPC
        session.rpc(
            "RoomService.JoinRoom",
            {"nickname": msg.nickname, "gateUid": msg.gateUid, "masterUid": session.uid, "members": names},
        )

    def Stats(self, session: Session, msg: MasterStats) -> None:
        user = self.users.get(msg.uid)
        if user is None:  # nano's too: logged, nothing pushed
            raise HandlerError(f"User not found: {msg.uid}")
        user["balance"] -= 1
        session.push("onBalance", {"currentBalance": user["balance"]})


class RoomService(Component):
    """On the chat backend."""

    def __init__(self) -> None:
        self.room = Group("room")

    def after_init(self) -> None:
        self.server.on_session_closed(self.closed)

    def closed(self, session: Session) -> None:
        if not self.room.closed:
            self.room.leave(session)

    def JoinRoom(self, session: Session, msg: JoinRoomRequest) -> None:
        session.bind(msg.masterUid)
        self.room.broadcast("onNewUser", {"content": f"New user: {msg.nickname}"})
        self.room.add(session)
        if msg.members is not None:  # from our master; nano's pushes onMembers itself
            session.push("onMembers", {"members": msg.members})  # seated: the client may talk now

    def SyncMessage(self, session: Session, msg: SyncMessage) -> None:
        session.rpc("TopicService.Stats", {"uid": session.uid})
        self.room.broadcast("onMessage", {"name": msg.name, "content": msg.content})


def build(role: str, *, listen: str, master: str, heartbeat: float = 30.0, label: str = "") -> Node:
    """The node for ``role`` ("master", "gate" or "chat"), not yet running."""
    components = Components()
    component: Component = {"master": TopicService, "gate": BindService, "chat": RoomService}[role]()
    components.register(component)

    def unregistered(member: MemberInfo) -> None:
        logger.info("member %s left the cluster", member.service_addr)

    config = ClusterConfig(
        service_address=listen,
        master_address=None if role == "master" else master,
        is_master=role == "master",
        label=label or role,
        heartbeat=heartbeat,
        unregister_callback=unregistered if role == "master" else None,
    )
    return Node(components, config, Config(heartbeat=heartbeat))
