"""A member whose connection is refused (its process was killed) is not chosen for new sessions
until it accepts connections again, whether or not the master is there to evict it (attack3
t18: with the master down, about half of the new sessions were answered 503 for as long as
the test ran)."""

from __future__ import annotations

from pathlib import Path

from ._harness import cluster, free_address


async def _first_answer_code(c: object, gate_client: str) -> int | None:
    """503 when the gate could not reach the chat backend it chose for the new session; else
    the code of the backend's own answer (500: the example's handler answers nothing; 503
    from a backend whose own rpc finds no master is its answer, not the gate's refusal, and
    comes out as 500 here)."""
    async with c.client(gate_client) as client:  # type: ignore[attr-defined]
        answer = await client.request("RoomService.SyncMessage", {"name": "x", "content": "hi"}, timeout=20)
    if not isinstance(answer, dict):
        return None
    if answer.get("code") == 503 and not str(answer.get("message", "")).startswith("RoomService unavailable"):
        return 500  # a chat backend answered (its rpc to the master found none: ServiceNotFound)
    return answer.get("code")


async def test_a_killed_backend_is_not_chosen_for_new_sessions(tmp_path: Path) -> None:
    async with cluster(tmp_path, heartbeat=30.0) as c:  # the master evicts nobody during the test
        await c.start("master", "master", c.master)
        await c.start("chat1", "chat", free_address())
        chat2 = free_address()
        await c.start("chat2", "chat", chat2)
        await c.start("gate", "gate", free_address(), "--gate-address", c.gate_client)
        codes = [await _first_answer_code(c, c.gate_client) for _ in range(6)]
        assert 503 not in codes, codes  # both serve (the example's handler answers 500)

        await c.kill("master")  # no eviction can come to the rescue
        await c.kill("chat2")
        codes = [await _first_answer_code(c, c.gate_client) for _ in range(20)]
        # the first session that chose it may be refused; none after it
        assert codes.count(503) <= 1, codes
        assert 503 not in codes[-10:], codes
        gate = c.log("gate")
        assert f"member {chat2} unreachable" in gate
        assert gate.count(f"member {chat2} unreachable") == 1  # once, not per session

        # it comes back (its registration cannot succeed: the master is gone): chosen again
        await c.start("chat2-again", "chat", chat2, ready="")
        await c.wait_log("gate", f"member {chat2} accepts connections again", seconds=30)
        codes = [await _first_answer_code(c, c.gate_client) for _ in range(6)]
        assert 503 not in codes, codes
