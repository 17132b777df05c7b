"""Push at scale (issue #13): B5 merge window, the bucket goal, B14 scale. Every figure beside a
same-run baseline; servers in their own processes (bench/_push_servers.py), clients in others
(``python -m bench.push viewers|hold ...``: plain sockets and epoll, no trio).

- B5 merge: 1,000 viewers of one room over TCP, the room broadcasting ``--rate`` messages a
  second (each viewer gets every one); deliveries/s (counted by the viewers), writes/s (the
  server's ``writes`` counter) and server CPU per delivery, with a 50 ms merge window against
  none. Goal: >= 5x fewer writes, >= 3x less CPU per delivery.
- Buckets: a probe's echo request p99 while 50,000-member broadcasts run back to back, against
  the same probe idle; and, as the baseline, the same broadcasts made in one go (as before
  buckets). Goal: p99 under 2x idle + 10 ms. The members are real agents over a sink stream
  (see bench/_push_servers.py: this machine allows 20,000 open files per process).
- Overload: the same probe while 50,000-member broadcasts are issued one per step without
  waiting, faster than the fan-out reaches the members: the probe's p99 (same goal), how many
  broadcasts the fan-out refused to stay within ``Config.max_fanout_backlog``, the deliveries
  made per second and the most that waited.
- B14 scale: as many idle connections as one process may hold (RLIMIT_NOFILE raised to its
  hard limit), from several 127.0.0.x addresses, over TCP and WebSocket: server memory per
  connection, and the time for one broadcast to reach every client.

Results go to bench/results/push.md and push.png. Run: ``nox -s bench`` or
``python -m bench.push [--quick] [--only b5,buckets,overload,b14]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from bench._loadgen import ws_frame
from trionano import wire
from trionano._fanout import BUCKET_SIZE
from trionano.client import open_client

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HANDSHAKE = wire.encode_packet(wire.PacketType.HANDSHAKE) + wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
DATA = wire.PacketType.DATA


# -- processes ------------------------------------------------------------------------------


@contextmanager
def server(kind: str, *args: str) -> Iterator[tuple[int, int]]:
    """Start ``bench._push_servers KIND ARGS``; yields (its port, its pid); stops it after."""
    with servers(kind, *args) as (ports, pid):
        yield ports[0], pid


def spawn(module: str, *args: str) -> subprocess.Popen[str]:
    """``python -m MODULE ARGS`` from the repository's root, its stdin and stdout piped (text)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


@contextmanager
def servers(kind: str, *args: str) -> Iterator[tuple[list[int], int]]:
    """Start ``bench._push_servers KIND ARGS``; yields (the ports it prints, its pid)."""
    proc = spawn("bench._push_servers", kind, *args)
    try:
        assert proc.stdout is not None
        yield [int(port) for port in proc.stdout.readline().split()], proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(60)


