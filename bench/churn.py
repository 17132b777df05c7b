"""Churn at a gate: does a node's memory come back when clients come and go?

A master, the chat backend of ``examples.cluster`` (with an echo service added) and its gate run
as processes of their own (``python -m bench.churn node ROLE``). Each round, ``--clients``
clients (half over TCP, half over WebSocket, ``--concurrency`` at a time) connect to the gate,
log in (the example's chain: gate -> master -> chat, which pushes ``onMembers``), make one
Request forwarded to chat, every tenth a Notify that chat broadcasts to its room, and leave.

After each round every node reports its RSS and what it still holds, read through the public
API: sessions, connections and connections in their handshake (``server.statistics()``), and
stand-in sessions of other gates' clients (``node.remote_sessions``): all must be back to 0.
With ``--tracemalloc``, each node also prints its allocation sites grown most since the last
round (slow: several times longer rounds). After the last round, each node runs a full
collection and reports the objects it found in reference cycles (0: every closed connection was
freed by reference counting, the collector had nothing to do).

Printed: per round, each node's RSS in MB and its ratio to the RSS after round 1 (the first
round sets the allocator's high-water mark: a leak keeps growing after it, a plateau does not),
medians of the runs (>= 3, fresh processes each), and the growth per round over the first and
the second half of the rounds (a leak keeps its pace, a high-water mark levels off).

Run: ``python -m bench.churn [--quick] [--runs N] [--rounds N] [--clients N] [--tracemalloc]``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import time
import tracemalloc
from contextlib import ExitStack
from typing import Any

import trio

import trionano
from bench.cluster import free_address, popen
from examples.cluster import BindService, RoomService, TopicService
from trionano import Component, Components, Config, Session
from trionano.client import Client, open_client, open_websocket_client
from trionano.cluster import Bridge, ClusterConfig, Node, run

ROLES = ("gate", "chat", "master")
TABLES = ("sessions_open", "connections_open", "connections_handshaking", "remote_sessions")


# -- a node ---------------------------------------------------------------------------------


class Echo(Component):
    """On chat: the Request forwarded through the gate."""

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        session["last"] = msg
        return msg


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def node(role: str, listen: str, master: str, traced: bool) -> None:
    """One node of the churn's cluster: prints its client ports (a JSON list: WebSocket, TCP on
    the gate; empty elsewhere), then answers each line read on stdin with a JSON report;
    "collect" also runs a full collection. Serves until stdin closes."""
    if traced:
        tracemalloc.start(1)
    components = Components()
    components.register({"master": TopicService, "gate": BindService, "chat": RoomService}[role]())
    if role == "chat":
        components.register(Echo())
    cluster_node = Node(
        components,
        ClusterConfig(
            service_address=listen,
            master_address=None if role == "master" else master,
            is_master=role == "master",
            label=role,
        ),
        Config(),
    )
    endpoints: list[trionano.Endpoint] = []
    if role == "gate":
        endpoints += [trionano.WebSocketEndpoint("127.0.0.1", path="/nano"), trionano.TCPEndpoint("127.0.0.1")]
    last: list[tracemalloc.Snapshot] = []

    def report(collect: bool) -> dict[str, Any]:
        stats = cluster_node.server.statistics()
        figures: dict[str, Any] = {
            "rss_mb": rss_mb(),
            "sessions_open": stats.sessions_open,
            "connections_open": stats.connections_open,
            "connections_handshaking": stats.connections_handshaking,
            "remote_sessions": cluster_node.remote_sessions,
        }
        if collect:
            figures["garbage"] = gc.collect()
        if traced:
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            if last:
                grown = snapshot.compare_to(last[0], "lineno")[:6]
                figures["grown"] = [f"{stat.traceback[0]}: {stat.size_diff / 1024:+.1f} KiB" for stat in grown]
            last[:] = [snapshot]
        return figures

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(functools.partial(cluster_node.run, bridge, *endpoints))
            trionano.tune_gc()  # as trionano.cluster.run_node does
            print(json.dumps(ports), flush=True)
            while line := await trio.to_thread.run_sync(sys.stdin.readline):
                print(json.dumps(report(line.strip() == "collect")), flush=True)
            cluster_node.server.shutdown()

    run(main)


# -- the clients ----------------------------------------------------------------------------


async def churn_round(ws_port: int, tcp_port: int, clients: int, concurrency: int) -> int:
    """``clients`` clients come and go; returns how many failed."""
    failed = 0
    limit = trio.CapacityLimiter(concurrency)

    async def visit(client: Client, n: int) -> None:
        await client.request("BindService.Login", {"nickname": f"user{n}"})
        await client.receive_push("onMembers")
        assert await client.request("Echo.echo", {"n": n}) == {"n": n}
        if n % 10 == 0:
            await client.notify("RoomService.SyncMessage", {"name": f"user{n}", "content": "hello"})

    async def one(n: int) -> None:
        nonlocal failed
        async with limit:
            try:
                with trio.fail_after(30):
                    if n % 2:
                        async with open_websocket_client(f"ws://127.0.0.1:{ws_port}/nano") as client:
                            await visit(client, n)
                    else:
                        async with open_client("127.0.0.1", tcp_port) as client:
                            await visit(client, n)
            except Exception:
                failed += 1

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(one, n)
    return failed


# -- a run ----------------------------------------------------------------------------------


def one_run(rounds: int, clients: int, concurrency: int, traced: bool) -> list[dict[str, dict[str, Any]]]:
    """Fresh processes; per round (the last with "collect"), each node's report."""
    master = free_address()
    extra = ["--tracemalloc"] if traced else []
    with ExitStack() as stack:
        nodes = {}
        for role in ("master", "chat", "gate"):
            listen = master if role == "master" else free_address()
            proc = stack.enter_context(
                popen("-m", "bench.churn", "node", role, "--listen", listen, "--master", master, *extra)
            )
            assert proc.stdout is not None
            nodes[role] = (proc, json.loads(proc.stdout.readline()))
        ws_port, tcp_port = nodes["gate"][1]
        time.sleep(0.5)

        def report(role: str, command: str) -> dict[str, Any]:
            proc = nodes[role][0]
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
            figures: dict[str, Any] = json.loads(proc.stdout.readline())
            return figures

        reports = [{role: report(role, "report") for role in ROLES}]  # before any client
        for index in range(rounds):
            started = time.perf_counter()
            failed = trio.run(churn_round, ws_port, tcp_port, clients, concurrency)
            elapsed = time.perf_counter() - started
            time.sleep(1.0)  # the last clients' ends reach every node
            command = "collect" if index == rounds - 1 else "report"
            reports.append({role: report(role, command) for role in ROLES})
            reports[-1]["gate"]["failed"] = failed
            reports[-1]["gate"]["seconds"] = elapsed
        return reports


