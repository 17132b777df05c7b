"""The official pomelo JS client (tests/js) in real use over real time: it logs in, sits idle
for many heartbeat intervals answering heartbeats as it does, then sends an emoji (CESU-8) and
a burst of requests. Runtime v2 faults 1, 2 and 4 with the client the field uses."""

from __future__ import annotations

import json
import shutil

import pytest
import trio

from tests.runtime.apps import s_components
from tests.runtime.test_browser import HAVE_POMELO, JS_DIR, require
from trionano import Config, Server, WebSocketEndpoint


@pytest.mark.parametrize("burst", [200])
async def test_the_official_client_idles_for_twelve_intervals_then_bursts(burst: int) -> None:
    node = shutil.which("node")
    require(node is not None, "node")
    require(HAVE_POMELO, "tests/js node_modules (npm ci)")
    assert node is not None
    components, _, _ = s_components()
    server = Server(components, Config(heartbeat=1))
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, WebSocketEndpoint("127.0.0.1"))
        results: list[bytes] = []

        async def run_client() -> None:
            assert node is not None
            done = await trio.run_process(
                [node, str(JS_DIR / "pomelo_idle.cjs"), "127.0.0.1", str(port), "12", str(burst)],
                capture_stdout=True,
                check=True,
            )
            results.append(done.stdout)

        with trio.fail_after(60):
            async with trio.open_nursery() as clients:  # two official clients, idle side by side
                clients.start_soon(run_client)
                clients.start_soon(run_client)
        server.shutdown()
    for stdout in results:
        (line,) = [line for line in stdout.decode().splitlines() if line.startswith("{")]
        seen = json.loads(line)
        assert seen["events"] == [], seen  # never kicked, never timed out
        assert seen["emoji"] == {"c": "\U0001f600 grin"}
        assert seen["answered"] == burst
        assert seen["ordered"] is True
    assert server.statistics().kicks.get("heartbeat timeout", 0) == 0
