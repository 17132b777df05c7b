"""A hung backend never gets healthy clients kicked: a gate's reader hands forwarded messages
to the session's forwarding queue and goes on reading (heartbeats, local routes); a forwarded
Request is answered 503 at the RPC deadline; per-session order is kept; the queue is bounded."""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from ._harness import cluster

RPC_TIMEOUT = 5.0  # the example's (ClusterConfig's default)


async def test_a_frozen_backend_answers_503_at_the_deadline_and_the_client_stays(tmp_path: Path) -> None:
    async with cluster(tmp_path, heartbeat=2) as c:  # clients heartbeat every 2 s: kicked at 4 s of silence
        await c.standard()
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})
            await ann.receive_push("onMembers")
            c.signal("chat", signal.SIGSTOP)
            try:
                started = trio.current_time()
                async with trio.open_nursery() as nursery:

                    async def local_meanwhile() -> None:
                        await trio.sleep(1)
                        with trio.fail_after(1):  # the gate's reader is free: local routes are served
                            answer = await ann.request("BindService.BindChatServer", {})
                        assert answer == {"code": 500, "message": "not implement"}

                    nursery.start_soon(local_meanwhile)
                    answer = await ann.request("RoomService.SyncMessage", {"name": "ann", "content": "x"})
                elapsed = trio.current_time() - started
                assert answer["code"] == 503
                assert RPC_TIMEOUT - 0.5 < elapsed < RPC_TIMEOUT + 1.5
                # still connected: heartbeats were read all along
                assert await ann.request("BindService.BindChatServer", {}) == {"code": 500, "message": "not implement"}
            finally:
                c.signal("chat", signal.SIGCONT)
            assert "heartbeat timeout" not in c.log("gate")
