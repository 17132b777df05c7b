"""The cluster with real processes on loopback: nano's three-node scenario (nano.md §5.8, with
examples/cluster's services), a backend killed and replaced, a master restarted."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from ._harness import HEARTBEAT, cluster, free_port


async def test_three_nodes_as_nanos_scenario(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.standard()
        # every node's sorted view of the cluster, as nano's TestNodeStartup checks them
        gate_log = c.logs["gate"].read_text()
        assert "local ['BindService'], remote ['RoomService', 'TopicService']" in gate_log
        assert "local ['RoomService'], remote ['TopicService']" in c.logs["chat"].read_text()
        # a node's remote services are the others' (nano's master: ["GameComponent", "GateComponent"])
        master_log = await c.wait_log("master", "remote services now ['BindService', 'RoomService']")
        assert "remote services now ['RoomService']" in master_log
        assert "RuntimeWarning" not in master_log + gate_log
        async with c.client() as ann, c.client() as bob:  # type: ignore[attr-defined]
            assert await ann.request("BindService.Login", {"nickname": "ann"}) == {}  # gate, local
            assert await ann.receive_push("onMembers") == {"members": ""}  # from chat, via the master's RPC
            assert await bob.request("BindService.Login", {"nickname": "bob"}) == {}
            assert await bob.receive_push("onMembers") == {"members": "ann"}
            assert await ann.receive_push("onNewUser") == {"content": "New user: bob"}  # chat, via the RPC chain
            await ann.notify("RoomService.SyncMessage", {"name": "ann", "content": "hi ✓"})  # forwarded notify
            assert await bob.receive_push("onMessage") == {"name": "ann", "content": "hi ✓"}
            assert await ann.receive_push("onBalance") == {"currentBalance": 999}  # chat -> master RPC
            answer = await ann.request("BindService.BindChatServer", {})
            assert answer == {"code": 500, "message": "not implement"}
            # a request to a remote service, and to one nobody hosts
            assert (await ann.request("NoSuchService.Call", {}))["code"] == 404


async def test_a_killed_backend_is_answered_evicted_and_replaced(tmp_path: Path) -> None:
    # a 2 s keepalive: the request right after the kill meets the dead member (503) at least
    # 6 s before the master evicts it (a 0.5 s one left a loaded machine ~1.5 s, else 404)
    async with cluster(tmp_path, heartbeat=2) as c:
        await c.standard()
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})
            await c.kill("chat")
            # forwarding to the dead member fails: the client is answered, not left waiting
            answer = await ann.request("RoomService.SyncMessage", {"name": "ann", "content": "x"})
            assert answer["code"] == 503
            # the master evicts it within 4 heartbeats and tells the gate
            await c.wait_log("master", "evicted", seconds=4 * c.heartbeat + 30)
            await c.wait_log("master", "member 127.0.0.1:", seconds=30)
            with trio.fail_after(30):  # the gate hears of it (DelMember): nobody hosts RoomService now
                while (await ann.request("RoomService.SyncMessage", {"name": "ann", "content": "x"}))["code"] != 404:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            # a new backend takes over
            await c.start("chat2", "chat", f"127.0.0.1:{free_port()}")
            with trio.fail_after(30):
                while True:
                    await ann.notify("RoomService.JoinRoom", {"nickname": "ann", "gateUid": 1, "masterUid": 1})
                    await ann.notify("RoomService.SyncMessage", {"name": "ann", "content": "back"})
                    with trio.move_on_after(0.5):
                        assert await ann.receive_push("onMessage") == {"name": "ann", "content": "back"}
                        break


async def test_a_restarted_master_rebuilds_from_heartbeats(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.standard()
        await c.kill("master")
        before = len(c.log("master"))
        await c.start("master", "master", c.master)
        # the new master learns each member from a heartbeat, as nano's: here the one a member
        # sends when its stream to the master ends (test_master_restart: without the keepalive)
        with trio.fail_after(30):
            while True:
                learnt = re.findall(r"member (\S+) re-appeared through its heartbeat", c.log("master")[before:])
                if len(set(learnt)) >= 2:  # the chat backend and the gate
                    break
                await trio.sleep(0.1)
        # a node joining now sees the members the master relearned
        await c.start("chat2", "chat", f"127.0.0.1:{free_port()}")
        chat2 = c.logs["chat2"].read_text()
        assert "local ['RoomService'], remote ['BindService', 'RoomService', 'TopicService']" in chat2
        async with c.client() as ann:  # type: ignore[attr-defined]
            assert await ann.request("BindService.Login", {"nickname": "ann"}) == {}
            assert await ann.receive_push("onMembers") == {"members": ""}


async def test_a_member_restarting_at_its_address_replaces_itself(tmp_path: Path) -> None:
    # a 30 s keepalive: the master would evict the killed chat after 2 minutes of silence, long
    # after the new one registered (with 0.5 s, a new process slower than 2 s to start on a
    # loaded machine found its predecessor evicted)
    async with cluster(tmp_path, heartbeat=30) as c:
        await c.standard()
        chat_address = c.logs["chat"].read_text().split("node ", 1)[1].split(" up:", 1)[0]
        await c.kill("chat")
        await c.start("chat", "chat", chat_address)  # before the master would evict it
        registered = f"member {chat_address} registered"
        with trio.fail_after(30):
            while (master_log := c.logs["master"].read_text()).count(registered) < 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert "evicted" not in master_log
        assert (
            re.findall(r"remote services now (.*)", master_log)[-1] == "['BindService', 'RoomService']"
        )  # no duplicate
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})  # gate -> master -> the new chat
            with trio.fail_after(30):  # the new chat serves (its JoinRoom arrives on its own time)
                while True:
                    await ann.notify("RoomService.SyncMessage", {"name": "ann", "content": "again"})
                    with trio.move_on_after(0.5):
                        assert await ann.receive_push("onMessage") == {"name": "ann", "content": "again"}
                        break


async def test_sessions_end_everywhere_when_the_client_leaves_or_its_gate_dies(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.standard()
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})  # gate -> master -> chat
            await ann.receive_push("onMembers")
        # ann left cleanly: SessionClosed reaches the chat too, though only the master forwarded to it
        async with c.client() as bob, c.client() as cid:  # type: ignore[attr-defined]
            await bob.request("BindService.Login", {"nickname": "bob"})
            await bob.receive_push("onMembers")
            await cid.request("BindService.Login", {"nickname": "cid"})
            await cid.receive_push("onMembers")
            await trio.sleep(0.5)  # the master's JoinRoom RPCs reach the chat
            await c.kill("gate")  # now no SessionClosed will ever come: the gate's eviction ends them
            await c.wait_log("master", "evicted", seconds=4 * HEARTBEAT + 30)
            await c.wait_log("chat", "is gone: 2 remote session(s) ended", seconds=30)
            await c.wait_log("master", "is gone: 2 remote session(s) ended", seconds=30)


async def test_custom_route_shards_users_by_uid(tmp_path: Path) -> None:
    async with cluster(tmp_path, "examples.customerroute") as c:
        await c.start("master", "master", c.master)
        chats = sorted(f"127.0.0.1:{free_port()}" for _ in range(2))
        for n, address in enumerate(chats):
            await c.start(f"chat{n}", "chat", address)
        await c.start("gate", "gate", f"127.0.0.1:{free_port()}", "--gate-address", c.gate_client)
        await c.wait_log("gate", "remote ['ChatRoomService']")
        async with c.client() as u1, c.client() as u2, c.client() as u3, c.client() as u4:  # type: ignore[attr-defined]
            users = [u1, u2, u3, u4]
            servers = []
            for n, user in enumerate(users, 1):
                assert await user.request("RegisterService.Login", {"nickname": f"u{n}"}) == {"uid": n}
                servers.append((await user.receive_push("onJoined"))["server"])
            # nano's selector: members[uid % len(members)], here over the sorted addresses
            assert servers == [chats[1], chats[0], chats[1], chats[0]]
            await u1.notify("ChatRoomService.SendMessage", {"name": "u1", "content": "hello"})  # sticky: chats[1]
            for user in (u1, u3):
                assert await user.receive_push("onMessage") == {"name": "u1", "content": "hello", "server": chats[1]}
            await u2.notify("ChatRoomService.SendMessage", {"name": "u2", "content": "other room"})
            for user in (u2, u4):
                assert (await user.receive_push("onMessage"))["server"] == chats[0]
            assert u1.pending_pushes("onMessage") == 0  # u1 never saw the other room's message
