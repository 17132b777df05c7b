"""Runtime benchmarks B1, B3, B4 and B8, each beside a same-run baseline (B12, the cluster's,
is bench/cluster.py).

Servers and the load generator each run in their own process (bench/_servers.py,
bench/_loadgen.py); the load generator is plain sockets and epoll with precomputed frames and
reports its own CPU share, so it can be seen not to be the bottleneck.

- B1: request/response, 50 connections in a closed loop, 64 B JSON body: req/s, p50/p99, server
  CPU-us per request; ratio to a raw trio TCP echo server under the same load (target >= 0.7).
- B4: broadcast fan-out to 1,000 and 10,000 sessions: deliveries/s against a raw non-blocking
  socket.send loop (target >= 0.5), and encodes per broadcast (exactly 1, from the counter).
- B3 (issue #4): B1 over WebSocket; the WebSocket/TCP ratio from the same run (target >= 0.6).
- B8: idle memory per connected session at 10,000 sessions (target <= 16 KiB).

Run: ``nox -s bench`` or ``python -m bench.runtime [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


@contextmanager
def server(kind: str, *args: str) -> Iterator[tuple[int, int]]:
    """Start ``bench._servers KIND ARGS``; yields (port it prints, pid); stops it after."""
    with servers(kind, *args) as (ports, pid):
        yield ports[0], pid


@contextmanager
def servers(kind: str, *args: str) -> Iterator[tuple[list[int], int]]:
    """Start ``bench._servers KIND ARGS``; yields (the ports it prints on its first line, pid);
    stops it after (closing its stdin)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._servers", kind, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ports = [int(port) for port in proc.stdout.readline().split()]
        yield ports, proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def loadgen(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench._loadgen", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def closed_loop(kind: str, seconds: float, *extra: str) -> dict[str, Any]:
    """B1's load (50 connections, closed loop) against a fresh ``bench._servers KIND``."""
    with server(kind) as (port, pid):
        cpu0 = cpu_seconds(pid)
        result = loadgen("b1", str(port), "--connections", "50", "--seconds", str(seconds), *extra)
        result["server_cpu_us"] = (cpu_seconds(pid) - cpu0) / result["requests"] * 1e6
    return result


def compare(
    title: str,
    baseline: tuple[str, list[str]],
    measured: tuple[str, list[str]],
    seconds: float,
    repeats: int,
    target: float,
) -> None:
    """Interleaved runs of two closed-loop servers (a noisy neighbour hits both alike); the
    median ratio measured/baseline."""
    print(title)
    ratios = []
    for run in range(repeats):
        results = {}
        for kind, extra in (baseline, measured):
            result = results[kind] = closed_loop(kind, seconds, *extra)
            print(
                f"  run {run + 1} {kind:<12} {result['rps']:>9,.0f} req/s   p50 {result['p50_us']:>6,.0f} us"
                f"   p99 {result['p99_us']:>6,.0f} us   server {result['server_cpu_us']:>5.1f} CPU-us/req"
                f"   loadgen CPU {result['loadgen_cpu']:.0%}"
            )
        ratios.append(results[measured[0]]["rps"] / results[baseline[0]]["rps"])
    ratio = median(ratios)
    print(
        f"  ratio {measured[0]} / {baseline[0]}: {', '.join(f'{r:.2f}' for r in ratios)}; median {ratio:.2f}"
        f"   (target >= {target}: {'met' if ratio >= target else 'MISSED'})\n"
    )


def b1(seconds: float, repeats: int) -> None:
    title = (
        f"B1 request/response: 50 connections, closed loop, 64 B JSON body, {seconds:g} s per run;"
        " baseline: a raw trio TCP echo server"
    )
    compare(title, ("echo", []), ("trionano", ["--pomelo"]), seconds, repeats, 0.7)


def b3(seconds: float, repeats: int) -> None:
    title = f"B3 request/response over WebSocket vs TCP: B1's load, {seconds:g} s per run"
    compare(title, ("trionano", ["--pomelo"]), ("trionano-ws", ["--websocket"]), seconds, repeats, 0.6)


def b4(sizes: list[int], rounds: int, repeats: int) -> None:
    sys.path.insert(0, str(ROOT))
    from bench._servers import blast_packet

    packet_len = len(blast_packet())
    print(
        f"B4 broadcast fan-out: {rounds} broadcasts of a {packet_len} B packet, deliveries/s timed by each server"
        " (first send to last byte handed to the kernel), beside a raw non-blocking socket.send loop"
    )
    for sessions in sizes:
        for paced in (False, True):
            label = "paced (yield after each)" if paced else "burst (then yield)"
            ratios = []
            for _ in range(repeats):
                results = {}
                for kind, extra in (("rawsend", ["--baseline"]), ("trionano", ["--paced"] if paced else [])):
                    with server(kind) as (port, _):
                        args = ["--sessions", str(sessions), "--rounds", str(rounds), "--packet-len", str(packet_len)]
                        results[kind] = loadgen("b4", str(port), *args, *extra)
                ratios.append(results["trionano"]["per_second"] / results["rawsend"]["per_second"])
                assert results["trionano"]["encodes_per_broadcast"] == 1, results
                print(
                    f"  {sessions:>6} sessions, {label:<25} trionano {results['trionano']['per_second']:>11,.0f}/s"
                    f"   raw send loop {results['rawsend']['per_second']:>11,.0f}/s   ratio {ratios[-1]:.2f}"
                    f"   encodes/broadcast {results['trionano']['encodes_per_broadcast']:g}"
                    f"   dropped {results['trionano']['dropped']}"
                )
            ratio = median(ratios)
            verdict = f"target >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'}" if not paced else "worst case, no target"
            print(f"  {sessions:>6} sessions, {label:<25} median ratio {ratio:.2f}   ({verdict})")
    print()


def b8(sessions: int) -> None:
    print(f"B8 idle memory per session at {sessions:,} sessions")
    with server("trionano") as (port, pid):
        time.sleep(0.5)
        before = rss_kib(pid)
        holder = subprocess.Popen(
            [sys.executable, "-m", "bench._loadgen", "hold", str(port), "--sessions", str(sessions)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        holder.stdout.readline()
        time.sleep(1.0)
        after = rss_kib(pid)
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    per = (after - before) / sessions
    print(
        f"  server RSS {before:,} KiB -> {after:,} KiB: {per:.1f} KiB per session"
        f"   (target <= 16 KiB: {'met' if per <= 16 else 'MISSED'})\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="trionano runtime benchmarks")
    parser.add_argument("--quick", action="store_true", help="shorter runs, smaller fan-out")
    parser.add_argument("--only", choices=["b1", "b3", "b4", "b8"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["b1", "b3", "b4", "b8"])
    repeats = 3
    if "b1" in only:
        b1(2.0 if args.quick else 5.0, repeats)
    if "b3" in only:
        b3(2.0 if args.quick else 5.0, repeats)
    if "b4" in only:
        b4([1000] if args.quick else [1000, 10000], 50, repeats)
    if "b8" in only:
        b8(2000 if args.quick else 10000)


if __name__ == "__main__":
    main()
