"""A gate tells a client's end only to the members that may hold a stand-in for it: not to a
member that hosts no service (a stand-in is made only by a message for a route it hosts), nor
to one whose connection is refused (its process is not listening: its stand-ins died with it).
attack3 t17: with the master dead, every client close on a gate sent SessionClosed to it and
logged a warning, forever."""

from __future__ import annotations

from pathlib import Path

import trio

from ._harness import cluster, free_address
from .test_eviction import _answered
from .test_session_ends import closed_ids, in_the_room


async def test_a_member_hosting_no_service_is_not_told_of_session_ends(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.standard()
        recorder = ["-m", "tests.cluster._recorder", "--listen", free_address()]
        await c.start_command("recorder", recorder)
        await c.start_command("bare", ["-m", "tests.cluster._recorder", "--listen", free_address(), "--services", ""])
        await c.wait_log("master", "remote services now ['BindService', 'Recorder', 'RoomService']")
        await trio.sleep(0.5)  # the master's NewMember reaches the others
        for name in ("ann", "bob"):
            async with c.client() as user:  # type: ignore[attr-defined]
                await user.request("BindService.Login", {"nickname": name})
                await in_the_room(user, name)
        with trio.fail_after(20):
            while True:  # the member hosting a service hears both
                if len(closed_ids(c)) >= 2:
                    break
                await trio.sleep(0.05)
        await trio.sleep(1)  # whatever else would come
        assert "SessionClosed" not in c.log("bare")


async def test_a_dead_master_is_not_told_of_every_session_end(tmp_path: Path) -> None:
    async with cluster(tmp_path, heartbeat=30.0) as c:
        await c.standard()  # the example's master hosts TopicService: it is told while it lives
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})
            await in_the_room(ann, "ann")
        await c.kill("master")
        for i in range(10):
            async with c.client() as user:  # type: ignore[attr-defined]
                await _answered(user, f"user{i}")  # forwarded to chat
        await trio.sleep(2)
        failures = [line for line in c.log("gate").splitlines() if f"SessionClosed to {c.master}" in line]
        assert len(failures) <= 1, failures  # the first finds it refused; no more are sent
        assert f"member {c.master} unreachable" in c.log("gate")
