"""B12 (issues #5, #11): a request/response forwarded through a gate to one backend, against
the same handler served locally, in the same run, over both cluster paths:

- ``stream``: trionano <-> trionano, the fast path (one stream per peer, batches of frames);
- ``unary``: nano's unary ``clusterpb`` calls (every node with ``fast_path=False``), as with a
  Go nano node on the other side.

Each run starts fresh processes: the local server (``bench._servers trionano``), then a master,
a backend and a gate per path (``python -m bench.cluster node ROLE``). The load is B1's: 50
connections in a closed loop, 64 B JSON bodies (``bench._loadgen``). Printed per path: req/s
and its ratio to local, p50/p99, CPU per forwarded request on the gate and on the backend (from
/proc), and for the fast path the p50/p99 under an open-loop load at half its closed-loop rate
(``python -m bench.cluster paced``). Medians of the runs (>= 3).

Targets (issue #11): stream >= 0.3 of local (stretch 0.5), p99 < 10 ms at half load; unary >= 0.1.

The local server also takes the open-loop load at the stream path's half rate (what the
machine itself adds to the tail, same run), and each run prints the load average (the bench
machine's 2 cores are shared). ``python -m bench.cluster crossing``: the bridge's crossing
micro-bench (asyncio -> idle Trio -> asyncio).

``python -m bench.cluster tail [--runs N]``: where the fast path's half-load tail comes from,
by instrumentation: per node process and thread, CPU, run-queue wait (time runnable but not
running, from ``/proc/PID/task/TID/schedstat``) and context switches per request; inside each
node, the collector's pauses per generation (``gc.callbacks``) and the bridge's crossing
latency while loaded (an asyncio task crossing into Trio and back every ~10 ms); and the load
generator's own CPU, run-queue wait and lateness against its schedule.

Run: ``nox -s bench`` or ``python -m bench.cluster [--quick] [--runs N]``. ``--profile DIR``
runs the gate and backend under cProfile (their stats in DIR/{gate,backend}-{path}.prof).
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
PATHS = ("stream", "unary")


# -- the processes ----------------------------------------------------------------------------


@contextmanager
def process(*args: str) -> Iterator[tuple[int, int]]:
    """Start ``python ARGS``; yields (the port it prints on its first line, pid); stops it after
    (closing its stdin)."""
    with popen(*args) as proc:
        assert proc.stdout is not None
        yield int(proc.stdout.readline().split()[0]), proc.pid


@contextmanager
def popen(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Start ``python ARGS`` with pipes; stops it after (closing its stdin)."""
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def schedstat(pid: int | str) -> dict[str, int]:
    """The threads of process ``pid`` ("self": this one) together: CPU and run-queue wait
    (ns, ``/proc/PID/task/TID/schedstat``) and context switches (voluntary, involuntary)."""
    return _sum(thread_stats(pid).values())


