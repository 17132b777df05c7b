"""Runtime benchmarks B1, B3, B4 and B8, each beside a same-run baseline (B12, the cluster's,
is bench/cluster.py).

Servers and the load generator each run in their own process (bench/_servers.py,
bench/_loadgen.py); the load generator is plain sockets and epoll with precomputed frames and
reports its own CPU share, so it can be seen not to be the bottleneck.

- B1: request/response, a closed loop at 50 and 1,000 connections, 64 B JSON echo: req/s,
  p50/p99, server CPU-us per request, beside the floor (bench._servers floor: trionano's
  required shape with nothing else; goal <= 1.15x its CPU per request, and at 1,000 connections
  within 10% of trionano's own at 50) and, where npm is available, pinus 1.7.4 (bench/_pinus.py;
  goals >= 1.2x its throughput, <= 0.8x its CPU per request).
- B3: B1 over WebSocket beside TCP from the same run (goals >= 0.8, <= 100 CPU-us/req), and the
  floor's shape over WebSocket.
- B4: broadcast fan-out to 1,000 and 10,000 sessions: deliveries/s against a raw non-blocking
  socket.send loop (target >= 0.5), encodes per broadcast (exactly 1, from the counter), and the
  burst over WebSocket against TCP per delivery (goal >= 0.5).
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
from typing import Any, Final

from bench import _pinus as pinus

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


#: The server's core and the load generator's (on a machine with two or more), so neither
#: steals the other's time slices.
SERVER_CORE: Final = 0
LOADGEN_CORE: Final = 1


def pin(pid: int, core: int) -> None:
    """Keep process ``pid`` on ``core`` (when the machine has more than one)."""
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {core})


@contextmanager
def server(kind: str, *args: str, pinned: bool = False) -> Iterator[tuple[int, int]]:
    """Start ``bench._servers KIND ARGS``; yields (port it prints, pid); stops it after."""
    with servers(kind, *args, pinned=pinned) as (ports, pid):
        yield ports[0], pid


@contextmanager
def servers(kind: str, *args: str, pinned: bool = False) -> Iterator[tuple[list[int], int]]:
    """Start ``bench._servers KIND ARGS``; yields (the ports it prints on its first line, pid);
    stops it after (closing its stdin). ``pinned``: on :data:`SERVER_CORE`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._servers", kind, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if pinned:
        pin(proc.pid, SERVER_CORE)
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


