"""B13, the push API end to end (issue 13): HTTP POSTs -> logic node -> 2 gates -> 2 x N
WebSocket viewers (N = 5,000; ``--quick``: 500). Figures: deliveries per second and the
latency from POST to receipt (p50, p99), medians of ``--runs`` rounds (3).

The cluster is examples.liveroom's (a logic node with the push API, two gates; one process
each). The viewers are raw sockets on epoll in two receiver processes (one per gate, no Trio,
so they stay cheap beside the nodes; ``python -m bench.push_api recv PORT N``). Each round posts
``rate`` comments per second for ``seconds`` to the group ``room``, each carrying the time it
was posted (CLOCK_MONOTONIC, shared by every process of the machine).

Same-run baseline: the same rounds posted to gate 1's own push API (gate 1 delivers to its
viewers itself and hands the push to gate 2 directly), so the ratios show what the hop
through the logic node costs. ``offered`` is posts/s x viewers; ``achieved`` the deliveries/s
measured from the first POST to the last receipt.

``python -m bench.push_api [--quick] [--runs 3] [--viewers N] [--rate R] [--seconds S] [--window W]``
(``--window``: the gates' merge window in seconds, see :attr:`trionano.Config.merge_window`)
writes bench/results/push_api.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from trionano import wire

from ._loadgen import HANDSHAKE, HANDSHAKE_ACK, ws_frame, ws_payloads, ws_upgrade

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "push_api.md"
SENT = b'"sent":'
JOIN = ws_frame(wire.MessageCodec().request_packet(1, "room.join", b"{}"))
HEARTBEAT = ws_frame(wire.encode_packet(wire.PacketType.HEARTBEAT))


# -- the receiver process ----------------------------------------------------------------------


def is_response(payload: bytes) -> bool:
    """Whether a server WebSocket message holds a pomelo Response (the join's answer)."""
    offset = 0
    while offset + 4 <= len(payload):
        length = int.from_bytes(payload[offset + 1 : offset + 4], "big")
        if payload[offset] == wire.PacketType.DATA and length and (payload[offset + 4] >> 1) & 7 == 2:
            return True
        offset += 4 + length
    return False


def sent_times(payload: bytes) -> Iterator[int]:
    """The ``"sent":<ns>`` values in a message (one per push of this benchmark)."""
    start = payload.find(SENT)
    while start != -1:
        start += len(SENT)
        end = start
        while end < len(payload) and 48 <= payload[end] <= 57:
            end += 1
        yield int(payload[start:end])
        start = payload.find(SENT, end)


def receiver(port: int, viewers: int) -> None:
    """Connect ``viewers`` WebSocket viewers to a gate, join them to the room, then record
    the latency of every push carrying ``"sent"``. Commands on stdin: ``report E T`` prints
    one JSON line once E pushes arrived or T seconds passed, and starts afresh."""
    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytearray] = {}
    joined = 0
    latencies: list[int] = []
    first = last = 0
    report: tuple[int, float] | None = None
    stdin = sys.stdin.buffer
    os.set_blocking(stdin.fileno(), False)
    selector.register(stdin, selectors.EVENT_READ, None)
    pending = b""
    announced = False
    next_heartbeat = time.monotonic() + 10
    while True:
        # viewers connect a few at a time, so the ones already in keep reading and heartbeating,
        # and at most 64 are joining at once (a gate admits 128 handshakes per host at a time:
        # Config.max_handshaking_per_host; past it, it refuses newcomers "server busy")
        for _ in range(min(20, viewers - len(buffers), 64 - (len(buffers) - joined))):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ws_upgrade(sock)
            sock.sendall(ws_frame(HANDSHAKE) + ws_frame(HANDSHAKE_ACK) + JOIN)
            sock.setblocking(False)
            buffers[sock] = bytearray()
            selector.register(sock, selectors.EVENT_READ, sock)
        for key, _ in selector.select(0 if len(buffers) < viewers else 0.05):
            if key.data is None:
                data = stdin.read()
                if not data:
                    return
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    _, expected, seconds = line.split()
                    report = (int(expected), time.monotonic() + float(seconds))
                continue
            sock = key.data
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError("a gate closed a viewer's connection")
            buf = buffers[sock]
            buf += data
            now = time.monotonic_ns()
            for payload in ws_payloads(buf):
                if payload[:1] == bytes([wire.PacketType.KICK]):
                    print(f"kicked: {payload[4:]!r}", file=sys.stderr, flush=True)
                if joined < viewers and is_response(payload):
                    joined += 1
                for sent in sent_times(payload):
                    latencies.append(now - sent)
                    last = now
                    if not first:
                        first = now
        if not announced and joined == viewers:
            announced = True
            print(json.dumps({"ready": viewers}), flush=True)
        if report is not None and (len(latencies) >= report[0] or time.monotonic() > report[1]):
            latencies.sort()
            print(
                json.dumps({"count": len(latencies), "first": first, "last": last, "latencies": latencies}), flush=True
            )
            latencies, first, last, report = [], 0, 0, None
        if time.monotonic() > next_heartbeat:
            next_heartbeat += 10
            for sock in buffers:
                with contextlib.suppress(BlockingIOError):
                    sock.send(HEARTBEAT)