def thread_stats(pid: int | str) -> dict[str, dict[str, int]]:
    """As :func:`schedstat`, per thread: "main" (the process's first thread), "others" (the
    rest together: in a node, an idle stdin reader; with Trio in guest mode, its I/O thread)."""
    main: list[dict[str, int]] = []
    others: list[dict[str, int]] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu, wait, _ = (int(field) for field in (task / "schedstat").read_text().split())
            status = dict(line.split(":\t") for line in (task / "status").read_text().splitlines() if ":\t" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
        stats = {
            "cpu_ns": cpu,
            "wait_ns": wait,
            "voluntary": int(status["voluntary_ctxt_switches"]),
            "involuntary": int(status["nonvoluntary_ctxt_switches"]),
        }
        (main if int(status["Pid"]) == int(status["Tgid"]) else others).append(stats)
    return {"main": _sum(main), "others": _sum(others)}


def _sum(stats: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = collections.Counter()
    for one in stats:
        for key, value in one.items():
            total[key] += value
    return {key: total[key] for key in ("cpu_ns", "wait_ns", "voluntary", "involuntary")}


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def run_json(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def closed_loop(port: int, seconds: float) -> dict[str, Any]:
    return run_json(
        "-m", "bench._loadgen", "b1", str(port), "--connections", "50", "--seconds", str(seconds), "--pomelo"
    )


@contextmanager
def cluster(path: str, profile: Path | None) -> Iterator[tuple[int, int, int]]:
    """A master, a backend and a gate on ``path``; yields (the gate's client port, gate pid,
    backend pid)."""
    with traced_cluster(path, profile, None) as (gate_port, gate_pid, backend_pid, _):
        yield gate_port, gate_pid, backend_pid


@contextmanager
def traced_cluster(
    path: str, profile: Path | None, trace: Path | None
) -> Iterator[tuple[int, int, int, Callable[[], None]]]:
    """:func:`cluster`, the gate and backend with ``--trace trace/ROLE.json`` when ``trace`` is
    given; also yields ``mark()``, which has both write what their probes saw since the last
    mark (and start anew)."""
    master = free_address()
    extra = ["--unary"] if path == "unary" else []

    def node(role: str) -> list[str]:
        prof = ["--profile", str(profile / f"{role}-{path}.prof")] if profile and role != "master" else []
        traced = ["--trace", str(trace / f"{role}.json")] if trace and role != "master" else []
        listen = master if role == "master" else free_address()
        return ["-m", "bench.cluster", "node", role, "--listen", listen, "--master", master, *extra, *prof, *traced]

    with ExitStack() as stack:
        stack.enter_context(process(*node("master")))
        backend = stack.enter_context(popen(*node("backend")))
        gate = stack.enter_context(popen(*node("gate")))
        assert backend.stdout is not None
        assert gate.stdout is not None
        backend.stdout.readline()
        gate_port = int(gate.stdout.readline().split()[0])

        def mark() -> None:
            for proc in (gate, backend):
                assert proc.stdin is not None
                proc.stdin.write("mark\n")
                proc.stdin.flush()
            for proc in (gate, backend):
                assert proc.stdout is not None
                proc.stdout.readline()  # "marked": the file is written

        time.sleep(0.5)
        yield gate_port, gate.pid, backend.pid, mark


# -- B12 --------------------------------------------------------------------------------------


def b12(seconds: float, runs: int, profile: Path | None) -> None:
    print(
        f"B12 forwarded request/response: client -> gate -> backend, 50 connections, closed loop, 64 B JSON,"
        f" {seconds:g} s per run; baseline: the same handler served locally, same run"
    )
    results: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    for run in range(runs):
        load = os.getloadavg()[0]
        with process("-m", "bench._servers", "trionano") as (port, pid):
            cpu0 = cpu_seconds(pid)
            local = closed_loop(port, seconds)
            local["cpu_us"] = (cpu_seconds(pid) - cpu0) / local["requests"] * 1e6
            local_port = port
            measured_paths: dict[str, dict[str, float]] = {}
            for path in PATHS:
                measured_paths[path] = measure(path, profile, seconds, local)
            # the same open-loop load on the local server, at the stream path's half rate: what
            # the machine itself (2 shared cores) adds to the tail, same run
            half_local = paced_json(local_port, measured_paths["stream"]["half_rate"], seconds)
            local["half_p50_us"], local["half_p99_us"] = half_local["p50_us"], half_local["p99_us"]
        local["load"] = (load + os.getloadavg()[0]) / 2
        results["local"].append(local)
        print(
            f"  run {run + 1} local   {local['rps']:>8,.0f} req/s   p50 {local['p50_us']:>7,.0f} us"
            f"   p99 {local['p99_us']:>7,.0f} us   server {local['cpu_us']:>6.1f} CPU-us/req"
            f"   at the stream's half rate: p50 {local['half_p50_us']:,.0f} us p99 {local['half_p99_us']:,.0f} us"
            f"   (load average {local['load']:.1f})"
        )
        for path in PATHS:
            measured = measured_paths[path]
            results[path].append(measured)
            line = (
                f"  run {run + 1} {path:<7} {measured['rps']:>8,.0f} req/s   p50 {measured['p50_us']:>7,.0f} us"
                f"   p99 {measured['p99_us']:>7,.0f} us   gate {measured['gate_us']:>6.1f}"
                f" + backend {measured['backend_us']:>6.1f} CPU-us/req   ratio {measured['ratio']:.2f}"
            )
            if path == "stream":
                at_half = f"p50 {measured['half_p50_us']:,.0f} us p99 {measured['half_p99_us']:,.0f} us"
                line += f"   at {measured['half_rate']:,.0f} req/s: {at_half}"
            print(line)
    print("  medians:")
    local_cpu = med(results["local"], "cpu_us")
    print(f"    local   {med(results['local'], 'rps'):>8,.0f} req/s   server {local_cpu:.1f} CPU-us/req")
    targets = {"stream": 0.3, "unary": 0.1}
    for path in PATHS:
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in results[path])
        ratio = med(results[path], "ratio")
        print(
            f"    {path:<7} {med(results[path], 'rps'):>8,.0f} req/s   ratio {ratio:.2f} ({ratios})"
            f"   p50 {med(results[path], 'p50_us'):,.0f} us   p99 {med(results[path], 'p99_us'):,.0f} us"
            f"   gate {med(results[path], 'gate_us'):.1f} + backend {med(results[path], 'backend_us'):.1f} CPU-us/req"
            f"   (target >= {targets[path]}: {'met' if ratio >= targets[path] else 'MISSED'})"
        )
    half_p99 = med(results["stream"], "half_p99_us")
    print(
        f"    stream at half load ({med(results['stream'], 'half_rate'):,.0f} req/s, open loop):"
        f" p50 {med(results['stream'], 'half_p50_us'):,.0f} us   p99 {half_p99:,.0f} us"
        f"   (target < 10 ms: {'met' if half_p99 < 10_000 else 'MISSED'});"
        f" local at that rate: p50 {med(results['local'], 'half_p50_us'):,.0f} us"
        f"   p99 {med(results['local'], 'half_p99_us'):,.0f} us"
    )
    print(f"    load average during the runs: {med(results['local'], 'load'):.1f} (2 cores, shared)\n")


def measure(path: str, profile: Path | None, seconds: float, local: dict[str, float]) -> dict[str, float]:
    """One path's figures: closed loop, CPU per request on gate and backend, and for the
    stream path an open loop at half its rate."""
    with cluster(path, profile) as (gate_port, gate_pid, backend_pid):
        gate0, backend0 = cpu_seconds(gate_pid), cpu_seconds(backend_pid)
        measured = closed_loop(gate_port, seconds)
        measured["gate_us"] = (cpu_seconds(gate_pid) - gate0) / measured["requests"] * 1e6
        measured["backend_us"] = (cpu_seconds(backend_pid) - backend0) / measured["requests"] * 1e6
        measured["ratio"] = measured["rps"] / local["rps"]
        if path == "stream":
            rate = measured["rps"] / 2
            half = paced_json(gate_port, rate, seconds)
            measured["half_rate"] = rate
            measured["half_p50_us"] = half["p50_us"]
            measured["half_p99_us"] = half["p99_us"]
    return measured


def paced_json(port: int, rate: float, seconds: float) -> dict[str, Any]:
    return run_json("-m", "bench.cluster", "paced", str(port), "--rate", str(rate), "--seconds", str(seconds))


def med(results: list[dict[str, float]], key: str) -> float:
    return statistics.median(result[key] for result in results)


# -- the half-load tail, attributed ------------------------------------------------------------


def tail(seconds: float, runs: int, rate: float | None) -> None:
    """Per run: a fresh stream-path cluster, its closed-loop rate (unless ``rate`` is given),
    then the open loop at half that rate with every probe on; then the local server at the same
    rate (what the machine and the load generator add without a cluster). Medians of the runs."""
    print(
        f"fast path at half load, attributed: open loop over 50 connections, {seconds:g} s per run;"
        " per forwarded request: CPU, run-queue wait (runnable, not running) and context switches per"
        " process and thread (/proc schedstat); crossings asyncio -> Trio -> asyncio sampled every"
        " ~10 ms inside each node; the collector's pauses (gc.callbacks); the load generator's own share"
    )
    results: list[dict[str, float]] = []
    for run in range(runs):
        load = os.getloadavg()[0]
        figures: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as tmp, traced_cluster("stream", None, Path(tmp)) as cluster_:
            port, gate_pid, backend_pid, mark = cluster_
            half = rate or closed_loop(port, seconds)["rps"] / 2
            mark()  # the probes start anew
            pids = {"gate": gate_pid, "backend": backend_pid}
            before = {name: thread_stats(pid) for name, pid in pids.items()}
            measured = paced_json(port, half, seconds)
            after = {name: thread_stats(pid) for name, pid in pids.items()}
            mark()
            answered = max(measured["answered"], 1)
            figures.update(rate=half, p50_us=measured["p50_us"], p99_us=measured["p99_us"])
            figures.update(
                {f"loadgen_{key}": measured[key] for key in ("cpu_share", "wait_us", "late_p50_us", "late_p99_us")}
            )
            for name in pids:
                for thread in ("main", "others"):
                    delta = {key: after[name][thread][key] - before[name][thread][key] for key in after[name][thread]}
                    figures[f"{name}_{thread}_cpu_us"] = delta["cpu_ns"] / 1e3 / answered
                    figures[f"{name}_{thread}_wait_us"] = delta["wait_ns"] / 1e3 / answered
                    figures[f"{name}_{thread}_switches"] = (delta["voluntary"] + delta["involuntary"]) / answered
                    figures[f"{name}_{thread}_involuntary"] = delta["involuntary"] / answered
                probes = json.loads((Path(tmp) / f"{name}.json").read_text())
                for key in ("cross_p50_us", "cross_p99_us", "cross_max_us"):
                    figures[f"{name}_{key}"] = probes[key]
                figures[f"{name}_gc_count"] = sum(g["count"] for g in probes["gc"])
                figures[f"{name}_gc_total_ms"] = sum(g["total_ms"] for g in probes["gc"])
                figures[f"{name}_gc_max_ms"] = max(g["max_ms"] for g in probes["gc"])
        with process("-m", "bench._servers", "trionano") as (local_port, local_pid):
            before_local = schedstat(local_pid)
            local = paced_json(local_port, half, seconds)
            after_local = schedstat(local_pid)
            answered = max(local["answered"], 1)
            figures.update(local_p50_us=local["p50_us"], local_p99_us=local["p99_us"])
            figures["local_cpu_us"] = (after_local["cpu_ns"] - before_local["cpu_ns"]) / 1e3 / answered
            figures["local_wait_us"] = (after_local["wait_ns"] - before_local["wait_ns"]) / 1e3 / answered
            figures["local_loadgen_wait_us"] = local["wait_us"]
        figures["load"] = (load + os.getloadavg()[0]) / 2
        results.append(figures)
        print(f"  run {run + 1} (load average {figures['load']:.1f}):")
        print_tail(figures)
    print("  medians:")
    print_tail({key: med(results, key) for key in results[0]})


def print_tail(f: dict[str, float]) -> None:
    print(
        f"    {f['rate']:,.0f} req/s: p50 {f['p50_us']:,.0f} us  p99 {f['p99_us']:,.0f} us"
        f"   (local server at that rate: p50 {f['local_p50_us']:,.0f} us  p99 {f['local_p99_us']:,.0f} us;"
        f" its CPU {f['local_cpu_us']:.0f} us + run-queue wait {f['local_wait_us']:.0f} us per request)"
    )
    for name in ("gate", "backend"):
        threads = "   ".join(
            f"{label}: CPU {f[f'{name}_{thread}_cpu_us']:.0f} us,"
            f" run-queue wait {f[f'{name}_{thread}_wait_us']:.0f} us,"
            f" {f[f'{name}_{thread}_switches']:.1f} switches ({f[f'{name}_{thread}_involuntary']:.1f} preempted)"
            for thread, label in (("main", "main thread"), ("others", "other threads"))
        )
        print(f"    {name:<8} per request   {threads}")
        print(
            f"    {name:<8} crossings p50 {f[f'{name}_cross_p50_us']:,.0f} us  p99 {f[f'{name}_cross_p99_us']:,.0f} us"
            f"  max {f[f'{name}_cross_max_us']:,.0f} us;   collector: {f[f'{name}_gc_count']:.0f} pauses,"
            f" {f[f'{name}_gc_total_ms']:.1f} ms in all, longest {f[f'{name}_gc_max_ms']:.1f} ms"
        )
    print(
        f"    loadgen  {f['loadgen_cpu_share'] * 100:.0f}% of a core, run-queue wait {f['loadgen_wait_us']:.0f} us"
        f" per request (beside the local server: {f['local_loadgen_wait_us']:.0f} us), sends late against"
        f" the schedule p50 {f['loadgen_late_p50_us']:,.0f} us  p99 {f['loadgen_late_p99_us']:,.0f} us"
    )


# -- an open-loop load ------------------------------------------------------------------------


def paced(port: int, rate: float, seconds: float, connections: int) -> dict[str, float]:
    """Send ``rate`` requests per second in all over ``connections``, whatever is answered
    (open loop); the latency of each answer from its send time (answers come in order per
    connection). Between sends it waits in ``select`` until the next one is due (no polling:
    its CPU competes with the nodes'). Also returned: its own CPU (share of a core), its
    run-queue wait per request and how late its sends went out against the schedule."""
    sys.path.insert(0, str(ROOT))
    from bench._loadgen import BODY, connect, packet_types
    from trionano import wire

    frame = wire.MessageCodec().request_packet(1, "bench.echo", BODY)
    socks = [connect(port, pomelo=True) for _ in range(connections)]
    selector = selectors.DefaultSelector()
    sent: dict[socket.socket, collections.deque[int]] = {}
    bufs: dict[socket.socket, bytearray] = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sent[sock] = collections.deque()
        bufs[sock] = bytearray()
    latencies: list[int] = []
    late: list[float] = []
    sched0 = schedstat("self")
    start = time.perf_counter()
    count = 0
    while (now := time.perf_counter()) < start + seconds:
        due = int((now - start) * rate)
        if count < due:
            late.append(now - start - (count + 1) / rate)
        while count < due:
            sock = socks[count % connections]
            sent[sock].append(time.perf_counter_ns())
            sock.send(frame)
            count += 1
        wait = start + (count + 1) / rate - time.perf_counter()
        for key, _ in selector.select(timeout=max(wait, 0.0)):
            sock = key.fileobj  # type: ignore[assignment]
            bufs[sock] += sock.recv(65536)
            answers = sum(1 for ptype in packet_types(bufs[sock]) if ptype == wire.PacketType.DATA)
            now_ns = time.perf_counter_ns()
            waiting = sent[sock]
            for _ in range(min(answers, len(waiting))):
                latencies.append(now_ns - waiting.popleft())  # noqa: PERF401 - popleft in order
    used = {key: value - sched0.get(key, 0) for key, value in schedstat("self").items()}
    for sock in socks:
        sock.close()
    latencies.sort()
    late.sort()
    answered = max(len(latencies), 1)
    return {
        "cpu_share": used["cpu_ns"] / 1e9 / seconds,
        "wait_us": used["wait_ns"] / 1e3 / answered,
        "late_p50_us": late[len(late) // 2] * 1e6 if late else 0.0,
        "late_p99_us": late[int(len(late) * 0.99)] * 1e6 if late else 0.0,
        "sent": count,
        "answered": len(latencies),
        "p50_us": latencies[len(latencies) // 2] / 1000 if latencies else float("inf"),
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1000 if latencies else float("inf"),
    }


# -- the bridge's crossing ---------------------------------------------------------------------


def crossing(count: int) -> dict[str, float]:
    """asyncio -> Trio -> asyncio: ``Bridge.call_soon`` of a no-op from an asyncio task, each
    after a short random idle gap (so that Trio is idle, waiting, when the call comes); the
    round trip's latency and the process CPU per crossing."""
    import asyncio
    import random

    import trio

    from trionano.cluster import Bridge, run

    latencies: list[float] = []
    cpu: list[float] = []

    async def main(bridge: Bridge) -> None:
        async def ping() -> None:
            cpu0 = time.process_time()
            for _ in range(count):
                await asyncio.sleep(random.random() * 0.002)
                start = time.perf_counter()
                await bridge.call_soon(int)
                latencies.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)  # a Trio with a task waiting, as a node's
            await bridge.to_asyncio(ping)
            nursery.cancel_scope.cancel()

    run(main)
    latencies.sort()
    return {
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "cpu_us": cpu[0] / count * 1e6,
    }


def crossings(runs: int) -> None:
    print("bridge crossing (asyncio -> Trio -> asyncio round trip into an idle Trio), 2,000 per run:")
    figures = [run_json("-m", "bench.cluster", "crossing-one") for _ in range(runs)]
    print(
        f"  {'driven asyncio loop':<24} p50 {med(figures, 'p50_us'):>6,.0f} us   p99 {med(figures, 'p99_us'):>7,.0f} us"
        f"   {med(figures, 'cpu_us'):>6.1f} CPU-us per crossing (incl. the idle gaps' loop work)"
    )


# -- a node -----------------------------------------------------------------------------------


class Probes:
    """``bench.cluster tail``'s probes inside a node: the collector's pauses per generation
    (``gc.callbacks``) and the bridge's crossing latency while the node is loaded (an asyncio
    task crossing into Trio and back every 5-15 ms: ``Bridge.call_soon`` of a no-op, as a
    grpclib handler's call does). :meth:`mark` writes what was seen since the last mark to
    ``path`` (JSON) and starts anew."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gc_pauses: list[list[float]] = [[], [], []]
        self.crossings: list[float] = []
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pauses[info["generation"]].append(time.perf_counter() - self._gc_start)

    async def cross(self, bridge: Any) -> None:
        """(asyncio) Cross into Trio and back now and then, until cancelled."""
        import asyncio
        import random

        while True:
            await asyncio.sleep(0.005 + random.random() * 0.01)
            start = time.perf_counter()
            await bridge.call_soon(int)
            self.crossings.append(time.perf_counter() - start)

    def mark(self) -> None:
        crossings = sorted(self.crossings)
        figures = {
            "gc": [
                {"count": len(p), "total_ms": sum(p) * 1e3, "max_ms": max(p, default=0) * 1e3} for p in self.gc_pauses
            ],
            "crossings": len(crossings),
            "cross_p50_us": crossings[len(crossings) // 2] * 1e6 if crossings else 0.0,
            "cross_p99_us": crossings[int(len(crossings) * 0.99)] * 1e6 if crossings else 0.0,
            "cross_max_us": crossings[-1] * 1e6 if crossings else 0.0,
        }
        self.path.write_text(json.dumps(figures))
        self.gc_pauses = [[], [], []]
        self.crossings = []


def node(role: str, listen: str, master: str, unary: bool, trace: Path | None = None) -> None:
    """B12's nodes: a master, a backend hosting the bench component, a gate forwarding to it.
    Prints the gate's client port (0 for the others), serves until stdin closes. ``trace``: run
    :class:`Probes`; each line read on stdin writes their figures there, then "marked" is printed."""
    import trio

    import trionano
    from bench._servers import Bench
    from trionano import Components, Config
    from trionano.cluster import Bridge, ClusterConfig, Node, run

    components = Components()
    if role == "backend":
        components.register(Bench(), name="bench")
    cluster_node = Node(
        components,
        ClusterConfig(
            service_address=listen,
            master_address=None if role == "master" else master,
            is_master=role == "master",
            fast_path=not unary,
        ),
        Config(heartbeat=0, outbox_size=1024, rate_limit=None),
    )
    endpoints = [trionano.TCPEndpoint("127.0.0.1")] if role == "gate" else []

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(functools.partial(cluster_node.run, bridge, *endpoints))
            trionano.tune_gc()  # as trionano.run, trionano.cluster.run_node and the local server do
            probes = Probes(trace) if trace else None
            async with trio.open_nursery() as probing:
                if probes is not None:
                    probing.start_soon(bridge.to_asyncio, lambda: probes.cross(bridge))
                print(ports[0] if ports else 0, flush=True)
                while await trio.to_thread.run_sync(sys.stdin.readline):
                    if probes is not None:
                        probes.mark()
                    print("marked", flush=True)
                probing.cancel_scope.cancel()
            cluster_node.server.shutdown()

    run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description="B12: forwarded request/response over both cluster paths")
    sub = parser.add_subparsers(dest="command")
    node_parser = sub.add_parser("node", help="(internal) one node of the bench cluster")
    node_parser.add_argument("role", choices=["master", "backend", "gate"])
    node_parser.add_argument("--listen", required=True)
    node_parser.add_argument("--master", required=True)
    node_parser.add_argument("--unary", action="store_true", help="nano's unary path only (fast_path=False)")
    node_parser.add_argument("--profile", type=Path, help="write cProfile stats here")
    node_parser.add_argument("--trace", type=Path, help="run the tail probes; their figures here at each mark")
    paced_parser = sub.add_parser("paced", help="(internal) an open-loop load; prints JSON")
    paced_parser.add_argument("port", type=int)
    paced_parser.add_argument("--rate", type=float, required=True)
    paced_parser.add_argument("--seconds", type=float, default=5.0)
    paced_parser.add_argument("--connections", type=int, default=50)
    crossing_parser = sub.add_parser("crossing", help="the bridge's crossing micro-bench")
    crossing_parser.add_argument("--runs", type=int, default=3)
    sub.add_parser("crossing-one", help="(internal) one crossing run; prints JSON")
    tail_parser = sub.add_parser("tail", help="the fast path's half-load tail, attributed by instrumentation")
    tail_parser.add_argument("--rate", type=float, help="requests/s (default: half the closed loop's, per run)")
    parser.add_argument("--quick", action="store_true", help="2 s runs")
    parser.add_argument("--runs", "--repeats", type=int, default=3, help="runs (medians need >= 3)")
    parser.add_argument(
        "--profile", type=Path, help="run the gates and backends under cProfile, stats in this directory"
    )
    args, _ = parser.parse_known_args()  # nox -s bench passes bench.runtime's options too
    if args.command == "node":
        if args.profile is None:
            node(args.role, args.listen, args.master, args.unary, args.trace)
        else:
            import cProfile

            profiler = cProfile.Profile()
            profiler.runcall(node, args.role, args.listen, args.master, args.unary)
            profiler.dump_stats(args.profile)
    elif args.command == "crossing":
        crossings(max(args.runs, 1))
    elif args.command == "tail":
        tail(2.0 if args.quick else 5.0, max(args.runs, 1), args.rate)
    elif args.command == "crossing-one":
        print(json.dumps(crossing(2000)))
    elif args.command == "paced":
        print(json.dumps(paced(args.port, args.rate, args.seconds, args.connections)))
    else:
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        b12(2.0 if args.quick else 5.0, max(args.runs, 1), args.profile)


if __name__ == "__main__":
    main()
