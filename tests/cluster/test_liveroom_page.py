"""The live room page in Debian's Chromium (Playwright): two viewers on different gates see a
comment posted over the HTTP push API, each other's comments, and the viewer count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.runtime.test_browser import CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM, WAIT, require

from .test_liveroom import AUTH, liveroom


def drive_two_viewers(urls: list[str], post: Any, shot: Path) -> dict[str, Any]:
    """ann watches on gate 1, bob on gate 2; a comment comes over HTTP; ann comments. Runs in
    a worker thread; ``post`` posts over HTTP from the test's Trio thread."""
    from playwright.sync_api import sync_playwright

    wait = WAIT
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=2 * WAIT)
        try:
            errors: list[str] = []
            pages = []
            for url, name in zip(urls, ("ann", "bob")):
                page = browser.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{url}?name={name}")
                page.wait_for_selector("#text:not([disabled])", timeout=wait)
                pages.append(page)
            ann, bob = pages
            for page in pages:
                page.wait_for_function("document.getElementById('viewers').textContent === '2'", timeout=wait)
            gates = post({"name": "ops", "text": "hello from the push API ✓"})
            for page in pages:
                page.wait_for_selector("#comments li:has-text('hello from the push API')", timeout=wait)
            ann.fill("#text", "ann here 🎉")
            ann.click("#send")
            bob.wait_for_selector("#comments li:has-text('ann here')", timeout=wait)
            bob.wait_for_selector("#stage .danmaku", state="attached", timeout=wait)
            bob.screenshot(path=str(shot))
            return {
                "gates": gates,
                "ann": ann.inner_text("#comments"),
                "bob": bob.inner_text("#comments"),
                "ann status": ann.inner_text("#status"),
                "bob viewers": bob.inner_text("#viewers"),
                "errors": errors,
            }
        finally:
            browser.close()


async def test_two_viewer_pages_on_two_gates(tmp_path: Path) -> None:
    require(HAVE_CHROMIUM, "Debian's chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require(False, "the playwright package")
    async with liveroom(tmp_path) as (_, push_url, gates), httpx.AsyncClient(headers=AUTH, timeout=60) as http:

        async def post(message: dict[str, str]) -> int:
            response = await http.post(push_url, json={"route": "onComment", "message": message, "group": "room"})
            assert response.status_code == 202
            gates_reached: int = response.json()["gates"]
            return gates_reached

        pages = [url.replace("ws://", "http://") for url in gates]
        shot = tmp_path / "liveroom.png"
        seen = await trio.to_thread.run_sync(
            drive_two_viewers, pages, lambda message: trio.from_thread.run(post, message), shot
        )
    assert seen["errors"] == []
    assert seen["gates"] == 2
    for viewer in ("ann", "bob"):
        assert "ops: hello from the push API ✓" in seen[viewer]
    assert "ann: ann here 🎉" in seen["bob"]  # outside the BMP, through the logic node and back
    assert seen["ann status"] == "watching as ann"
    assert seen["bob viewers"] == "2"
    assert shot.stat().st_size > 1000
