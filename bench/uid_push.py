"""Pushes to one uid on a gate with many sessions: the uid index against a scan of every session.

One node (a master serving TCP clients, no other member) holds ``--sessions`` real loopback
sessions (raw TCP clients, handshake done, never reading), each bound to its own uid. Each run
times ``--pushes`` single-uid cluster pushes (``node.push(..., Audience.of_uids([uid]))``, which
looks the uid up in the server's index) and, as the same-run baseline, the lookup the push did
before the index: ``[s for s in server.sessions.values() if s.uid in uids]`` for the same uids.

Printed: per push, microseconds for the indexed push and for the scan alone, and the ratio scan
/ indexed push (medians of ``--runs`` >= 3). The scan grows with the sessions; the push does not.

Run: ``python -m bench.uid_push [--sessions N] [--pushes N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from contextlib import AsyncExitStack

import trio

from bench.cluster import free_address
from trionano import Components, Config, TCPEndpoint
from trionano.cluster import Audience, Bridge, ClusterConfig, Node, run
from trionano.testing import open_raw_connection


def one_run(sessions: int, pushes: int) -> tuple[float, float]:
    node = Node(Components(), ClusterConfig(service_address=free_address(), is_master=True), Config(heartbeat=0))
    result: list[float] = []

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            (port,) = await nursery.start(functools.partial(node.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            for _ in range(sessions):
                raw = await stack.enter_async_context(open_raw_connection("127.0.0.1", port))
                await raw.handshake()
            while len(node.server.sessions) < sessions:  # noqa: ASYNC110 (no event for it)
                await trio.sleep(0.01)
            for uid, session in enumerate(node.server.sessions.values(), 1):
                session.bind(uid)
            uids = [1 + (i * 7919) % sessions for i in range(pushes)]
            start = time.perf_counter()
            for uid in uids:
                node.push("onNote", {"n": uid}, Audience.of_uids([uid]))
            result.append((time.perf_counter() - start) / pushes)
            server = node.server
            start = time.perf_counter()
            for uid in uids:
                wanted = {uid}
                found = [s for s in server.sessions.values() if s.uid in wanted]
                assert len(found) == 1
            result.append((time.perf_counter() - start) / pushes)
            node.server.shutdown()
            nursery.cancel_scope.cancel()

    run(main)
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="single-uid pushes: index vs scan")
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.sessions, args.pushes) for _ in range(max(3, args.runs))]
    push = statistics.median(r[0] for r in runs)
    scan = statistics.median(r[1] for r in runs)
    print(f"sessions={args.sessions} pushes={args.pushes} runs={len(runs)}")
    print(f"indexed push: {push * 1e6:.1f} us/push; scan alone (before): {scan * 1e6:.1f} us/lookup")
    print(f"scan / indexed push: {scan / push:.1f}x")


if __name__ == "__main__":
    main()
