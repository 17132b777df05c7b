"""Session ids are unique across the cluster with no configuration: any number of gates of
the example serve the users of one room (a backend keys other gates' sessions by id: Go nano
by id alone), and one user leaving ends no one else."""

from __future__ import annotations

from pathlib import Path

import trio

from ._harness import cluster, free_address


async def test_two_gates_serve_one_room(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("master", "master", c.master)
        await c.start("chat", "chat", free_address())
        other_client = free_address()
        await c.start("gate1", "gate", free_address(), "--gate-address", c.gate_client)
        await c.start("gate2", "gate", free_address(), "--gate-address", other_client)
        async with c.client() as ann:  # type: ignore[attr-defined]
            async with c.client(other_client) as bob:  # type: ignore[attr-defined]
                await ann.request("BindService.Login", {"nickname": "ann"})
                await ann.receive_push("onMembers")
                await bob.request("BindService.Login", {"nickname": "bob"})
                assert await bob.receive_push("onMembers") == {"members": "ann"}
                assert await ann.receive_push("onNewUser") == {"content": "New user: bob"}
                for sender, name, content in ((ann, "ann", "from gate 1"), (bob, "bob", "from gate 2")):
                    await sender.notify("RoomService.SyncMessage", {"name": name, "content": content})
                    for user in (ann, bob):
                        assert await user.receive_push("onMessage") == {"name": name, "content": content}
                assert await ann.receive_push("onBalance") == {"currentBalance": 999}
                assert await bob.receive_push("onBalance") == {"currentBalance": 999}
            await trio.sleep(1)  # bob's SessionClosed reaches every member
            # bob left: ann is still in the room, on the master and on chat
            await ann.notify("RoomService.SyncMessage", {"name": "ann", "content": "still here"})
            with trio.fail_after(30):
                assert await ann.receive_push("onMessage") == {"name": "ann", "content": "still here"}
                assert await ann.receive_push("onBalance") == {"currentBalance": 998}
