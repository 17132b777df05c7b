"""A request-style call between cluster nodes (beyond nano's notify-only RPC): a return value,
and a deadline. Two nodes in this process, hosted by the asyncio bridge (a sync test: the
bridge runs its own loop)."""

from __future__ import annotations

import functools
import json
import logging
import socket
from typing import Any

import pytest
import trio

from trionano import Component, Components, Config, Session
from trionano.cluster import ClusterConfig, Node, run


class Calc(Component):
    def add(self, session: Session, msg: dict[str, int]) -> dict[str, int]:
        return {"sum": msg["a"] + msg["b"]}

    async def slow(self, session: Session, msg: dict[str, Any]) -> dict[str, bool]:
        await trio.sleep(msg["seconds"])
        return {"done": True}

    def fail(self, session: Session, msg: dict[str, Any]) -> None:
        raise RuntimeError("no")


def address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def two_nodes() -> tuple[Node, Node]:
    master_address = address()
    master = Node(
        Components(),
        ClusterConfig(service_address=master_address, is_master=True, rpc_timeout=0.5),
        Config(heartbeat=0),
    )
    components = Components()
    components.register(Calc(), name="calc")
    member = Node(
        components,
        ClusterConfig(service_address=address(), master_address=master_address, node_id=2, heartbeat=5),
        Config(heartbeat=0),
    )
    return master, member


def test_call_returns_the_answer_and_keeps_its_deadline() -> None:
    master, member = two_nodes()
    seen: dict[str, Any] = {}

    async def main(bridge: Any) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(master.run, bridge))
            await nursery.start(functools.partial(member.run, bridge))
            seen["sum"] = json.loads(await master.call("calc.add", b'{"a": 2, "b": 40}'))
            seen["error"] = json.loads(await master.call("calc.fail", b"{}"))
            with pytest.raises(TimeoutError):  # the node's own deadline (rpc_timeout 0.5 s)
                await master.call("calc.slow", b'{"seconds": 1}')
            with pytest.raises(trio.TooSlowError):  # a caller's shorter one, Trio's way
                with trio.fail_after(0.2):
                    await master.call("calc.slow", b'{"seconds": 1}')
            with pytest.raises(LookupError):
                await master.call("nobody.here", b"{}")
            with trio.move_on_after(30):  # the SessionClosed for each call reaches the member
                while member.remote_sessions:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            seen["leftover"] = member.remote_sessions
            member.server.shutdown()
            master.server.shutdown()

    run(main)
    assert seen["sum"] == {"sum": 42}
    assert seen["error"] == {"code": 500, "message": "internal error"}  # exception text stays in the log
    assert seen["leftover"] == 0  # each call's session was dropped on the member


def test_a_bug_answered_internal_is_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """What a cluster method's Trio side raises beyond a ClusterError is answered INTERNAL and
    logged with its traceback, at most 10 times per 10 s however often a peer hits it."""
    import grpclib.const

    from trionano._log import RateLimitedLog
    from trionano.cluster._errors import to_status

    caplog.set_level(logging.ERROR, logger="trionano.cluster")
    log = RateLimitedLog(logging.getLogger("trionano.cluster"))
    for _ in range(1000):
        status = to_status(RuntimeError("a bug"), "HandleRequest", log)
        assert status.status is grpclib.const.Status.INTERNAL
    assert len(caplog.records) == 10
    assert log.pending("rpc failed") == 990
