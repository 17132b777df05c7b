"""Signals sent to a real server process: SIGINT and SIGTERM are the graceful shutdown (every
client kicked "shutdown"), with no traceback and exit status 0. And the collector tuning
``trionano.run`` applies."""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import trionano
from trionano import Kicked
from trionano._run import GC_THRESHOLDS
from trionano.client import open_client

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_kicks_every_client_and_exits_cleanly(signum: signal.Signals) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "examples.chat", "--port", "0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    log = b""
    with trio.fail_after(60):  # a process start on a loaded machine
        while not (match := re.search(rb"chat server: tcp://127\.0\.0\.1:(\d+)", log)):
            chunk = await proc.stderr.receive_some(4096)
            assert chunk, log.decode()
            log += chunk
    port = int(match.group(1))
    try:
        async with open_client("127.0.0.1", port) as client:
            assert await client.request("room.join", {}, timeout=10) == {"code": 0, "result": "success"}
            proc.send_signal(signum)
            with trio.fail_after(30), pytest.raises(Kicked) as kicked:
                await client.receive_push("onNever")  # nothing comes but the Kick
            assert kicked.value.reason == "shutdown"
        with trio.fail_after(60):
            status = await proc.wait()
            while chunk := await proc.stderr.receive_some(65536):
                log += chunk
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.decode()
    assert status == 0, text
    assert "Traceback" not in text, text
    assert "KeyboardInterrupt" not in text, text
    assert "shutting down gracefully" in text


def test_tune_gc_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        trionano.tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_threshold()[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
