"""``python -m examples.cluster {master,gate,chat,local} ...``: see examples/cluster/__init__.py."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time

from trionano import WebSocketEndpoint
from trionano.cluster import run_node

from . import build

parser = argparse.ArgumentParser(prog="python -m examples.cluster", description="nano's cluster demo on trionano")
parser.add_argument("role", choices=["master", "gate", "chat", "local"])
parser.add_argument("--listen", help="this node's gRPC service address (host:port)")
parser.add_argument("--master", default="127.0.0.1:34567", help="the master's service address")
parser.add_argument("--gate-address", default="127.0.0.1:34590", help="the gate's client address (WebSocket /nano)")
parser.add_argument("--heartbeat", type=float, default=30.0)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if args.role == "local":  # the whole cluster on this machine, one process per node
    # Ctrl-C (even when started with SIGINT ignored, as a shell's background job), SIGTERM, or
    # the terminal closed: the nodes, in sessions of their own, are stopped by the launcher
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, interrupted)
    me = [sys.executable, "-m", "examples.cluster"]
    commands = [
        [*me, "master", "--listen", args.master],
        [*me, "chat", "--listen", "127.0.0.1:34580", "--master", args.master],
        [*me, "gate", "--listen", "127.0.0.1:34570", "--gate-address", args.gate_address, "--master", args.master],
    ]
    processes = []
    try:
        for command in commands:
            # a session of its own: Ctrl-C reaches this launcher alone, which stops each node with
            # one signal (a second one, its SIGINT then the launcher's SIGTERM, stops a node at once)
            processes.append(subprocess.Popen(command, start_new_session=True))
            time.sleep(0.5)
        print(f"cluster up: clients connect to ws://{args.gate_address}/nano (Ctrl-C stops it)", flush=True)
        for process in processes:
            process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait()
    sys.exit(0)

listen = args.listen or {"master": args.master, "gate": "127.0.0.1:34570", "chat": "127.0.0.1:34580"}[args.role]
node = build(args.role, listen=listen, master=args.master, heartbeat=args.heartbeat)
endpoints = []
if args.role == "gate":
    host, _, port = args.gate_address.rpartition(":")
    endpoints.append(WebSocketEndpoint(host or "127.0.0.1", int(port), path="/nano"))
run_node(node, *endpoints)