def main() -> None:
    parser = argparse.ArgumentParser(description="churn at a gate: memory per round")
    sub = parser.add_subparsers(dest="command")
    node_parser = sub.add_parser("node", help="(internal) one node of the churn's cluster")
    node_parser.add_argument("role", choices=["master", "chat", "gate"])
    node_parser.add_argument("--listen", required=True)
    node_parser.add_argument("--master", required=True)
    node_parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 500 clients")
    parser.add_argument("--runs", "--repeats", type=int, default=3, help="runs (medians need >= 3)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2000, help="clients per round")
    parser.add_argument("--concurrency", type=int, default=100, help="clients at a time (one host: <= 128)")
    parser.add_argument("--tracemalloc", action="store_true", help="each node's grown allocation sites per round")
    args, _ = parser.parse_known_args()  # nox -s bench passes other benches' options too
    if args.command == "node":
        node(args.role, args.listen, args.master, args.tracemalloc)
        return
    rounds, clients = (3, 500) if args.quick else (args.rounds, args.clients)
    print(
        f"churn at a gate: {rounds} rounds of {clients:,} clients ({args.concurrency} at a time, half TCP, half"
        f" WebSocket): log in through gate -> master -> chat, one Request forwarded to chat, leave;"
        f" RSS per node, medians of {args.runs} runs"
    )
    runs = []
    for number in range(args.runs):
        reports = one_run(rounds, clients, args.concurrency, args.tracemalloc)
        runs.append(reports)
        for index, report in enumerate(reports[1:], 1):
            gate = report["gate"]
            print(
                f"  run {number + 1} round {index}: {gate['seconds']:.1f} s, {gate['failed']} failed;  "
                + "  ".join(f"{role} {report[role]['rss_mb']:.1f} MB" for role in ROLES)
                + "  left: "
                + ", ".join(f"{role} {sum(report[role][table] for table in TABLES)}" for role in ROLES)
            )
            for role in ROLES:
                for line in report[role].get("grown", []):
                    print(f"      {role}: {line}")
        print(
            "    garbage in cycles after the last round: "
            + ", ".join(f"{r} {reports[-1][r]['garbage']}" for r in ROLES)
        )

    def med(index: int, role: str) -> float:
        return float(statistics.median(reports[index][role]["rss_mb"] for reports in runs))

    print("  medians (RSS MB, and x after round 1):")
    print("    " + "".join(f"{role:>22}" for role in ROLES))
    for index in range(rounds + 1):
        label = "before" if index == 0 else f"round {index}"
        cells = "".join(f"{med(index, role):>13.1f} ({med(index, role) / med(1, role):.3f})" for role in ROLES)
        print(f"    {label:<9}{cells}")
    # a leak grows as much in the last rounds as in the first ones; a high-water mark levels off
    for first, last in ((1, rounds // 2 + 1), (rounds // 2 + 1, rounds)):
        if last > first:
            growth = {role: (med(last, role) - med(first, role)) / (last - first) for role in ROLES}
            span = f"rounds {first}-{last}"
            print(f"    growth per round, {span:<12}: " + ", ".join(f"{r} {growth[r]:+.2f} MB" for r in ROLES))
    left = max(sum(reports[i][r][t] for t in TABLES) for reports in runs for i in range(1, rounds + 1) for r in ROLES)
    garbage = max(reports[-1][role]["garbage"] for reports in runs for role in ROLES)
    print(f"    sessions, connections and stand-ins left after a round: at most {left}")
    print(f"    objects in reference cycles after the last round: at most {garbage}")


if __name__ == "__main__":
    main()
