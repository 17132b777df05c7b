"""A member the master evicted (silent for four heartbeats: a frozen or partitioned process)
that comes back is announced to every other member again, as a registration would be, and the
clients that stayed connected through it go on: forwarding resumes through every gate, and a
backend keeps its stand-ins for the clients of gates that never left (only the master's
DelMember says a gate left; a failed stream to it is opened anew)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import trio

from trionano.client import Client

from ._harness import cluster, free_address


async def _hears(listener: Client, sender: Client, name: str, content: str) -> None:
    """``sender`` says ``content`` in the room until ``listener`` hears it (other lines that
    arrive meanwhile, earlier ones included, are skipped)."""
    while True:
        await sender.notify("RoomService.SyncMessage", {"name": name, "content": content})
        with trio.move_on_after(1):
            while (await listener.receive_push("onMessage")) != {"name": name, "content": content}:
                pass
            return


async def _answered(client: Client, content: str) -> Any:
    """A forwarded Request to the chat backend, repeated until the backend's handler answers it
    (the example's handler answers a Request 500: it returns nothing) rather than the gate
    refusing it (404: nobody hosts the route; 503: the member failed)."""
    while True:
        answer = await client.request("RoomService.SyncMessage", {"name": "probe", "content": content}, timeout=10)
        if not (isinstance(answer, dict) and answer.get("code") in (404, 503)):
            return answer
        await trio.sleep(0.2)


async def _stopped_backend_comes_back(tmp_path: Path, stopped: str) -> None:
    async with cluster(tmp_path) as c:
        await c.start("master", "master", c.master)
        await c.start("chat", "chat", free_address())
        other_client = free_address()
        await c.start("gate1", "gate", free_address(), "--gate-address", c.gate_client)
        await c.start("gate2", "gate", free_address(), "--gate-address", other_client)
        async with c.client() as ann, c.client(other_client) as bob:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})
            await ann.receive_push("onMembers")
            await bob.request("BindService.Login", {"nickname": "bob"})
            await bob.receive_push("onMembers")
            with trio.fail_after(10):
                await _hears(bob, ann, "ann", "before")
            first = await _answered(ann, "before")

            c.signal(stopped, signal.SIGSTOP)  # long past 4 heartbeats: evicted
            await c.wait_log("master", "evicted", seconds=30)
            await trio.sleep(4 * c.heartbeat)
            c.signal(stopped, signal.SIGCONT)
            await c.wait_log("master", "re-appeared through its heartbeat", seconds=30)

            with trio.fail_after(30):  # generous: a loaded machine; it never resumed before the fix
                assert await _answered(ann, "after, gate 1") == first
                assert await _answered(bob, "after, gate 2") == first
                # both clients stayed connected through it: still in the room, both ways
                await _hears(bob, ann, "ann", "after")
                await _hears(ann, bob, "bob", "after too")
        assert "remote session(s) ended" not in c.log("chat")


async def test_an_evicted_backend_that_comes_back_serves_both_gates_again(tmp_path: Path) -> None:
    await _stopped_backend_comes_back(tmp_path, "chat")


async def test_an_evicted_gate_that_comes_back_learns_the_members_it_missed(tmp_path: Path) -> None:
    """The other direction: the gate is the member evicted, and the backend joins while it is
    frozen (the master no longer lists the gate, so it is not told). Back, the gate is told
    the members as a registration would tell it: its clients reach the new backend."""
    async with cluster(tmp_path) as c:
        await c.start("master", "master", c.master)
        await c.start("gate1", "gate", free_address(), "--gate-address", c.gate_client)
        other_client = free_address()
        await c.start("gate2", "gate", free_address(), "--gate-address", other_client)
        c.signal("gate2", signal.SIGSTOP)
        await c.wait_log("master", "evicted", seconds=30)
        await c.start("chat", "chat", free_address())
        c.signal("gate2", signal.SIGCONT)
        await c.wait_log("master", "re-appeared through its heartbeat", seconds=30)
        async with c.client() as ann, c.client(other_client) as bob:  # type: ignore[attr-defined]
            with trio.fail_after(30):
                await ann.request("BindService.Login", {"nickname": "ann"})
                await bob.request("BindService.Login", {"nickname": "bob"})  # gate2 -> master -> chat
                await _answered(bob, "through gate 2")  # gate 2 knows the chat backend
                await _hears(ann, bob, "bob", "hello")
                await _hears(bob, ann, "ann", "welcome")
