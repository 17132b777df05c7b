"""Only the gate that owns a client session announces its end (nano: the gate's reader, and
no one else, sends SessionClosed). A backend ending its stand-in for another gate's client,
whatever the reason, must not: its own ids mean nothing to the others, and where one equals a
live session's id on a gate, the others would end that user."""

from __future__ import annotations

from pathlib import Path

import trio

from trionano.client import Client

from ._harness import HEARTBEAT, Cluster, cluster, free_address


async def with_recorder(c: Cluster) -> None:
    """The standard cluster plus a foreign (Go-like) member that logs every call it gets."""
    await c.standard()
    recorder = free_address()
    await c.start_command("recorder", ["-m", "tests.cluster._recorder", "--listen", recorder])
    await c.wait_log("master", "remote services now ['BindService', 'Recorder', 'RoomService']")
    for name in ("gate", "chat"):  # the master's NewMember reaches the others
        await c.wait_log(name, f"told of member '{recorder}'")


async def in_the_room(user: Client, name: str) -> None:
    """Say hi until ``user`` hears itself: then chat has run its JoinRoom. Login's chain of
    RPCs (gate -> master -> chat's JoinRoom) runs on its own time, as nano's, and nothing
    orders it with the client's next message, which the gate forwards straight to chat: a
    SyncMessage that gets there first finds the user outside the room and unbound (its Stats
    RPC names uid 0, and the master, which knows no such user, pushes no onBalance). The
    first hi heard came after JoinRoom, so its Stats is the first the master counts."""
    with trio.fail_after(30):
        while True:
            await user.notify("RoomService.SyncMessage", {"name": name, "content": "hi"})
            with trio.move_on_after(0.5):
                await user.receive_push("onMessage")
                return


def closed_ids(c: Cluster) -> list[int]:
    return [int(line.split()[1]) for line in c.log("recorder").splitlines() if line.startswith("SessionClosed ")]


async def test_a_client_leaving_is_announced_once_by_its_gate(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await with_recorder(c)
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})  # gate -> master -> chat (RPCs)
            await ann.receive_push("onMembers")
            await in_the_room(ann, "ann")  # SyncMessage: chat -> master RPC
            assert await ann.receive_push("onBalance") == {"currentBalance": 999}
        await c.wait_log("recorder", "SessionClosed ")
        await trio.sleep(1)  # whatever else would come
        # the gate's one announcement; the master and chat (which called session.rpc on their
        # stand-ins of ann's session) used to send their own internal ids as well
        assert len(closed_ids(c)) == 1


async def test_backends_ending_a_dead_gates_sessions_announce_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await with_recorder(c)
        async with c.client() as ann, c.client() as bob:  # type: ignore[attr-defined]
            for user, name in ((ann, "ann"), (bob, "bob")):
                await user.request("BindService.Login", {"nickname": name})
                await in_the_room(user, name)
                await user.receive_push("onBalance")
            await c.kill("gate")  # no SessionClosed from it; its eviction ends the stand-ins
            await c.wait_log("chat", "is gone: 2 remote session(s) ended", seconds=4 * HEARTBEAT + 30)
            await c.wait_log("master", "is gone: 2 remote session(s) ended", seconds=30)
        await trio.sleep(1)
        assert closed_ids(c) == []
