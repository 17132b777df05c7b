"""Hostile-input benchmarks, each beside a same-run baseline: the server runs in its own process
with the default Config (``bench._servers trionano-defaults``); attackers run in another.

- B9 fairness: a bystander's request latency (p99, 10 ms apart) while one client floods, as a
  ratio to the same bystander's idle p99 in the same run. Floods: 4-byte heartbeats 16,384 per
  write; unknown-route Notifies; unknown-route Requests never read. The attacker reconnects
  when kicked, so the pressure lasts the whole run. Goal: p99 <= 2 x idle + 20 ms.
- B10 churn: 50 concurrent WebSocket clients each connect, handshake, ack, send one request,
  read its answer and close, over and over: cycles/s, and the server's RSS before and after
  (the baseline: what it held before the churn).

Run: ``python -m bench.hostile [--quick]`` (also part of ``nox -s bench``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import trio
import trio_websocket

from bench.runtime import ROOT, median, rss_kib, servers
from trionano import wire
from trionano.client import open_client

HANDSHAKE: Final = wire.encode_packet(wire.PacketType.HANDSHAKE, b"{}")
ACK: Final = wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)


def data(message: wire.Request | wire.Notify) -> bytes:
    return wire.encode_packet(wire.PacketType.DATA, wire.encode_message(message))


FLOODS: Final = {
    "heartbeats": wire.encode_packet(wire.PacketType.HEARTBEAT) * 16_384,
    "unknown notifies": data(wire.Notify("no.such.route", b"{}")) * 2_000,
    "unread requests": data(wire.Request(1, "no.such.route", b"{}")) * 2_000,
}


@contextmanager
def defaults_server() -> Iterator[tuple[int, int, int]]:
    """(tcp port, ws port, pid) of a fresh default-config server."""
    with servers("trionano-defaults") as ((tcp, ws), pid):
        yield tcp, ws, pid


# -- the attacker (its own process) -------------------------------------------------------


async def flood(port: int, kind: str, seconds: float) -> None:
    payload = FLOODS[kind]
    with trio.move_on_after(seconds):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(HANDSHAKE)
                    await stream.receive_some(4096)
                    await stream.send_all(ACK)
                    while True:
                        await stream.send_all(payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await trio.sleep(0.01)  # kicked: come back


@contextmanager
def attacker(port: int, kind: str, seconds: float) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.hostile", "--flood", kind, str(port), str(seconds)], cwd=ROOT)
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.wait(seconds + 30)


# -- the bystander (this process) -----------------------------------------------------------


async def bystander(port: int, seconds: float) -> list[float]:
    latencies = []
    async with open_client("127.0.0.1", port) as client:
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            start = time.perf_counter()
            await client.request("bench.echo", {"b": 1}, timeout=30)
            latencies.append(time.perf_counter() - start)
            await trio.sleep(0.01)
    return latencies


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


def b9(seconds: float, repeats: int) -> None:
    print(f"B9 fairness: a bystander's p99 under one client's flood vs idle, {seconds:g} s each, default Config")
    for kind in FLOODS:
        ratios, met = [], []
        for _ in range(repeats):
            with defaults_server() as (port, _, _):
                idle = p99(trio.run(bystander, port, seconds))
                with attacker(port, kind, seconds + 1):
                    loaded = p99(trio.run(bystander, port, seconds))
            ratios.append(loaded / idle)
            met.append(loaded <= 2 * idle + 0.020)
            print(f"  {kind:<17} idle p99 {idle * 1e3:6.2f} ms   under flood p99 {loaded * 1e3:7.2f} ms")
        print(
            f"  {kind}: p99 ratio to idle, median {median(ratios):.2f}"
            f"   (goal <= 2 x idle + 20 ms: {'met' if all(met) else 'MISSED'} in {sum(met)}/{len(met)} runs)"
        )
    print()


# -- churn ----------------------------------------------------------------------------------


async def churn(ws_port: int, seconds: float, concurrency: int) -> int:
    cycles = 0
    request = data(wire.Request(1, "bench.echo", b"{}"))

    async def one_client() -> None:
        nonlocal cycles
        while trio.current_time() < deadline:
            try:
                async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{ws_port}/") as ws:
                    await ws.send_message(HANDSHAKE)
                    await ws.get_message()
                    await ws.send_message(ACK + request)
                    await ws.get_message()
                cycles += 1
            except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError):
                await trio.sleep(0.01)

    deadline = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(one_client)
    return cycles


def b10(seconds: float) -> None:
    print(f"B10 churn: 50 concurrent WebSocket clients cycling connect/handshake/request/close, {seconds:g} s")
    with defaults_server() as (_, ws_port, pid):
        time.sleep(0.5)
        before = rss_kib(pid)
        cycles = trio.run(churn, ws_port, seconds, 50)
        time.sleep(1.0)
        after = rss_kib(pid)
    print(
        f"  {cycles:,} cycles, {cycles / seconds:,.0f} cycles/s; server RSS {before:,} KiB before,"
        f" {after:,} KiB after ({after - before:+,} KiB); the server lived through it\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="trionano hostile-input benchmarks")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--flood", nargs=3, metavar=("KIND", "PORT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        kind, port, seconds = args.flood
        trio.run(flood, int(port), kind, float(seconds))
        return
    b9(3.0 if args.quick else 5.0, 1 if args.quick else 3)
    b10(5.0 if args.quick else 15.0)


if __name__ == "__main__":
    main()