@contextmanager
def client(mode: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Start ``bench.push MODE ARGS`` (a client process); waits for its "ready" line."""
    proc = spawn("bench.push", mode, *args)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"client {mode} failed: {line!r}")
        yield proc
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(60)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Close a client's stdin; its JSON line."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait(60)
    return dict(json.loads(out.strip().splitlines()[-1]))


async def call(port: int, route: str, body: object = None, timeout: float = 600) -> Any:  # noqa: ASYNC109
    async with open_client("127.0.0.1", port) as control:
        return await control.request(route, body if body is not None else {}, timeout=timeout)


def machine_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) of every CPU so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def median(values: list[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


# -- clients (their own processes) ----------------------------------------------------------


def _connect(port: int, source: str, websocket: bool, hello: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if websocket:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head[:80]
        sock.sendall(ws_frame(hello))
    else:
        sock.sendall(hello)
    return sock


def raise_nofile() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_viewers(port: int, count: int) -> None:
    """B5's viewers: join, then count the Data packets that arrive until stdin closes."""
    raise_nofile()
    hello = HANDSHAKE + wire.MessageCodec().request_packet(1, "room.join", b"")
    socks = [_connect(port, "127.0.0.1", False, hello) for _ in range(count)]
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytearray] = {}
    for sock in socks:
        sock.setblocking(False)
        buffers[sock.fileno()] = bytearray()
        selector.register(sock, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    by_fd = {sock.fileno(): sock for sock in socks}
    stdin = sys.stdin.fileno()
    packets = 0
    received = 0
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.fd == stdin:
                sys.stdin.read()
                print(json.dumps({"packets": packets, "bytes": received}), flush=True)
                return
            sock = by_fd[key.fd]
            data = sock.recv(262144)
            received += len(data)
            buf = buffers[sock.fileno()]
            buf += data
            offset = 0
            while len(buf) - offset >= 4:
                end = offset + 4 + int.from_bytes(buf[offset + 1 : offset + 4], "big")
                if end > len(buf):
                    break
                packets += buf[offset] == DATA
                offset = end
            del buf[:offset]


def run_hold(port: int, count: int, websocket: bool, addresses: int) -> None:
    """B14's clients: connect ``count`` times from 127.0.0.2.. (``addresses`` of them), join,
    print "ready"; on "watch" drain every socket, print "watching", and wait until each has
    received something (the broadcast): print when the last did (CLOCK_MONOTONIC)."""
    raise_nofile()
    hello = HANDSHAKE + wire.MessageCodec().request_packet(1, "scale.join", b"")
    socks = [_connect(port, f"127.0.0.{2 + i % addresses}", websocket, hello) for i in range(count)]
    print("ready", flush=True)
    sys.stdin.readline()  # "watch"
    for sock in socks:
        sock.setblocking(False)
        try:
            while sock.recv(262144):
                pass
        except BlockingIOError:
            pass
    selector = selectors.DefaultSelector()
    by_fd = {sock.fileno(): sock for sock in socks}
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    print("watching", flush=True)
    waiting = len(socks)
    last = 0.0
    while waiting:
        for key, _ in selector.select(timeout=120):
            sock = by_fd[key.fd]
            try:
                sock.recv(262144)
            except BlockingIOError:
                continue
            selector.unregister(sock)
            waiting -= 1
        last = time.monotonic()
    print(json.dumps({"last": last, "got": len(socks) - waiting}), flush=True)
    sys.stdin.read()
    for sock in socks:
        sock.close()


# -- B5 ---------------------------------------------------------------------------------------


def b5_once(window: float | None, rate: float, seconds: float, viewers: int) -> dict[str, float]:
    args = ["--window", str(window)] if window is not None else []
    with server("room", *args) as (port, _), client("viewers", str(port), str(viewers)) as proc:
        run = trio.run(call, port, "room.run", {"rate": rate, "seconds": seconds, "size": 64})
        got = finish(proc)
    deliveries = got["packets"] - viewers  # less each viewer's join Response
    return {
        "deliveries_s": deliveries / run["seconds"],
        "writes_s": run["writes"] / run["seconds"],
        "writes_per_k": run["writes"] / max(run["pushes"], 1) * 1000,
        "cpu_us": run["cpu"] / max(run["pushes"], 1) * 1e6,
        "pushes": run["pushes"],
        "deliveries": deliveries,
        "encoded": run["encoded"],
        "broadcasts": run["broadcasts"],
    }


def b5(rates: list[float], seconds: float, viewers: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for rate in rates:
        print(f"B5 merge: {viewers} viewers, the room at {rate:g} messages/s ({rate * viewers:,.0f} deliveries/s)")
        runs = []
        for _ in range(repeats):
            plain = b5_once(None, rate, seconds, viewers)
            merged = b5_once(0.05, rate, seconds, viewers)
            runs.append((plain, merged))
            print(
                f"  unmerged {plain['deliveries_s']:9,.0f} deliveries/s {plain['writes_s']:9,.0f} writes/s "
                f"{plain['cpu_us']:5.2f} CPU-us/delivery {plain['writes_per_k']:5.0f} writes/1k | 50 ms: "
                f"{merged['deliveries_s']:9,.0f} deliveries/s {merged['writes_s']:9,.0f} writes/s "
                f"{merged['cpu_us']:5.2f} CPU-us/delivery {merged['writes_per_k']:5.0f} writes/1k; "
                f"encodes/broadcast {merged['encoded'] / merged['broadcasts']:.2f}"
            )
        row = {
            "rate": rate,
            "viewers": viewers,
            "plain": {key: median([p[key] for p, _ in runs]) for key in runs[0][0]},
            "merged": {key: median([m[key] for _, m in runs]) for key in runs[0][1]},
            # per delivery: an unmerged server that cannot keep up delivers less, and writes less
            "writes_ratio": median([p["writes_per_k"] / m["writes_per_k"] for p, m in runs]),
            "cpu_ratio": median([p["cpu_us"] / m["cpu_us"] for p, m in runs]),
        }
        rows.append(row)
        print(
            f"  median of {repeats}: {row['writes_ratio']:.1f}x fewer writes per delivery (goal >= 5x), "
            f"{row['cpu_ratio']:.1f}x less CPU per delivery (goal >= 3x)"
        )
    print()
    return rows


# -- buckets ----------------------------------------------------------------------------------

GC_MODES = {
    "run": "as `trionano.run` sets it (`tune_gc` once listening), one `gc.collect()` after the joins",
    "page": "`gc.freeze()` after the joins, thresholds (700, 10, 10,000)",
    "off": "CPython's defaults",
}


async def probe(port: int, count: int, seconds: float = math.inf) -> list[float]:
    """``count`` echo requests 10 ms apart (fewer if ``seconds`` run out first); their latencies."""
    latencies: list[float] = []
    until = time.perf_counter() + seconds
    async with open_client("127.0.0.1", port) as control:
        while len(latencies) < count and time.perf_counter() < until:
            start = time.perf_counter()
            await control.request("fan.echo", {"b": 1}, timeout=600)
            latencies.append(time.perf_counter() - start)
            await trio.sleep(0.01)
    return latencies


async def probe_under_load(
    port: int, count: int, seconds: float = math.inf
) -> tuple[list[float], list[float], dict[str, int], float]:
    idle = await probe(port, count)
    async with open_client("127.0.0.1", port) as control:
        await control.notify("loop.start", {})
        start = time.perf_counter()
        loaded = await probe(port, count, seconds)
        elapsed = time.perf_counter() - start
        done = await control.request("fan.stop", {}, timeout=600)
    return idle, loaded, {key: int(value) for key, value in done.items()}, elapsed


def buckets(members: int, count: int, repeats: int, gc_mode: str) -> dict[str, Any]:
    print(
        f"Buckets: a probe's echo p99 while {members:,}-member broadcasts run back to back ({count} probes;"
        f" collector: {gc_mode})"
    )
    out: dict[str, Any] = {"members": members, "gc": gc_mode}
    for mode in ("buckets", "inline"):
        runs = []
        for _ in range(repeats if mode == "buckets" else max(1, repeats - 2)):
            args = ["--members", str(members), "--gc", gc_mode] + (["--inline"] if mode == "inline" else [])
            probes = count if mode == "buckets" else max(20, count // 5)  # one go: each probe waits seconds
            with server("fanout", *args) as (port, _):
                idle, loaded, stopped, elapsed = trio.run(probe_under_load, port, probes)
            done = stopped["broadcasts"]
            runs.append({"idle": p99(idle), "loaded": p99(loaded), "per_s": done / elapsed})
            met = p99(loaded) <= 2 * p99(idle) + 0.010
            print(
                f"  {mode:<8} idle p99 {p99(idle) * 1e3:7.2f} ms   loaded p99 {p99(loaded) * 1e3:8.2f} ms   "
                f"{done / elapsed:5.1f} broadcasts/s ({done / elapsed * members:,.0f} deliveries/s)   "
                f"goal {'met' if met else 'MISSED'}"
            )
        out[mode] = {key: median([run[key] for run in runs]) for key in runs[0]}
        out[mode]["met"] = sum(run["loaded"] <= 2 * run["idle"] + 0.010 for run in runs)
        out[mode]["runs"] = len(runs)
    print()
    return out


#: the loaded probe's time limit in the overload phase: a server that catches up in the caller
#: (before the backlog bound) answers one probe per catch-up, seconds apart
OVERLOAD_SECONDS = 30.0


def overload(members: int, count: int, repeats: int, gc_mode: str) -> dict[str, Any]:
    """The fan-out overloaded: broadcasts issued one per step without waiting (faster than the
    fan-out reaches 50,000 members), a probe's p99 against the same probe idle; what the fan-out
    refused to stay within ``Config.max_fanout_backlog`` (1,000,000 by default)."""
    print(
        f"Overload: a probe's echo p99 while {members:,}-member broadcasts are issued one per step, never"
        f" waiting ({count} probes or {OVERLOAD_SECONDS:g} s; collector: {gc_mode})"
    )
    runs = []
    for _ in range(repeats):
        with server("fanout", "--members", str(members), "--gc", gc_mode, "--flood") as (port, _):
            idle, loaded, done, elapsed = trio.run(probe_under_load, port, count, OVERLOAD_SECONDS)
        run = {
            "idle": p99(idle),
            "loaded": p99(loaded),
            "per_s": done["broadcasts"] / elapsed,
            "refused": done["refused"] / max(done["broadcasts"], 1),
            "deliveries_s": done["pushes"] / elapsed,
            "max_waiting": done["max_waiting"],
            "dropped_backlog": done["dropped_backlog"],
            "probes": len(loaded),
        }
        runs.append(run)
        met = run["loaded"] <= 2 * run["idle"] + 0.010
        print(
            f"  idle p99 {run['idle'] * 1e3:7.2f} ms   loaded p99 {run['loaded'] * 1e3:8.2f} ms   "
            f"{run['per_s']:7.1f} broadcasts/s issued, {run['refused']:6.1%} refused   "
            f"{run['deliveries_s']:,.0f} deliveries/s   most waiting {run['max_waiting']:,}   "
            f"dropped_backlog {run['dropped_backlog']:,}   {len(loaded)} probes   goal {'met' if met else 'MISSED'}"
        )
    out: dict[str, Any] = {key: median([run[key] for run in runs]) for key in runs[0]}
    out.update(members=members, gc=gc_mode, runs=len(runs))
    out["met"] = sum(run["loaded"] <= 2 * run["idle"] + 0.010 for run in runs)
    print()
    return out


# -- B14 ----------------------------------------------------------------------------------------


async def wait_members(port: int, count: int) -> dict[str, Any]:
    with trio.fail_after(600):
        while True:
            stats = await call(port, "scale.stats")
            if stats["members"] >= count:
                return dict(stats)
            await trio.sleep(0.5)


def b14_once(target: int, websocket: bool, addresses: int) -> dict[str, Any]:
    with servers("scale", *(["--ws"] if websocket else [])) as ((port, clients_port), _):
        empty = trio.run(call, port, "scale.stats")
        # every connection costs the server one file (and a control connection or two)
        count = min(target, empty["nofile"] - 64)
        with client("hold", str(clients_port), str(count), "ws" if websocket else "tcp", str(addresses)) as proc:
            full = trio.run(wait_members, port, count)
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write("watch\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "watching"
            start = trio.run(call, port, "scale.broadcast")["start"]
            reached = json.loads(proc.stdout.readline())
    return {
        "connections": count,
        "nofile": empty["nofile"],
        "kib_per_connection": (full["rss_kib"] - empty["rss_kib"]) / count,
        "rss_mib": full["rss_kib"] / 1024,
        "broadcast_s": reached["last"] - start,
        "reached": reached["got"],
    }


def b14(target: int, addresses: int, repeats: int) -> dict[str, Any]:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    print(
        f"B14 scale: up to {target:,} idle connections from {addresses} addresses (RLIMIT_NOFILE hard limit {limit:,})"
    )
    out: dict[str, Any] = {}
    for transport in ("tcp", "ws"):
        runs = [b14_once(target, transport == "ws", addresses) for _ in range(repeats)]
        for run in runs:
            print(
                f"  {transport.upper():<3} {run['connections']:7,} connections  "
                f"{run['kib_per_connection']:6.1f} KiB each "
                f"(server RSS {run['rss_mib']:.0f} MiB)   one broadcast reached {run['reached']:,} in "
                f"{run['broadcast_s'] * 1e3:7.1f} ms"
            )
        out[transport] = {key: median([run[key] for run in runs]) for key in runs[0]}
    print()
    return out


# -- the report -------------------------------------------------------------------------------


def write_results(new: dict[str, Any]) -> None:
    """Write push.md and push.png from ``new`` and, for the sections it lacks, the last run's
    (kept in push.json), so ``--only`` re-runs one section."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved = RESULTS / "push.json"
    report = json.loads(saved.read_text()) if saved.exists() else {}
    for key in ("b5", "buckets", "overload", "b14"):
        if key in new:
            report[key] = new[key]
            report[f"{key}_when"] = f"{new['when']}, medians of {new['repeats']} runs; {new['load']}"
    report.update({key: new[key] for key in ("when", "load", "repeats") if key in new})
    saved.write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Push at scale (bench/push.py)",
        "",
        f"{os.cpu_count()} cores shared with other work. Ratios are taken within each run; each section says"
        " when it ran, how many runs its medians take, and how busy the machine was.",
        "",
    ]
    if "b5" in report:
        lines += [
            "## B5 merge window (TCP, 64 B messages)",
            "",
            f"Run {report['b5_when']}.",
            "",
            "| room rate | deliveries/s unmerged | deliveries/s 50 ms | writes/s unmerged | writes/s 50 ms "
            "| writes per 1,000 deliveries unmerged | 50 ms | fewer writes (goal >= 5x) "
            "| CPU-us/delivery unmerged | 50 ms | less CPU (goal >= 3x) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in report["b5"]:
            plain, merged = row["plain"], row["merged"]
            lines.append(
                f"| {row['rate']:g}/s to {row['viewers']:,} viewers | {plain['deliveries_s']:,.0f} "
                f"| {merged['deliveries_s']:,.0f} | {plain['writes_s']:,.0f} | {merged['writes_s']:,.0f} "
                f"| {plain['writes_per_k']:,.0f} | {merged['writes_per_k']:,.0f} | {row['writes_ratio']:.1f}x "
                f"| {plain['cpu_us']:.2f} | {merged['cpu_us']:.2f} "
                f"| {row['cpu_ratio']:.1f}x |"
            )
        lines.append("")
    if "buckets" in report:
        b = report["buckets"]
        lines += [
            f"## Buckets: an unrelated request while {b['members']:,}-member broadcasts run back to back",
            "",
            f"Run {report['buckets_when']}. The server's collector: "
            + GC_MODES.get(b.get("gc", "page"), b.get("gc", "page"))
            + ".",
            "",
            "| fan-out | idle p99 | loaded p99 | goal (<= 2x idle + 10 ms) | broadcasts/s |",
            "| --- | --- | --- | --- | --- |",
        ]
        for mode, name in (("buckets", f"buckets of {BUCKET_SIZE} (trionano)"), ("inline", "one go (before buckets)")):
            m = b[mode]
            lines.append(
                f"| {name} | {m['idle'] * 1e3:.2f} ms | {m['loaded'] * 1e3:.2f} ms "
                f"| met in {m['met']}/{m['runs']} | {m['per_s']:.1f} |"
            )
        lines.append("")
    if "overload" in report:
        o = report["overload"]
        lines += [
            f"## Overload: {o['members']:,}-member broadcasts issued faster than the fan-out reaches them",
            "",
            f"Run {report['overload_when']}. Each broadcast is issued without waiting, one per step of its"
            " lane; the fan-out keeps its backlog within `Config.max_fanout_backlog` (1,000,000) by refusing"
            " whole the broadcasts that would pass it (`dropped_backlog`).",
            "",
            "| idle p99 | loaded p99 | goal (<= 2x idle + 10 ms) | broadcasts/s issued | refused "
            "| deliveries/s | most waiting |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {o['idle'] * 1e3:.2f} ms | {o['loaded'] * 1e3:.2f} ms | met in {o['met']}/{o['runs']} "
            f"| {o['per_s']:.1f} | {o['refused']:.1%} | {o['deliveries_s']:,.0f} | {o['max_waiting']:,.0f} |",
            "",
        ]
    if "b14" in report:
        lines += [
            "## B14 scale: idle connections in one process",
            "",
            f"Run {report['b14_when']}.",
            "",
            "| transport | connections | KiB per connection (server RSS) | one broadcast reaches all in |",
            "| --- | --- | --- | --- |",
        ]
        for transport, m in report["b14"].items():
            lines.append(
                f"| {transport.upper()} | {m['connections']:,.0f} (file limit {m['nofile']:,.0f}) "
                f"| {m['kib_per_connection']:.1f} | {m['broadcast_s'] * 1e3:.0f} ms |"
            )
        lines.append("")
    for note in report.get("notes", []):  # by hand in push.json: what a reader needs beside the tables
        lines += [note, ""]
    (RESULTS / "push.md").write_text("\n".join(lines))
    plot(report)


def plot(report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [key for key in ("b5", "buckets", "b14") if key in report]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        if key == "b5":
            row = report["b5"][-1]
            names = ["writes/s", "CPU-us/delivery x1000"]
            plain = [row["plain"]["writes_s"], row["plain"]["cpu_us"] * 1000]
            merged = [row["merged"]["writes_s"], row["merged"]["cpu_us"] * 1000]
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], plain, 0.4, label="unmerged")
            ax.bar([x + 0.2 for x in xs], merged, 0.4, label="50 ms window")
            ax.set_xticks(list(xs), names)
            ax.set_title(f"B5: {row['viewers']:,} viewers, room at {row['rate']:g} msg/s")
            ax.legend()
        elif key == "buckets":
            b = report["buckets"]
            modes = ["buckets", "inline"]
            ax.bar([x - 0.2 for x in range(2)], [b[m]["idle"] * 1e3 for m in modes], 0.4, label="idle p99")
            ax.bar([x + 0.2 for x in range(2)], [b[m]["loaded"] * 1e3 for m in modes], 0.4, label="loaded p99")
            ax.set_xticks([0, 1], [f"buckets of {BUCKET_SIZE}", "one go"])
            ax.set_yscale("log")
            ax.set_ylabel("ms")
            ax.set_title(f"Probe p99, {b['members']:,}-member broadcasts")
            ax.legend()
        else:
            m = report["b14"]
            transports = list(m)
            ax.bar(range(len(transports)), [m[t]["kib_per_connection"] for t in transports], 0.5)
            ax.set_xticks(list(range(len(transports))), [t.upper() for t in transports])
            ax.set_ylabel("KiB per idle connection")
            ax.set_title("B14: " + ", ".join(f"{t.upper()} {m[t]['connections']:,.0f} conns" for t in transports))
    fig.tight_layout()
    fig.savefig(RESULTS / "push.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode")
    viewers = sub.add_parser("viewers")
    viewers.add_argument("port", type=int)
    viewers.add_argument("count", type=int)
    hold = sub.add_parser("hold")
    hold.add_argument("port", type=int)
    hold.add_argument("count", type=int)
    hold.add_argument("transport", choices=["tcp", "ws"])
    hold.add_argument("addresses", type=int)
    parser.add_argument("--quick", action="store_true", help="smaller N, shorter runs")
    parser.add_argument("--only", default="b5,buckets,overload,b14")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--fanout-gc", choices=["run", "page", "off"], default="run", help="buckets: the server's collector"
    )
    args, _ = parser.parse_known_args()
    if args.mode == "viewers":
        run_viewers(args.port, args.count)
        return
    if args.mode == "hold":
        run_hold(args.port, args.count, args.transport == "ws", args.addresses)
        return
    only = set(args.only.split(","))
    repeats = args.repeats
    busy0, total0 = machine_busy()
    load0 = os.getloadavg()[0]
    report: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "repeats": repeats}
    if "b5" in only:
        rates = [100.0] if args.quick else [10.0, 100.0]
        report["b5"] = b5(rates, 2.0 if args.quick else 4.0, 1000, repeats)
    if "buckets" in only:
        report["buckets"] = buckets(
            5_000 if args.quick else 50_000, 100 if args.quick else 300, repeats, args.fanout_gc
        )
    if "overload" in only:
        report["overload"] = overload(
            5_000 if args.quick else 50_000, 100 if args.quick else 300, repeats, args.fanout_gc
        )
    if "b14" in only:
        report["b14"] = b14(2_000 if args.quick else 100_000, 4, 1 if args.quick else repeats)
    busy1, total1 = machine_busy()
    report["load"] = (
        f"machine CPU busy {100 * (busy1 - busy0) / max(total1 - total0, 1):.0f}% over the run (all processes, "
        f"these included), load average {load0:.2f} at the start and {os.getloadavg()[0]:.2f} at the end"
    )
    print(report["load"])
    write_results(report)
    print(f"wrote {RESULTS / 'push.md'} and push.png")


if __name__ == "__main__":
    main()