# -- the orchestrator --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(log: Path, text: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: no {text!r}:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def liveroom(tmp: Path, window: float | None) -> Iterator[dict[str, Any]]:
    """examples.liveroom's logic node and two gates (their merge window: ``window`` seconds, or
    none); gate 1 has a push API of its own."""
    sys.path.insert(0, str(ROOT))
    from examples.liveroom import commands

    master = f"127.0.0.1:{free_port()}"
    gates = [(f"127.0.0.1:{free_port()}", free_port()), (f"127.0.0.1:{free_port()}", free_port())]
    ports = {"logic": free_port(), "gate1": free_port()}
    launched = commands(master=master, gates=gates, push_port=ports["logic"], merge_window=window)
    launched["gate1"] += ["--push-port", str(ports["gate1"])]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in launched.items():
            log = tmp / f"{name}.log"
            with log.open("wb") as out:
                processes[name] = subprocess.Popen(
                    [*command, "--master", master], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            wait_for(log, "ready", processes[name])
        yield {
            "pids": {name: process.pid for name, process in processes.items()},
            "push": {name: f"http://127.0.0.1:{port}/v1/push" for name, port in ports.items()},
            "ws_ports": [port for _, port in gates],
        }
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_json(stream: IO[bytes]) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise RuntimeError("a receiver ended")
    result: dict[str, Any] = json.loads(line)
    return result


def percentile(values: list[int], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))] / 1e6 if values else float("nan")


