"""A gate killed (SIGKILL: no SessionClosed goes out) and started again at once on the same
address registers again before the master would evict it: the master tells the others the old
process left (DelMember) before it answers, so every backend ends the previous process's
clients' sessions and runs their close hooks (attack3 t11: the backend held them forever; nano
leaks them too, §5.3)."""

from __future__ import annotations

from pathlib import Path

import trio

from ._harness import cluster, free_address
from .test_eviction import _answered, _hears


async def test_a_gate_restarted_at_its_address_ends_its_predecessors_sessions(tmp_path: Path) -> None:
    # a long heartbeat: the master would evict the killed gate only after 4 x 5 s
    async with cluster(tmp_path, heartbeat=5.0) as c:
        await c.start("master", "master", c.master)
        await c.start("chat", "chat", free_address())
        gate1 = free_address()
        await c.start("gate1", "gate", gate1, "--gate-address", c.gate_client)
        other_client = free_address()
        await c.start("gate2", "gate", free_address(), "--gate-address", other_client)
        async with c.client(other_client) as bob:  # type: ignore[attr-defined]
            await bob.request("BindService.Login", {"nickname": "bob"})
            async with c.client() as ann:  # type: ignore[attr-defined]
                await ann.request("BindService.Login", {"nickname": "ann"})
                with trio.fail_after(20):
                    await _hears(bob, ann, "ann", "before")
                await c.kill("gate1")
            assert "remote session(s) ended" not in c.log("chat")
            await c.start("gate1-again", "gate", gate1, "--gate-address", c.gate_client)
            await c.wait_log("master", "registered again", seconds=30)
            chat = await c.wait_log("chat", "remote session(s) ended", seconds=30)
            assert f"gate {gate1} is gone: 1 remote session(s) ended" in chat
            await c.wait_log("master", f"gate {gate1} is gone: 1 remote session(s) ended", seconds=30)
            # the gate that stayed is untouched, and the new process serves
            async with c.client() as cid:  # type: ignore[attr-defined]
                await cid.request("BindService.Login", {"nickname": "cid"})
                with trio.fail_after(20):
                    await _hears(bob, cid, "cid", "hello")
                    await _hears(cid, bob, "bob", "welcome")
                    await _answered(bob, "still served")
        assert "evicted" not in c.log("master")
        assert f"gate {gate1} is gone: 1 " in c.log("chat")  # once: bob's gate lost nothing
        assert c.log("chat").count("is gone") == 1
