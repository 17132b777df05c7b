"""A live-room gate told to stop (SIGTERM) exits within its ``shutdown_timeout`` plus an
allowance, with hundreds of WebSocket viewers, some not reading, while comments are pushed and
the master freezes as the gate leaves.

The input: a gate with 2,000-3,000 viewers under push load took 7.8-19 s to exit after SIGTERM
(``shutdown_timeout`` 5 s): each stage of the stop had its own timeout, the fan-out's drain
waited for pushes that kept coming, and leaving the cluster waited up to ``rpc_timeout`` more
for a master that did not answer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.runtime.apps import Lines, wait_until

from ._harness import ROOT
from .test_liveroom import AUTH, liveroom

SHUTDOWN_TIMEOUT = 5.0  # the gate's (trionano.Config's default)
ALLOWANCE = 5.0  # a bound on hanging, not a speed: the cut, leaving, the exit, a loaded machine's lag
READERS, IDLE = 600, 150


async def test_a_gate_exits_within_shutdown_timeout_under_load_with_a_frozen_master(tmp_path: Path) -> None:
    # rpc_timeout 10 s: leaving may not wait for a frozen master as long as a call may
    async with liveroom(tmp_path, rpc_timeout=10.0) as (c, push_url, (gate1, _)):
        port = gate1.rsplit(":", 1)[1].strip("/")
        command = [sys.executable, "-m", "tests.runtime._shutdown_clients", "127.0.0.1", "0", port]
        command += [str(n) for n in (0, READERS, 0, IDLE)]
        viewers = await trio.lowlevel.open_process(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert viewers.stdin is not None
            assert viewers.stdout is not None
            lines = Lines(viewers.stdout)
            with trio.fail_after(300):
                assert json.loads(await lines.receive_line())["joined"] == READERS + IDLE
            posted = 0

            async def post_comments(http: httpx.AsyncClient) -> None:
                nonlocal posted
                comment = {"route": "onComment", "message": {"name": "ops", "text": "x" * 4096}, "group": "room"}
                while True:
                    response = await http.post(push_url, json=comment)
                    posted += response.status_code == 202
                    await trio.sleep(0.01)

            async with httpx.AsyncClient(headers=AUTH, timeout=60) as http, trio.open_nursery() as load:
                for _ in range(2):
                    load.start_soon(post_comments, http)
                # 800 KiB to each viewer: the idle ones' buffers are full
                await wait_until(lambda: posted >= 200, timeout=120)
                gate = c.processes["gate1"]
                start = trio.current_time()
                c.signal("gate1", signal.SIGTERM)
                c.signal("logic", signal.SIGSTOP)  # the master freezes while the gate stops
                load.cancel_scope.cancel()
            try:
                with trio.fail_after(120):
                    await gate.wait()
                elapsed = trio.current_time() - start
            finally:
                c.signal("logic", signal.SIGCONT)
            await viewers.stdin.aclose()
            with trio.fail_after(120):
                report = json.loads(await lines.receive_line())
        finally:
            if viewers.returncode is None:
                viewers.kill()
            await viewers.wait()
        log = c.log("gate1")
    assert gate.returncode == 0, log[-3000:]
    # leaving stopped waiting for the frozen master: its call ended quietly (asyncio had
    # logged "Task exception was never retrieved", the call's StreamTerminatedError)
    assert "Traceback" not in log, log[-3000:]
    assert elapsed < SHUTDOWN_TIMEOUT + ALLOWANCE, (elapsed, log[-3000:])
    readers = report["ws_readers"]
    assert readers == {**readers, "count": READERS, "ended": READERS, "kicked": READERS}, report
    assert report["ws_idle"]["ended"] == IDLE, report