def one_round(
    url: str, receivers: list[subprocess.Popen[bytes]], viewers: int, rate: float, seconds: float
) -> dict[str, float]:
    posts = max(1, int(rate * seconds))
    for process in receivers:
        assert process.stdin is not None
        process.stdin.write(f"report {posts * viewers} {seconds + 30}\n".encode())
        process.stdin.flush()
    start = time.monotonic()
    first_post = time.monotonic_ns()
    # a client per round: one kept alive across rounds may be closed by the server (its 5 s
    # keep-alive timeout) as the next round reuses it (connection reset: a POST is not retried)
    with httpx.Client(timeout=30) as http:
        for index in range(posts):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            message = {"text": f"comment {index}", "sent": time.monotonic_ns()}
            response = http.post(url, json={"route": "onComment", "message": message, "group": "room"})
            assert response.status_code == 202, response.text
            # gate 1 counts the logic node too until it has answered that it serves no clients
            assert response.json()["gates"] >= 2, response.text
    reports = [read_json(process.stdout) for process in receivers if process.stdout is not None]
    latencies = sorted(value for report in reports for value in report["latencies"])
    last = max(report["last"] for report in reports)
    delivered = len(latencies)
    return {
        "posts": posts,
        "expected": posts * viewers * len(receivers),
        "delivered": delivered,
        "offered_per_s": rate * viewers * len(receivers),
        "achieved_per_s": delivered / max((last - first_post) / 1e9, 1e-9),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def run(viewers: int, rate: float, seconds: float, runs: int, window: float | None, tmp: Path) -> dict[str, Any]:
    """B13 and its baseline, ``runs`` rounds each, interleaved; their medians."""
    me = [sys.executable, "-m", "bench.push_api", "recv"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load_before = os.getloadavg()
    with liveroom(tmp, window) as room:
        receivers = [
            subprocess.Popen(
                [*me, str(port), str(viewers)], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            for port in room["ws_ports"]
        ]
        try:
            for process in receivers:
                assert process.stdout is not None
                assert read_json(process.stdout) == {"ready": viewers}
            time.sleep(1.5)  # the viewer count settles (one push of its own)
            cpu_before = {name: cpu_seconds(pid) for name, pid in room["pids"].items()}
            rounds: dict[str, list[dict[str, float]]] = {"logic": [], "gate1": []}
            for _ in range(runs):
                for mode in rounds:
                    rounds[mode].append(one_round(room["push"][mode], receivers, viewers, rate, seconds))
                    print(f"  {mode:>5}: {json.dumps(rounds[mode][-1])}", flush=True)
                    time.sleep(0.5)
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in room["pids"].items()}
        finally:
            for process in receivers:
                if process.stdin is not None:
                    process.stdin.close()
            for process in receivers:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    medians = {
        mode: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for mode, results in rounds.items()
    }
    return {
        "viewers": 2 * viewers,
        "rate": rate,
        "seconds": seconds,
        "runs": runs,
        "window": window,
        "medians": medians,
        "node_cpu_s": cpu,
        "load": (load_before, os.getloadavg()),
    }


def ratio(measured: dict[str, float], baseline: dict[str, float], key: str) -> str:
    return f"{measured[key] / baseline[key]:.2f}x"


def write(figures: dict[str, Any], quick: bool) -> str:
    logic, gate = figures["medians"]["logic"], figures["medians"]["gate1"]
    load_before, load_after = figures["load"]
    window = f"{figures['window'] * 1e3:g} ms" if figures["window"] else "none"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = " (quick)" if quick else ""
    lines = [
        f"| {stamp}{mode} | {figures['viewers']:,} | {figures['rate']:g}/s x {figures['seconds']:g} s"
        f" | {logic['offered_per_s']:,.0f} | {logic['achieved_per_s']:,.0f} ({ratio(logic, gate, 'achieved_per_s')})"
        f" | {logic['delivered'] / logic['expected']:.1%} | {logic['p50_ms']:.1f} ({ratio(logic, gate, 'p50_ms')})"
        f" | {logic['p99_ms']:.1f} ({ratio(logic, gate, 'p99_ms')})"
        f" | {gate['achieved_per_s']:,.0f} | {gate['p99_ms']:.1f}"
        f" | {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} cores"
        f" | {window} |"
    ]
    if not RESULTS.exists():
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# B13: the push API end to end\n\n"
            "HTTP POSTs -> logic node -> 2 gates -> WebSocket viewers (`python -m bench.push_api`). Medians of\n"
            "3 rounds; in brackets the ratio to the same run's baseline: the same rounds posted to gate 1's own push\n"
            "API (no hop through the logic node). Latency is from POST to receipt. Load: the 1-minute load average\n"
            "before and after (the machine is shared).\n\n"
            "Reading it: the logic node answers a POST at once and queues the push for each gate (open loop);\n"
            "gate 1's own push API delivers to its viewers inside the POST (closed loop: the poster waits).\n\n"
            "| when | viewers | posts | offered deliveries/s | achieved deliveries/s (vs gate 1) | delivered"
            " | p50 ms (vs gate 1) | p99 ms (vs gate 1) | gate 1: deliveries/s | gate 1: p99 ms | load"
            " | gates' merge window |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
    with RESULTS.open("a") as out:
        out.write("\n".join(lines) + "\n")
    return lines[0]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "recv":
        receiver(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.push_api", description="B13: the push API end to end")
    parser.add_argument("--quick", action="store_true", help="2 x 500 viewers")
    parser.add_argument("--viewers", type=int, help="viewers per gate (5,000; quick: 500)")
    parser.add_argument("--rate", type=float, default=None, help="posts per second (5; quick: 10)")
    parser.add_argument("--seconds", type=float, default=None, help="per round (6; quick: 3)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--window", type=float, default=None, help="the gates' merge window, seconds (default: none; e.g. 0.05)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave the results table alone")
    args = parser.parse_args()
    viewers = args.viewers or (500 if args.quick else 5000)
    rate = args.rate or (10.0 if args.quick else 5.0)
    seconds = args.seconds or (3.0 if args.quick else 6.0)
    tmp = Path(tempfile.mkdtemp(prefix="b13-"))
    print(
        f"B13: 2 x {viewers:,} viewers, {rate:g} posts/s for {seconds:g} s, {args.runs} runs,"
        f" merge window {args.window or 'none'} (logs: {tmp})",
        flush=True,
    )
    figures = run(viewers, rate, seconds, args.runs, args.window, tmp)
    shutil.rmtree(tmp)
    logic, gate = figures["medians"]["logic"], figures["medians"]["gate1"]
    print(
        f"B13 via the logic node: {logic['achieved_per_s']:,.0f} deliveries/s of {logic['offered_per_s']:,.0f} offered"
        f" ({logic['delivered'] / logic['expected']:.1%} delivered), POST to receipt p50 {logic['p50_ms']:.1f} ms,"
        f" p99 {logic['p99_ms']:.1f} ms; vs gate 1's own push API: {ratio(logic, gate, 'achieved_per_s')}"
        f" deliveries/s, {ratio(logic, gate, 'p99_ms')} p99; node CPU s {json.dumps(figures['node_cpu_s'])}"
    )
    if not args.no_write:
        print(write(figures, args.quick))


if __name__ == "__main__":
    main()
