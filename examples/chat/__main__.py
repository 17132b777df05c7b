"""``python -m examples.chat --host 127.0.0.1 --port 3250 [--dict] [--heartbeat SECONDS]``"""

from __future__ import annotations

import argparse
import functools
import logging

import trio

from . import main

parser = argparse.ArgumentParser(prog="python -m examples.chat", description="nano's chat demo on trionano")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=3250, help="TCP port (0 picks a free one)")
parser.add_argument("--ws-port", type=int, default=None, help="WebSocket port, also serving the chat page")
parser.add_argument("--dict", action="store_true", help="compress the demo's routes and pushes")
parser.add_argument("--heartbeat", type=float, default=30.0, help="heartbeat interval in seconds")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
trio.run(
    functools.partial(
        main, host=args.host, port=args.port, ws_port=args.ws_port, use_dict=args.dict, heartbeat=args.heartbeat
    )
)
