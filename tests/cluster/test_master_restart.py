"""A master killed and restarted at its address: the members notice that their stream to it
ended and heartbeat it again (with a bounded backoff) until it answers, so the new master
learns every live member soon after it is back, not at their next keepalive; clients of the
gate are served all along by what does not need the master.

The keepalive is 300 s here: the members' regular heartbeats never come within the test's
deadlines, so only the stream's loss can bring the members back to the new master."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from ._harness import cluster, free_address

KEEPALIVE = 300.0


async def test_a_restarted_master_learns_every_member_without_waiting_for_their_keepalive(tmp_path: Path) -> None:
    async with cluster(tmp_path, heartbeat=KEEPALIVE) as c:
        chat, gate = free_address(), free_address()
        await c.start("master", "master", c.master)
        await c.start("chat", "chat", chat)
        await c.start("gate", "gate", gate, "--gate-address", c.gate_client)
        async with c.client() as ann:  # type: ignore[attr-defined]
            # ann stays connected to the gate throughout
            assert await ann.request("BindService.Login", {"nickname": "ann"}) == {}  # gate -> master -> chat
            assert await ann.receive_push("onMembers") == {"members": ""}
            await ann.notify("RoomService.SyncMessage", {"name": "ann", "content": "before"})
            assert await ann.receive_push("onMessage") == {"name": "ann", "content": "before"}

            await c.kill("master")
            # the master is away: the gate's local routes and the backends it knows still serve ann
            answer = await ann.request("BindService.BindChatServer", {})  # the gate's own handler
            assert answer == {"code": 500, "message": "not implement"}
            await ann.notify("RoomService.SyncMessage", {"name": "ann", "content": "while the master is away"})
            assert await ann.receive_push("onMessage") == {"name": "ann", "content": "while the master is away"}

            await c.start("master-again", "master", c.master)
            # (a) the new master lists both members (before the fix: at their next keepalive, 300 s on)
            with trio.fail_after(30):
                while True:
                    log = c.log("master-again")
                    learnt = set(re.findall(r"member (\S+) (?:re-appeared through its heartbeat|registered)", log))
                    if {chat, gate} <= learnt:
                        break
                    await trio.sleep(0.1)
            # (b) a client served through the gate after the restart, along the whole chain: the
            # gate's Login, its RPC to the new master, the master's RPC to chat, chat's push
            async with c.client() as bob:  # type: ignore[attr-defined]
                with trio.fail_after(30):
                    assert await bob.request("BindService.Login", {"nickname": "bob"}) == {}
                    assert await bob.receive_push("onMembers") == {"members": ""}  # the new master's users
                    assert await ann.receive_push("onNewUser") == {"content": "New user: bob"}
                    await bob.notify("RoomService.SyncMessage", {"name": "bob", "content": "after"})
                    assert await ann.receive_push("onMessage") == {"name": "bob", "content": "after"}
            assert ann.error is None  # (c) connected throughout
        # (d) re-appearing through a heartbeat is no new process: nothing the backend held ends
        assert "remote session(s) ended" not in c.log("chat")
        # the members noticed the stream's end, and retried with a backoff, not a busy loop
        for member in ("chat", "gate"):
            member_log = c.log(member)
            assert "ended: heartbeating it until it answers" in member_log, member
            assert member_log.count("heartbeat to the master failed") <= 1, member  # logged once per outage
