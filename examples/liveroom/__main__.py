"""``python -m examples.liveroom [local] [--base-port P] [--token T]``: the logic node and two
gates on this machine, one process each (see examples/liveroom/__init__.py); or one node:
``python -m examples.liveroom logic --listen HOST:PORT --push-port N`` /
``python -m examples.liveroom gate --listen HOST:PORT --ws-port N --master HOST:PORT``."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import time

from trionano.cluster import Bridge, exit_if_cannot_listen, run

from . import build, commands, serve

parser = argparse.ArgumentParser(prog="python -m examples.liveroom", description="the live room demo on trionano")
parser.add_argument("role", nargs="?", default="local", choices=["local", "logic", "gate"])
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument(
    "--base-port", type=int, default=24600, help="local: the first of the 6 ports it uses (below the ephemeral range)"
)
parser.add_argument("--listen", help="this node's gRPC service address (host:port)")
parser.add_argument("--master", help="the master's service address (the logic node's)")
parser.add_argument("--ws-port", type=int, help="gate: the WebSocket port, which also serves the page")
parser.add_argument("--push-port", type=int, help="the HTTP push API's port")
parser.add_argument("--token", help="the push API's bearer token (none: no check)")
parser.add_argument("--heartbeat", type=float, default=30.0)
parser.add_argument("--rpc-timeout", type=float, default=5.0, help="the deadline of every gRPC call, seconds")
parser.add_argument("--push-queue", type=int, default=1024, help="pushes queued per gate before drops")
parser.add_argument(
    "--push-bytes", type=int, default=16 * 1024 * 1024, help="bytes of pushes queued per gate before drops"
)
parser.add_argument(
    "--merge-window",
    type=float,
    default=None,
    help="a gate: seconds a viewer's connection may hold comments to send them in one write (default: none)",
)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` now (binding it succeeds)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_listening(host: str, port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Wait until ``process`` accepts connections on ``port`` (free before it started, so what
    answers is that process, if it is still running). Raises SystemExit if it ends first or
    takes over ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            pass
        else:
            if process.poll() is None:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"a node did not start listening on {host}:{port}")
        time.sleep(0.1)


def local() -> int:
    """The whole room, one process per node, until Ctrl-C or SIGTERM (which stop them all: exit
    status 0) or until a node ends (the others are stopped: exit status 1)."""
    # Ctrl-C (even when started with SIGINT ignored, as a shell's background job), SIGTERM, or
    # the terminal closed: the nodes, in sessions of their own, are stopped by the launcher
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, interrupted)
    host, base = args.host, args.base_port
    master = f"{host}:{base}"
    gates = [(f"{host}:{base + 2}", base + 3), (f"{host}:{base + 4}", base + 5)]
    taken = [port for port in range(base, base + 6) if not port_free(host, port)]
    if taken:
        raise SystemExit(f"ports {taken} on {host} are in use: stop what holds them or pick another --base-port")
    launched = commands(
        master=master,
        gates=gates,
        push_port=base + 1,
        token=args.token,
        rpc_timeout=args.rpc_timeout,
        push_queue=args.push_queue,
        push_bytes=args.push_bytes,
        merge_window=args.merge_window,
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        ready = {"logic": base + 1, "gate1": base + 3, "gate2": base + 5}  # the last port each node opens
        for name, command in launched.items():
            # a session of its own: Ctrl-C reaches the launcher alone, which stops each node with
            # one signal (a node that had Ctrl-C's SIGINT too took the launcher's SIGTERM as a
            # second signal: a stop at once, its viewers without their Kick)
            process = subprocess.Popen(
                [*command, "--master", master, "--heartbeat", str(args.heartbeat)], start_new_session=True
            )
            processes[name] = process
            wait_listening(host, ready[name], process)
        auth = f" -H 'Authorization: Bearer {args.token}'" if args.token else ""
        body = '{"route": "onComment", "message": {"name": "ops", "text": "hello room"}, "group": "room"}'
        lines = [
            "live room up:",
            *(f"  viewer page (gate {n}): http://{host}:{port}/" for n, (_, port) in enumerate(gates, 1)),
            f"  push API: curl -X POST http://{host}:{base + 1}/v1/push -H 'Content-Type: application/json'{auth} \\",
            f"       -d '{body}'",
            f"  load: python -m examples.liveroom.load 1000 --base-port {base}",
            "  nodes: " + ", ".join(f"{name} pid {process.pid}" for name, process in processes.items()),
            "Ctrl-C stops it",
        ]
        print("\n".join(lines), flush=True)
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"the {name} node ended (exit status {process.returncode}): stopping the room", flush=True)
                    return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes.values()):
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait()


if args.role == "local":
    sys.exit(local())

master = args.master or args.listen
if not args.listen or not master:
    parser.error("a node needs --listen (and a gate --master)")
node = build(
    args.role,
    listen=args.listen,
    master=master,
    heartbeat=args.heartbeat,
    rpc_timeout=args.rpc_timeout,
    push_queue=args.push_queue,
    push_bytes=args.push_bytes,
    merge_window=args.merge_window,
)


async def main(bridge: Bridge) -> None:
    await serve(node, bridge, host=args.host, ws_port=args.ws_port, push_port=args.push_port, token=args.token)


with exit_if_cannot_listen(f"{args.role} {args.listen}"):
    run(main, on_signal=node.server.shutdown)
