"""The chat demo with real JavaScript clients: our page in Debian's Chromium (Playwright), and
the official pomelo-jsclient-websocket from npm, driven in Node.

CI (CI set in the environment) installs both; elsewhere these tests are skipped when Chromium
or Node's packages are missing, and fail under CI instead of skipping."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
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
#: Playwright's deadlines (ms): generous, a loaded 2-core machine runs Chromium slowly
WAIT = 60_000


def require(ok: bool, what: str) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI must run this test (.ci/run installs it)")
    pytest.skip(f"{what} is missing")


def join_as(browser: Any, url: str, names: tuple[str, ...], errors: list[str], wait: float) -> list[Any]:
    """One page per name, each joined to the chat; page errors go to ``errors``."""
    pages = []
    for name in names:
        page = browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.fill("#name", name)
        page.click("#join")
        page.wait_for_selector("#text:not([disabled])", timeout=wait)
        pages.append(page)
    return pages


def drive_two_pages(url: str, shot: Path) -> dict[str, Any]:
    """Two pages join; ann sends; what bob's page shows. Runs in a worker thread."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=2 * WAIT)
        try:
            errors: list[str] = []
            pages = join_as(browser, url, ("ann", "bob"), errors, WAIT)
            ann, bob = pages
            ann.fill("#text", "hello from ann ✓ 🎲")
            ann.click("#send")
            bob.wait_for_selector("#log li:has-text('hello from ann')", timeout=WAIT)
            ann.wait_for_selector("#log li:has-text('hello from ann')", timeout=WAIT)
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
    assert "bob joined" in seen["ann"]  # ann saw bob join, by name
    assert seen["status"] == "joined as bob"
    assert shot.stat().st_size > 1000


def drive_names_and_restart(url: str, restart: Callable[[], None], shot: Path) -> dict[str, Any]:
    """ann and bob join by name; the server restarts; both reconnect and ann talks again."""
    from playwright.sync_api import sync_playwright

    wait = WAIT
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=2 * WAIT)
        try:
            errors: list[str] = []
            pages = join_as(browser, url, ("ann", "bob"), errors, wait)
            ann, bob = pages
            ann.wait_for_selector("#members:has-text('bob')", timeout=wait)
            ann.wait_for_selector("#log li:has-text('bob joined')", timeout=wait)
            seen: dict[str, Any] = {
                "ann members": ann.inner_text("#members"),
                "bob members": bob.inner_text("#members"),
                "ann log": ann.inner_text("#log"),
            }
            restart()
            for page in pages:
                page.wait_for_selector("#reconnect:visible", timeout=wait)
                page.wait_for_selector("#text[disabled]", timeout=wait)
            seen["down status"] = ann.inner_text("#status")
            ann.screenshot(path=str(shot.with_name("down.png")))
            for page in (bob, ann):
                page.click("#reconnect")
                page.wait_for_selector("#text:not([disabled])", timeout=wait)
            bob.wait_for_selector("#members:has-text('ann')", timeout=wait)
            ann.fill("#text", "ann is back")
            ann.click("#send")
            bob.wait_for_selector("#log li:has-text('ann is back')", timeout=wait)
            bob.screenshot(path=str(shot))
            seen |= {
                "bob log": bob.inner_text("#log"),
                "up status": ann.inner_text("#status"),
                "reconnect hidden": ann.is_hidden("#reconnect"),
                "errors": errors,
            }
            return seen
        finally:
            browser.close()


async def test_chat_page_shows_names_and_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    require(HAVE_CHROMIUM, "Debian's chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require(False, "the playwright package")
    async with trio.open_nursery() as nursery:

        async def start(ws_port: int) -> tuple[trio.CancelScope, trio.Event, int]:
            scope, stopped = trio.CancelScope(), trio.Event()

            async def run(task_status: trio.TaskStatus[list[int]]) -> None:
                try:
                    with scope:
                        await examples.chat.main(port=0, ws_port=ws_port, task_status=task_status)
                finally:
                    stopped.set()

            _, bound = await nursery.start(run)
            return scope, stopped, bound

        servers = [await start(0)]
        ws_port = servers[0][2]

        async def restart() -> None:
            scope, stopped, _ = servers[-1]
            scope.cancel()
            await stopped.wait()
            servers.append(await start(ws_port))  # the same port: the page's address

        shot = tmp_path / "restarted.png"
        seen = await trio.to_thread.run_sync(
            drive_names_and_restart, f"http://127.0.0.1:{ws_port}/", lambda: trio.from_thread.run(restart), shot
        )
        nursery.cancel_scope.cancel()
    assert seen["errors"] == []
    assert seen["ann members"] == "also here: bob"  # names, not session ids
    assert seen["bob members"] == "also here: ann"
    assert "bob joined" in seen["ann log"]
    assert seen["down status"] == "disconnected: the server went away"
    assert seen["up status"] == "joined as ann"
    assert seen["reconnect hidden"] is True
    assert "ann: ann is back" in seen["bob log"]
    assert len(servers) == 2
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
        with trio.fail_after(60):
            result = await trio.run_process(
                [node, str(JS_DIR / "pomelo_chat.cjs"), "127.0.0.1", str(ws_port)], capture_stdout=True, check=True
            )
        nursery.cancel_scope.cancel()
    (line,) = [line for line in result.stdout.decode().splitlines() if line.startswith("{")]  # the client logs too
    seen = json.loads(line)
    assert seen["handshake"] == "ok"
    assert seen["join"] == {"code": 0, "result": "success"}
    assert seen["push"] == {"name": "pomelo", "content": "héllo ✓ from the official client"}
