"""Going away is normal: clients closing with requests in flight through a gate, and calls
arriving at a stopping node, end quietly (no traceback, at most one line), and a stopping node
answers UNAVAILABLE, never grpclib's "Application error" (UNKNOWN)."""

from __future__ import annotations

from pathlib import Path

import trio

from ._harness import cluster

NOISE = ("Traceback", "Application error", "UNKNOWN", "BrokenResourceError")


async def test_clients_leaving_with_requests_in_flight_log_at_most_a_line(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.standard()
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})
            await ann.receive_push("onMembers")
        marks = {name: len(c.log(name)) for name in ("master", "chat", "gate")}
        for n in range(4):
            async with c.client() as user:  # type: ignore[attr-defined]
                await user.request("BindService.Login", {"nickname": f"u{n}"})
                async with trio.open_nursery() as nursery:
                    for _ in range(30):
                        nursery.start_soon(user.notify, "RoomService.SyncMessage", {"name": f"u{n}", "content": "x"})
                        nursery.start_soon(user.request, "RoomService.SyncMessage", {"name": f"u{n}", "content": "y"})
                    await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()
            # closed abruptly: requests unanswered, pushes and responses on their way
        await trio.sleep(1.5)
        for name, mark in marks.items():
            tail = c.log(name)[mark:]
            for noise in NOISE:
                assert noise not in tail, (name, tail)
            warnings = [
                line
                for line in tail.splitlines()
                if (" WARNING " in line or " ERROR " in line)
                and "without answering" not in line  # SyncMessage is a Notify handler: a Request to it is answered 500
            ]
            assert len(warnings) <= 4, (name, warnings)  # at most one line per client that left
