"""``python -m examples.liveroom.load N [--base-port P] [--posts K] [--rate R] [--token T]``

N viewers (``trionano.client``, spread over the room's gates) join the live room started by
``python -m examples.liveroom``; then K comments are posted over the HTTP push API, R per
second, each carrying the time it was posted. Prints the deliveries per second and the latency
percentiles from POST to receipt, with a progress bar (tqdm) while they arrive.

The viewers run in this one Trio process, so past a few thousand of them this process, not the
room, is what is measured: ``bench/push_api.py`` (B13) loads it with raw sockets instead.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import time
from typing import Any

import attrs
import httpx
import trio
from tqdm import tqdm

from trionano.client import Client, open_websocket_client

ROUTE = "onComment"


@attrs.define
class Tally:
    """What the viewers received: latencies (ns) of this run's comments, by arrival."""

    run: str
    latencies: list[int] = attrs.Factory(list)
    first: float = 0.0
    last: float = 0.0

    def received(self, body: Any) -> None:
        if not isinstance(body, dict) or body.get("run") != self.run:
            return  # someone else's comment
        now = time.monotonic_ns()
        self.latencies.append(now - int(body["sent"]))
        self.last = now / 1e9
        if not self.first:
            self.first = self.last


def percentile(sorted_values: list[int], fraction: float) -> float:
    """The nearest-rank percentile of ``sorted_values`` (ns), in ms."""
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index] / 1e6


async def viewer(
    url: str, number: int, tally: Tally, joined: trio.Semaphore, done: trio.Event, opening: trio.CapacityLimiter
) -> None:
    """One viewer: connects and joins while holding ``opening`` (a gate admits a bounded number
    of handshakes from one host at a time, 128 by default: ``Config.max_handshaking_per_host``,
    ``WebSocketEndpoint.max_upgrading_per_host``; past it, it answers "server busy"), then
    counts the comments it gets until ``done``."""
    async with contextlib.AsyncExitStack() as stack:
        async with opening:
            client = await stack.enter_async_context(open_websocket_client(url))
            client.on(ROUTE, tally.received)
            await join(client, f"load-{number}")
        joined.release()
        await done.wait()


async def join(client: Client, name: str) -> None:
    answer = await client.request("room.join", {"name": name})
    if answer.get("code") != 0:
        raise RuntimeError(f"join refused: {answer}")


async def post_comments(
    push_url: str, token: str | None, run: str, posts: int, rate: float, progress: tqdm[Any] | None = None
) -> list[int]:
    """POST ``posts`` comments, ``rate`` per second; the gates reached, per POST."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reached = []
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        start = trio.current_time()
        for index in range(posts):
            await trio.sleep_until(start + index / rate)
            message = {"name": "load", "text": f"comment {index}", "run": run, "sent": time.monotonic_ns()}
            response = await http.post(push_url, json={"route": ROUTE, "message": message, "group": "room"})
            response.raise_for_status()
            reached.append(int(response.json()["gates"]))
    return reached


async def main(
    viewers: int,
    *,
    gates: list[str],
    push_url: str,
    token: str | None = None,
    posts: int = 50,
    rate: float = 10.0,
    settle: float = 10.0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the load; returns the figures it prints."""
    tally = Tally(run=f"{time.time_ns():x}")
    done = trio.Event()
    joined = trio.Semaphore(0)
    opening = trio.CapacityLimiter(100)  # viewers connecting and joining at once, over all gates

    async with trio.open_nursery() as nursery:
        with tqdm(total=viewers, desc="viewers joined", unit="viewer", disable=not show_progress) as bar:
            for number in range(viewers):
                nursery.start_soon(viewer, gates[number % len(gates)], number, tally, joined, done, opening)
            for _ in range(viewers):
                await joined.acquire()
                bar.update()
        expected = viewers * posts
        started = time.monotonic()
        with tqdm(total=expected, desc="deliveries", unit="msg", disable=not show_progress) as bar:
            reached: list[int] = []

            async def poster() -> None:
                reached.extend(await post_comments(push_url, token, tally.run, posts, rate))

            nursery.start_soon(poster)
            deadline = None
            while len(tally.latencies) < expected:
                await trio.sleep(0.1)
                bar.update(len(tally.latencies) - bar.n)
                if len(reached) == posts and deadline is None:
                    deadline = trio.current_time() + settle
                if deadline is not None and trio.current_time() > deadline:
                    break
            bar.update(len(tally.latencies) - bar.n)
        done.set()
    latencies = sorted(tally.latencies)
    window = max(tally.last - started, 1e-9)
    return {
        "viewers": viewers,
        "posts": posts,
        "gates_reached": max(reached, default=0),
        "expected": expected,
        "delivered": len(latencies),
        "deliveries_per_s": len(latencies) / window,
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": percentile(latencies, 1.0),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.liveroom.load", description=__doc__.split("\n\n")[1])
    parser.add_argument("viewers", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=24600, help="the launcher's --base-port")
    parser.add_argument("--posts", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0, help="posts per second")
    parser.add_argument("--token")
    parser.add_argument("--json", action="store_true", help="print one JSON line, no progress bar")
    args = parser.parse_args()
    host, base = args.host, args.base_port
    figures = trio.run(
        functools.partial(
            main,
            args.viewers,
            gates=[f"ws://{host}:{base + 3}/", f"ws://{host}:{base + 5}/"],
            push_url=f"http://{host}:{base + 1}/v1/push",
            token=args.token,
            posts=args.posts,
            rate=args.rate,
            show_progress=not args.json,
        )
    )
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{figures['viewers']} viewers, {figures['posts']} posts to {figures['gates_reached']} gates: "
        f"{figures['delivered']}/{figures['expected']} delivered, {figures['deliveries_per_s']:,.0f} deliveries/s; "
        f"POST to receipt p50 {figures['p50_ms']:.1f} ms, p90 {figures['p90_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.1f} ms"
    )


if __name__ == "__main__":
    cli()
