"""A merged WebSocket message (several pomelo packets in one message) decoded by JavaScript
clients: the official pomelo-jsclient-websocket (npm) and trionano's own trionano.js, each driven
from Node by tests/js/merge_client.cjs. nano's starx client (lonng/nano's chat demo) is not
published on npm and is not vendored here; it decodes a message with its protocol.js
``Package.decode``, pomelo-protocol's loop over every packet in the buffer, which the pomelo
case exercises. The pushes of a burst arrive in one message, in order; a Kick ends a
window at once, after the push it held."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
import trio

from tests.runtime.test_browser import HAVE_POMELO, JS_DIR, require
from trionano import Component, Components, Config, Group, Server, Session, WebSocketEndpoint, wire

BURST = 8
DATA = int(wire.PacketType.DATA)
KICK = int(wire.PacketType.KICK)


class Room(Component):
    def __init__(self) -> None:
        self.group = Group("room")

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}

    async def burst(self, session: Session, msg: dict[str, Any]) -> None:
        for i in range(int(msg["n"])):  # one broadcast per writer wake-up: only the window joins them
            self.group.broadcast("onSeq", {"i": i})
            await trio.sleep(0.001)

    def finale(self, session: Session, msg: dict[str, Any]) -> None:
        session.push("onLast", {})  # held by the window...
        session.kick("bye")  # ...which the Kick ends at once


@pytest.mark.parametrize("kind", ["pomelo", "trionano"])
async def test_a_javascript_client_decodes_a_merged_message(kind: str) -> None:
    node = shutil.which("node")
    require(node is not None, "node")
    require(HAVE_POMELO, "tests/js node_modules (npm ci)")
    assert node is not None
    components = Components()
    components.register(Room(), name="room")
    server = Server(components, Config(merge_window=1.0, heartbeat=0))
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, WebSocketEndpoint("127.0.0.1"))
        with trio.fail_after(60):
            done = await trio.run_process(
                [node, str(JS_DIR / "merge_client.cjs"), kind, "127.0.0.1", str(port), str(BURST)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        server.shutdown()
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    (line,) = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    seen = json.loads(line)
    assert seen["pushes"] == list(range(BURST))  # decoded, in order
    assert seen["events"] == ["onSeq"] * BURST + ["onLast", "kick"]
    assert seen["kick"] == "bye"
    frames: list[list[int]] = seen["frames"]
    assert [DATA] * BURST in frames, frames  # the burst: one message of BURST packets
    assert frames[-2:] == [[DATA], [KICK]], frames  # the held push, then the Kick
    assert sum(frame.count(DATA) for frame in frames) == 1 + BURST + 1  # the join's Response too
