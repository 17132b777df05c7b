"""The chat demo with real JavaScript clients: our page in Debian's Chromium (Playwright), and
the official pomelo-jsclient-websocket from npm, driven in Node.

CI (CI set in the environment) installs both; elsewhere these tests are skipped when Chromium
or Node's packages are missing, and fail under CI instead of skipping."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

import examples.chat

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
JS_DIR = Path(__file__).resolve().parent.parent / "js"
HAVE_POMELO = (JS_DIR / "node_modules" / "pomelo-jsclient-websocket").is_dir()
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require(ok: bool, what: str) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI must run this test (.ci/run installs it)")
    pytest.skip(f"{what} is missing")


def drive_two_pages(url: str, shot: Path) -> dict[str, Any]:
    """Two pages join; ann sends; what bob's page shows. Runs in a worker thread."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            errors: list[str] = []
            pages = []
            for name in ("ann", "bob"):
                page = browser.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url)
                page.fill("#name", name)
                page.click("#join")
                page.wait_for_selector("#text:not([disabled])", timeout=10_000)
                pages.append(page)
            ann, bob = pages
            ann.fill("#text", "hello from ann ✓ 🎲")
            ann.click("#send")
            bob.wait_for_selector("#log li:has-text('hello from ann')", timeout=10_000)
            ann.wait_for_selector("#log li:has-text('hello from ann')", timeout=10_000)
            bob.screenshot(path=str(shot))
            return {
                "bob": bob.inner_text("#log"),
                "ann": ann.inner_text("#log"),
                "status": bob.inner_text("#status"),
                "errors": errors,
            }
        finally:
            browser.close()


async def test_chat_page_in_chromium(tmp_path: Path) -> None:
    require(HAVE_CHROMIUM, "Debian's chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require(False, "the playwright package")
    async with trio.open_nursery() as nursery:
        _, ws_port = await nursery.start(
            lambda task_status: examples.chat.main(port=0, ws_port=0, task_status=task_status)
        )
        shot = tmp_path / "chat.png"
        seen = await trio.to_thread.run_sync(drive_two_pages, f"http://127.0.0.1:{ws_port}/", shot)
        nursery.cancel_scope.cancel()
    assert seen["errors"] == []
    assert "ann: hello from ann ✓ 🎲" in seen["bob"]  # UTF-8 outside the BMP survives the round trip
    assert "New user" in seen["ann"]  # ann saw bob join
    assert seen["status"] == "joined as bob"
    assert shot.stat().st_size > 1000


@pytest.mark.parametrize("use_dict", [False, True], ids=["plain", "route-dictionary"])
async def test_official_pomelo_js_client(use_dict: bool) -> None:
    node = shutil.which("node")
    require(node is not None, "node")
    require(HAVE_POMELO, "tests/js node_modules (npm ci)")
    assert node is not None
    async with trio.open_nursery() as nursery:
        _, ws_port = await nursery.start(
            lambda task_status: examples.chat.main(port=0, ws_port=0, use_dict=use_dict, task_status=task_status)
        )
        with trio.fail_after(20):
            result = await trio.run_process(
                [node, str(JS_DIR / "pomelo_chat.cjs"), "127.0.0.1", str(ws_port)], capture_stdout=True, check=True
            )
        nursery.cancel_scope.cancel()
    (line,) = [line for line in result.stdout.decode().splitlines() if line.startswith("{")]  # the client logs too
    seen = json.loads(line)
    assert seen["handshake"] == "ok"
    assert seen["join"] == {"code": 0, "result": "success"}
    assert seen["push"] == {"name": "pomelo", "content": "héllo ✓ from the official client"}
