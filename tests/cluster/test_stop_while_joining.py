"""A node interrupted (SIGINT) while it cannot reach its master yet exits quietly: status 0,
no traceback (it used to end in "child exited without calling task_status.started()")."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import trio

from ._harness import ROOT, free_address


def commands() -> dict[str, list[str]]:
    # nobody listens at the master's address: the gate keeps retrying its registration
    master = free_address()
    return {
        "cluster": [
            *("examples.cluster", "gate", "--listen", free_address(), "--gate-address", free_address()),
            *("--master", master, "--heartbeat", "0.5"),
        ],
        "liveroom": ["examples.liveroom", "gate", "--listen", free_address(), "--ws-port", "0", "--master", master],
    }


@pytest.mark.parametrize("example", ["cluster", "liveroom"])
async def test_sigint_while_registering_exits_cleanly(tmp_path: Path, example: str) -> None:
    log = tmp_path / "gate.log"
    command = [sys.executable, "-m", *commands()[example]]
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(command, cwd=ROOT, stdout=out, stderr=out)
    try:
        with trio.fail_after(60):
            while "Register current node" not in log.read_text(errors="replace"):  # its first failed attempt
                assert process.poll() is None, log.read_text(errors="replace")
                await trio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    text = log.read_text(errors="replace")
    assert process.returncode == 0, text
    assert "Traceback" not in text, text
    assert "shut down before it joined the cluster" in text
