"""``python -m examples.customerroute {master,gate,chat} ...``: see examples/customerroute/__init__.py."""

from __future__ import annotations

import argparse
import logging

from trionano import WebSocketEndpoint
from trionano.cluster import run_node

from . import build

parser = argparse.ArgumentParser(prog="python -m examples.customerroute")
parser.add_argument("role", choices=["master", "gate", "chat"])
parser.add_argument("--listen", required=True, help="this node's gRPC service address (host:port)")
parser.add_argument("--master", default="127.0.0.1:34567")
parser.add_argument("--gate-address", default="127.0.0.1:34590", help="the gate's WebSocket address (path /nano)")
parser.add_argument("--heartbeat", type=float, default=30.0)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
node = build(args.role, listen=args.listen, master=args.master, heartbeat=args.heartbeat)
endpoints = []
if args.role == "gate":
    host, _, port = args.gate_address.rpartition(":")
    endpoints.append(WebSocketEndpoint(host or "127.0.0.1", int(port), path="/nano"))
run_node(node, *endpoints)
