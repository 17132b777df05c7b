"""A master that was itself stopped (SIGSTOP) or starved for longer than its eviction window
evicts no member that kept heartbeating: the time it could not hear is not counted as the
members' silence (attack3 t3: frozen 12 s at heartbeat 2 s, it evicted every member as it
resumed, and the backends ended the gates' clients' sessions while those stayed connected)."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from ._harness import cluster, free_address
from .test_eviction import _answered, _hears


async def test_a_frozen_master_evicts_no_healthy_member_when_it_resumes(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("master", "master", c.master)
        await c.start("chat", "chat", free_address())
        other_client = free_address()
        await c.start("gate1", "gate", free_address(), "--gate-address", c.gate_client)
        await c.start("gate2", "gate", free_address(), "--gate-address", other_client)
        async with c.client() as ann, c.client(other_client) as bob:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})
            await bob.request("BindService.Login", {"nickname": "bob"})
            with trio.fail_after(20):
                await _hears(bob, ann, "ann", "before")
            c.signal("master", signal.SIGSTOP)
            for _ in range(int(10 * c.heartbeat / 0.25)):  # 10 heartbeats: far past the 4 of eviction
                await ann.request("BindService.Login", {"nickname": "ann"})  # the gates keep serving
                await trio.sleep(0.25)
            c.signal("master", signal.SIGCONT)
            await c.wait_log("master", "late (stopped or starved)", seconds=30)
            await trio.sleep(8 * c.heartbeat)  # two eviction windows after it resumed
            with trio.fail_after(20):
                await _hears(bob, ann, "ann", "after")  # the backend still has both in the room
                await _hears(ann, bob, "bob", "after too")
                await _answered(ann, "after")
        assert "evicted" not in c.log("master")
        assert "re-appeared" not in c.log("master")
        assert "remote session(s) ended" not in c.log("chat")


async def test_a_frozen_master_still_evicts_a_member_that_died_meanwhile(tmp_path: Path) -> None:
    """The other side of it: only the time the master could not hear is excused; a member
    killed while the master was frozen is evicted once the master has heard the others."""
    async with cluster(tmp_path) as c:
        await c.start("master", "master", c.master)
        chat = free_address()
        await c.start("chat", "chat", chat)
        await c.start("gate", "gate", free_address(), "--gate-address", c.gate_client)
        c.signal("master", signal.SIGSTOP)
        await c.kill("chat")
        await trio.sleep(10 * c.heartbeat)
        c.signal("master", signal.SIGCONT)
        await c.wait_log("master", "late (stopped or starved)", seconds=30)
        content = await c.wait_log("master", "evicted", seconds=30)
        evicted = [line for line in content.splitlines() if "evicted" in line]
        assert len(evicted) == 1, evicted
        assert chat in evicted[0], evicted
