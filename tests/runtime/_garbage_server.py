"""The server of test_garbage, in a process of its own, so that every object its collector
finds is the server's: ``python -m tests.runtime._garbage_server``.

It prints its TCP and WebSocket ports (a JSON list) once listening, with the cyclic collector
off. Then, for each line read on stdin: once every connection has closed, it collects with
``gc.DEBUG_SAVEALL`` and prints what the collector found (a JSON object: ``garbage``, the
count, and ``types``, the count of each type), then frees it. Stops at the end of stdin.
"""

from __future__ import annotations

import collections
import gc
import json
import sys
from typing import Any, Final

import trio

from trionano import (
    Component,
    Components,
    Config,
    Group,
    HandshakeRejected,
    RateLimit,
    Server,
    Session,
    TCPEndpoint,
    WebSocketEndpoint,
    wire,
)

HOST: Final = "127.0.0.1"
HEARTBEAT: Final = 1.0  # a silent client is kicked "heartbeat timeout" after 2.5 s
#: a client sending 40 packets at once is refused past the first 10 and soon kicked
RATE_LIMIT: Final = RateLimit(rate=20, burst=10, kick_after=10)


class Churn(Component):
    """Handlers that leave what a handler may leave on a session: a group, a dropped promise,
    an exception, a kick."""

    def __init__(self) -> None:
        self.room = Group("room")

    def after_init(self) -> None:
        self.server.on_session_closed(self.room.leave)

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return msg

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        session["joined"] = msg
        self.room.add(session)
        self.room.broadcast("onJoin", {"id": session.id})
        return {"members": self.room.count()}

    def boom(self, session: Session, msg: dict[str, Any]) -> None:
        raise ValueError("boom")

    def promise(self, session: Session, msg: dict[str, Any]) -> None:
        session.defer()  # dropped: answered 500 once collected

    def kick(self, session: Session, msg: dict[str, Any]) -> None:
        session.kick("bye")

    def cycle(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        session["me"] = session  # the application's own cycle: the test's control
        return {}


def validate(session: Session, handshake: wire.Handshake) -> None:
    if handshake.user == {"reject": True}:
        raise HandshakeRejected("rejected")


def collect(server: Server) -> dict[str, Any]:
    """Collect with DEBUG_SAVEALL: what was found, then freed."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(0)
    gc.collect()
    stats = server.statistics()
    return {
        "garbage": found,
        "types": dict(types.most_common()),
        "connections_open": stats.connections_open,
        "sessions_open": stats.sessions_open,
    }


async def main() -> None:
    components = Components()
    components.register(Churn(), name="churn")
    config = Config(heartbeat=HEARTBEAT, rate_limit=RATE_LIMIT, handshake_validator=validate)
    server = Server(components, config)
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(
            lambda task_status: server.serve(TCPEndpoint(HOST), WebSocketEndpoint(HOST), task_status=task_status)
        )
        gc.disable()
        collect(server)
        print(json.dumps(ports), flush=True)
        pending = b""
        while True:
            while b"\n" not in pending:
                data = await stdin.receive_some()
                if not data:
                    server.shutdown()
                    return
                pending += data
            _, pending = pending.split(b"\n", 1)
            with trio.fail_after(60):
                while True:
                    stats = server.statistics()
                    if not stats.connections_open and not stats.sessions_open:
                        break
                    await trio.sleep(0.02)
            await trio.sleep(0.2)  # close hooks, and the answers of dropped promises, run
            print(json.dumps(collect(server)), flush=True)


if __name__ == "__main__":
    trio.run(main)
