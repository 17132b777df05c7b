"""A backend's stand-ins for a gate's clients end when their client has, even when the gate's
SessionClosed cannot arrive (nano leaks them, §5.6):

- the backend was frozen past its eviction while clients left (attack3 t9): the gate no longer
  listed it and told it nothing; back, it asks the gate which of its stand-ins have ended;
- the gate died while the master was down (attack3 t14): no DelMember can come; nothing has
  listened at the gate's address for the eviction window, so its clients are gone too.

Stand-ins of clients still connected are kept throughout."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import trio

from ._harness import Cluster, cluster, free_address


async def _seats(c: Cluster) -> None:
    await c.start("master", "master", c.master)
    await c.start_command("seats", ["-m", "tests.cluster._seats", "--listen", free_address()])
    await c.start("gate", "gate", free_address(), "--gate-address", c.gate_client)


async def _take(client: Any) -> str:
    with trio.fail_after(30):
        while True:  # until the gate has heard of the backend (NewMember)
            answer = await client.request("Seats.take", {})
            if "seat" in answer:
                seat: str = answer["seat"]
                return seat
            await trio.sleep(0.1)


async def test_a_backend_back_from_eviction_ends_the_stand_ins_of_clients_gone_meanwhile(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await _seats(c)
        async with c.client() as bob:  # type: ignore[attr-defined]
            kept = await _take(bob)
            async with c.client() as ann:  # type: ignore[attr-defined]
                gone = await _take(ann)
                c.signal("seats", signal.SIGSTOP)
                await c.wait_log("master", "evicted", seconds=30)
            await trio.sleep(4 * c.heartbeat)  # ann left while the backend was evicted and frozen
            c.signal("seats", signal.SIGCONT)
            await c.wait_log("master", "re-appeared through its heartbeat", seconds=30)
            await c.wait_log("seats", f"seat freed {gone}", seconds=30)
            await trio.sleep(8 * c.heartbeat)  # two more audits
            assert f"seat freed {kept}" not in c.log("seats")
            assert await _take(bob) == kept  # served again (once the gate has heard of it again)


async def test_a_gate_that_dies_while_the_master_is_down_has_its_stand_ins_ended(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await _seats(c)
        async with c.client() as ann:  # type: ignore[attr-defined]
            seat = await _take(ann)
            await c.kill("master")
            await trio.sleep(4 * c.heartbeat)  # the backend's audits find the gate alive meanwhile
            assert "seat freed" not in c.log("seats")
            await c.kill("gate")
        log = await c.wait_log("seats", f"seat freed {seat}", seconds=30)
        assert "refused every connection" in log


async def test_a_backend_stops_pushing_to_a_gate_whose_connection_is_refused(tmp_path: Path) -> None:
    """attack3 t14: with no master to evict the dead gate, the backend pushed to it and logged
    the loss at every cluster push, forever; the gate that lives gets every push."""
    async with cluster(tmp_path) as c:
        await _seats(c)
        dead = c.log("gate").split("node ")[1].split(" up:")[0]
        other_client = free_address()
        await c.start("gate2", "gate", free_address(), "--gate-address", other_client)
        async with c.client(other_client) as bob:  # type: ignore[attr-defined]
            await _take(bob)  # the backend has heard of both gates
            await c.kill("master")
            await c.kill("gate")
            for i in range(30):
                assert (await bob.request("Seats.push_all", {"i": i}))["gates"] >= 1
                assert await bob.receive_push("onAll") == {"i": i}
                await trio.sleep(0.1)
        losses = [line for line in c.log("seats").splitlines() if f"to {dead} lost" in line]
        assert len(losses) <= 2, losses  # found refused at once: not pushed to again
        assert f"member {dead} unreachable" in c.log("seats")


async def test_a_session_end_a_unary_member_missed_is_sent_again_when_it_answers(tmp_path: Path) -> None:
    """attack3 t9 without the fast path: a backend that speaks only nano's unary calls (as a Go
    node) cannot be audited; the gate's SessionClosed to it, frozen, timed out and was lost. It
    is owed, and sent again until the backend answers (here after its eviction and return)."""
    async with cluster(tmp_path) as c:
        await c.start("master", "master", c.master)
        await c.start_command("seats", ["-m", "tests.cluster._seats", "--listen", free_address(), "--no-fast-path"])
        await c.start("gate", "gate", free_address(), "--gate-address", c.gate_client)
        async with c.client() as bob:  # type: ignore[attr-defined]
            kept = await _take(bob)
            async with c.client() as ann:  # type: ignore[attr-defined]
                gone = await _take(ann)
                c.signal("seats", signal.SIGSTOP)
            await c.wait_log("gate", "SessionClosed to", seconds=30)  # failed: the deadline passed
            c.signal("seats", signal.SIGCONT)
            await c.wait_log("seats", f"seat freed {gone}", seconds=30)
            await c.wait_log("gate", "session end(s) owed to", seconds=30)
            assert f"seat freed {kept}" not in c.log("seats")
            assert await _take(bob) == kept  # served again (once the gate has heard of it again)
