"""A gate that has not joined the cluster yet (its master cannot be reached) serves its clients'
local routes and answers every other Request 503 "cluster not joined yet", not 404: it cannot
know who hosts a route before the master answers (attack3 t4: valid routes answered 404 while
the master was away). Once it joins, the same route is forwarded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from trionano.client import Client

from ._harness import Cluster, cluster, free_address
from .test_eviction import _answered

T = TypeVar("T")


async def ask_lone_gate(c: Cluster, ask: Callable[[Client], Awaitable[T]]) -> T:
    """Start the gate alone (its master is not there: it retries its registration) and ``ask``
    through a client of its, once its client port is open."""
    await c.start("gate", "gate", free_address(), "--gate-address", c.gate_client, ready="failed")
    with trio.fail_after(30):
        while True:
            try:
                async with c.client() as client:  # type: ignore[attr-defined]
                    return await ask(client)
            except OSError:  # its client port is not open yet
                await trio.sleep(0.1)


async def test_a_gate_not_joined_yet_answers_remote_routes_503(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:

        async def ask(ann: Client) -> tuple[Any, Any, Any]:
            local = await ann.request("BindService.BindChatServer", {})
            remote = await ann.request("RoomService.SyncMessage", {"name": "ann", "content": "x"})
            return local, remote, await ann.request("TopicService.Stats", {"uid": 1})

        local, remote, notified = await ask_lone_gate(c, ask)
        assert local == {"code": 500, "message": "not implement"}  # its own handler serves
        assert remote == {"code": 503, "message": "RoomService unavailable: cluster not joined yet"}
        assert notified == {"code": 503, "message": "TopicService unavailable: cluster not joined yet"}
        assert "not found(forgot registered?)" not in c.log("gate")

        await c.start("master", "master", c.master)
        await c.start("chat", "chat", free_address())
        await c.wait_log("gate", "up:", seconds=40)  # registered (it retries every 3 s)
        async with c.client() as bob:  # type: ignore[attr-defined]
            with trio.fail_after(30):
                assert (await _answered(bob, "joined"))["code"] == 500  # chat's handler answered
            answer = await bob.request("NoSuchService.Route", {})
            assert answer == {"code": 404, "message": "route not found: NoSuchService.Route"}


async def test_a_handler_whose_rpc_finds_no_member_answers_503_without_a_traceback(tmp_path: Path) -> None:
    """The kind of attack5's finding 4 (a live-room gate up before its logic node answered
    room.join 500 "internal error" with a traceback): a handler calling ``session.rpc`` for a
    service no member hosts, and not catching the LookupError, used to answer 500 and log a
    traceback; the error is a ServiceNotFound, a HandlerError with code 503 and nano's text."""
    async with cluster(tmp_path) as c:
        # BindService.Login binds, then session.rpc("TopicService.NewUser")
        login = await ask_lone_gate(c, lambda ann: ann.request("BindService.Login", {"nickname": "ann"}))
        assert login == {"code": 503, "message": "TopicService not found(forgot registered?)"}
        assert "Traceback" not in c.log("gate")