@contextmanager
def peer(kind: str) -> Iterator[tuple[int, list[int]]]:
    """A server to measure, pinned to :data:`SERVER_CORE`: a ``bench._servers`` kind, or
    ``pinus`` (bench/pinus: its master and connector processes). Yields (port, the pids whose
    CPU is the server's)."""
    if kind == "pinus":
        with pinus.serve(SERVER_CORE) as (port, pids):
            yield port, pids
    else:
        with server(kind, pinned=True) as (port, pid):
            yield port, [pid]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def loadgen(*args: str, pinned: bool = False) -> dict[str, Any]:
    """Run ``bench._loadgen ARGS``; its JSON result. ``pinned``: on :data:`LOADGEN_CORE`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._loadgen", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    if pinned:
        pin(proc.pid, LOADGEN_CORE)
    out, _ = proc.communicate()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def closed_loop(kind: str, seconds: float, *extra: str, connections: int = 50) -> dict[str, Any]:
    """B1's load (a closed loop over ``connections``) against a fresh server ``kind`` (see
    :func:`peer`), the server and the load generator each pinned to a core of its own. Adds
    ``server_cpu_us``: the server's CPU (every process of it) per request, sampled when every
    connection is up and again when the time is up (connecting, handshakes and closing are not
    charged to requests). Raises RuntimeError when an answer was not the echo."""
    with peer(kind) as (port, pids):
        args = ["b1", str(port), "--connections", str(connections), "--seconds", str(seconds), "--window", *extra]
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._loadgen", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        pin(proc.pid, LOADGEN_CORE)
        assert proc.stdin is not None
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise RuntimeError(f"the load generator did not connect to {kind}")
        time.sleep(0.2)  # the handshakes' work is done
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "done":
            proc.kill()
            raise RuntimeError(f"the load generator failed against {kind}")
        cpu1 = sum(cpu_seconds(pid) for pid in pids)
        out, _ = proc.communicate("close\n")
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, out)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        result["server_cpu_us"] = (cpu1 - cpu0) / result["requests"] * 1e6
    if result["wrong"]:
        raise RuntimeError(f"{kind}: {result['wrong']} answers were not the echo; the first: {result['first_wrong']}")
    return result


def verdict(value: float, goal: str) -> str:
    """``goal`` is "<= X" or ">= X": 'met' or 'MISSED'."""
    op, bound = goal.split()
    ok = value <= float(bound) if op == "<=" else value >= float(bound)
    return "met" if ok else "MISSED"


def print_run(run: int, label: str, result: dict[str, Any]) -> None:
    print(
        f"  run {run + 1} {label:<20} {result['rps']:>9,.0f} req/s   p50 {result['p50_us']:>6,.0f} us"
        f"   p99 {result['p99_us']:>7,.0f} us   server {result['server_cpu_us']:>6.1f} CPU-us/req"
        f"   loadgen CPU {result['loadgen_cpu']:.0%}",
        flush=True,
    )


def print_figure(
    name: str, values: list[float], goal: str | None, unit: str = "", goals: list[str] | None = None
) -> float:
    """One figure: every run's value, the median, the goal and whether it is met (a figure
    with a goal is also added to ``goals``, for the closing note)."""
    value = median(values)
    runs = ", ".join(f"{v:.2f}" for v in values)
    tail = f"   (goal {goal}: {verdict(value, goal)})" if goal else ""
    line = f"  {name:<44} median {value:>7.2f}{unit}   runs {runs}{tail}"
    print(line)
    if goal and goals is not None:
        goals.append(line)
    return value


def b1(seconds: float, repeats: int, connection_counts: list[int], goals: list[str]) -> None:
    """Request/response over TCP: trionano beside the minimal-shape floor (its baseline) and,
    where npm is available, pinus 1.7.4; interleaved runs, ratios from the same run."""
    peers = ["floor", "trionano"]
    if pinus.available():
        peers.append("pinus")
    print(
        f"B1 request/response over TCP: closed loop, 64 B JSON echo, {seconds:g} s per run, "
        f"{repeats} interleaved rounds; server on core {SERVER_CORE}, load generator on core {LOADGEN_CORE}.\n"
        "  baseline: the floor (bench._servers floor: trionano's required shape, reader + writer tasks per"
        " connection, memory channels, one scheduler task; an inline codec and nothing else)\n"
        "  server CPU is sampled once every connection is up and again when the time is up (connecting and"
        " closing are not charged to requests); every answer is checked to be the echo"
    )
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for run in range(repeats):
        for connections in connection_counts:
            for kind in peers:
                extra = ["--pomelo", "--route", pinus.ROUTE] if kind == "pinus" else ["--pomelo"]
                result = closed_loop(kind, seconds, *extra, connections=connections)
                results.setdefault((connections, kind), []).append(result)
                print_run(run, f"{kind} @{connections}", result)
    for connections in connection_counts:
        runs = {kind: results[(connections, kind)] for kind in peers}
        cpu = {kind: [r["server_cpu_us"] for r in runs[kind]] for kind in peers}
        print(f"  -- {connections} connections")
        for kind in peers:
            print_figure(f"{kind} CPU-us/req", cpu[kind], None)
        ratios = [t / f for t, f in zip(cpu["trionano"], cpu["floor"], strict=True)]
        print_figure(f"@{connections}: trionano / floor CPU per request", ratios, "<= 1.15", goals=goals)
        if "pinus" in peers:
            rps = [t["rps"] / p["rps"] for t, p in zip(runs["trionano"], runs["pinus"], strict=True)]
            print_figure(f"@{connections}: trionano / pinus throughput", rps, ">= 1.2", goals=goals)
            cpu_ratio = [t / p for t, p in zip(cpu["trionano"], cpu["pinus"], strict=True)]
            print_figure(f"@{connections}: trionano / pinus CPU per request", cpu_ratio, "<= 0.8", goals=goals)
            # context for the goal above: the required shape with nothing else, against pinus
            floor_ratio = [f / p for f, p in zip(cpu["floor"], cpu["pinus"], strict=True)]
            print_figure(f"@{connections}: floor / pinus CPU per request (context)", floor_ratio, None)
    if len(connection_counts) > 1:
        low, high = min(connection_counts), max(connection_counts)
        print(f"  -- trionano at {high} connections against its own {low}")
        growth = [
            h["server_cpu_us"] / lo["server_cpu_us"]
            for h, lo in zip(results[(high, "trionano")], results[(low, "trionano")], strict=True)
        ]
        print_figure(f"CPU per request @{high} / @{low}", growth, "<= 1.10", goals=goals)
        floor_growth = [
            h["server_cpu_us"] / lo["server_cpu_us"]
            for h, lo in zip(results[(high, "floor")], results[(low, "floor")], strict=True)
        ]
        print_figure(f"floor CPU per request @{high} / @{low} (context)", floor_growth, None)
    if "pinus" not in peers:
        print(f"  pinus skipped: {pinus.unavailable_reason()}")
    print()


def b3(seconds: float, repeats: int, goals: list[str]) -> None:
    """B1 over WebSocket beside B1 over TCP (trionano both), and the WebSocket floor."""
    peers: list[tuple[str, str, list[str]]] = [
        ("trionano TCP", "trionano", ["--pomelo"]),
        ("trionano WS", "trionano-ws", ["--websocket"]),
        ("floor WS", "floor-ws", ["--websocket"]),
    ]
    print(
        f"B3 request/response over WebSocket vs TCP: B1's load at 50 connections, {seconds:g} s per run;"
        " baseline: trionano over TCP, same run (and the floor's shape over WebSocket, same engine)"
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for run in range(repeats):
        for label, kind, extra in peers:
            result = closed_loop(kind, seconds, *extra)
            results.setdefault(label, []).append(result)
            print_run(run, label, result)
    for label, _, _ in peers:
        print_figure(f"{label} CPU-us/req", [r["server_cpu_us"] for r in results[label]], None)
    tcp, ws = results["trionano TCP"], results["trionano WS"]
    throughput = [w["rps"] / t["rps"] for w, t in zip(ws, tcp, strict=True)]
    print_figure("B3 WS / TCP throughput", throughput, ">= 0.8", goals=goals)
    print_figure(
        "B3 TCP / WS CPU per request",
        [t["server_cpu_us"] / w["server_cpu_us"] for w, t in zip(ws, tcp, strict=True)],
        ">= 0.8",
        goals=goals,
    )
    print_figure("B3 trionano WS CPU-us/req", [w["server_cpu_us"] for w in ws], "<= 100", goals=goals)
    floor = results["floor WS"]
    print_figure(
        "trionano WS / floor WS CPU per request",
        [w["server_cpu_us"] / f["server_cpu_us"] for w, f in zip(ws, floor, strict=True)],
        None,
    )
    print()


def b4(sizes: list[int], rounds: int, repeats: int, goals: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from bench._servers import blast_packet

    packet_len = len(blast_packet())
    print(
        f"B4 broadcast fan-out: {rounds} broadcasts of a {packet_len} B packet, deliveries/s timed by each server"
        " (first send to last byte handed to the kernel), beside a raw non-blocking socket.send loop;"
        " and the same burst over WebSocket beside TCP"
    )
    for sessions in sizes:
        ws_ratios = []
        for paced in (False, True):
            label = "paced (yield after each)" if paced else "burst (then yield)"
            ratios = []
            for _ in range(repeats):
                results = {}
                runs = [("rawsend", "rawsend", ["--baseline"]), ("trionano", "trionano", ["--paced"] if paced else [])]
                if not paced:
                    runs.append(("trionano-ws", "trionano-ws", ["--websocket"]))
                for name, kind, extra in runs:
                    with server(kind, pinned=True) as (port, _):
                        args = ["--sessions", str(sessions), "--rounds", str(rounds), "--packet-len", str(packet_len)]
                        results[name] = loadgen("b4", str(port), *args, *extra, pinned=True)
                ratios.append(results["trionano"]["per_second"] / results["rawsend"]["per_second"])
                assert results["trionano"]["encodes_per_broadcast"] == 1, results
                print(
                    f"  {sessions:>6} sessions, {label:<25} trionano {results['trionano']['per_second']:>11,.0f}/s"
                    f"   raw send loop {results['rawsend']['per_second']:>11,.0f}/s   ratio {ratios[-1]:.2f}"
                    f"   encodes/broadcast {results['trionano']['encodes_per_broadcast']:g}"
                    f"   dropped {results['trionano']['dropped']}"
                )
                if not paced:
                    ws = results["trionano-ws"]
                    ws_ratios.append(ws["per_second"] / results["trionano"]["per_second"])
                    print(
                        f"  {sessions:>6} sessions, {'over WebSocket':<25} trionano {ws['per_second']:>11,.0f}/s"
                        f"   ({1e6 / ws['per_second']:.2f} us per delivery against"
                        f" {1e6 / results['trionano']['per_second']:.2f} over TCP)   ratio WS/TCP {ws_ratios[-1]:.2f}"
                    )
            ratio = median(ratios)
            verdict = f"target >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'}" if not paced else "worst case, no target"
            print(f"  {sessions:>6} sessions, {label:<25} median ratio {ratio:.2f}   ({verdict})")
        print_figure(f"{sessions} sessions: broadcast WS / TCP per delivery", ws_ratios, ">= 0.5", goals=goals)
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
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians need >= 3)")
    args = parser.parse_args()
    only = set(args.only or ["b1", "b3", "b4", "b8"])
    repeats = args.repeats
    goals: list[str] = []
    started = os.getloadavg()[0]
    if "b1" in only:
        b1(2.0 if args.quick else 5.0, repeats, [50, 1000], goals)
    if "b3" in only:
        b3(2.0 if args.quick else 5.0, repeats, goals)
    if "b4" in only:
        b4([1000] if args.quick else [1000, 10000], 50, repeats, goals)
    if "b8" in only:
        b8(2000 if args.quick else 10000)
    if goals:
        print(
            f"Closing note (issue #10): medians of {repeats} interleaved runs, ratios from the same run; load"
            f" average {started:.1f} at the start, {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores"
            " (other work on the machine moves absolute figures: trust the ratios)."
        )
        for line in goals:
            print(line)
        print(
            "  Where the rest goes: `python -m bench.profile` splits the synchronous path by layer (protocol,"
            " router, handler + answer, channels); sockets, waits and Trio's task switches are the remainder.\n"
        )


if __name__ == "__main__":
    main()
