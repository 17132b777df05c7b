"""Servers the benchmarks measure, each run in its own process by bench/runtime.py.

``python -m bench._servers KIND`` prints its port on the first line of stdout, then serves
until stdin closes. Kinds: ``trionano`` (the bench component), ``trionano-defaults`` (the same
with the default Config, over TCP and WebSocket: "TCP WS" ports), ``echo`` (a raw trio TCP echo
server: B1's baseline), ``rawsend`` (accepts connections and, on demand, pushes with a plain
non-blocking ``socket.send`` loop: B4's baseline).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import sys
import time
from typing import Any

import trio
import trio.testing

import trionano
from trionano import Component, Components, Config, Group, Session, wire

PUSH_BODY_SIZE = 64


class Bench(Component):
    def __init__(self) -> None:
        self.group = Group("all")

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return msg

    def join(self, session: Session, msg: bytes) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}

    async def blast(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Broadcast ``rounds`` pushes to the group, as a burst (a game tick's updates: the
        writers coalesce them) or ``paced`` (yielding after each broadcast: one write per
        packet, the worst case). Timed until every writer has handed its bytes to the kernel;
        answers with that time and the encode count."""
        stats = self.server.statistics()
        before = stats.encoded
        body = {"p": "x" * (PUSH_BODY_SIZE - 8)}
        start = time.perf_counter()
        paced = msg.get("paced", False)
        for _ in range(msg["rounds"]):
            self.group.broadcast("onBlast", body)
            if paced:
                await trio.lowlevel.checkpoint()  # the writers run between broadcasts
        await trio.testing.wait_all_tasks_blocked()  # bench instrument: every writer is idle again
        seconds = time.perf_counter() - start
        return {
            "encodes": self.server.statistics().encoded - before,
            "dropped": self.server.statistics().dropped_slow,
            "seconds": seconds,
        }


async def wait_stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read)


async def serve_trionano(websocket: bool = False) -> None:
    components = Components()
    components.register(Bench(), name="bench")
    server = trionano.Server(components, Config(heartbeat=0, outbox_size=1024, rate_limit=None))
    endpoint = trionano.WebSocketEndpoint("127.0.0.1") if websocket else trionano.TCPEndpoint("127.0.0.1")
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, endpoint)
        print(port, flush=True)
        await wait_stdin_closed()
        server.shutdown()


async def serve_defaults() -> None:
    """The bench component with the default Config (heartbeats, rate limit, limits), over TCP
    and WebSocket: what the hostile-input benchmarks attack. Prints "TCP_PORT WS_PORT"."""
    components = Components()
    components.register(Bench(), name="bench")
    server = trionano.Server(components)
    endpoints = (trionano.TCPEndpoint("127.0.0.1"), trionano.WebSocketEndpoint("127.0.0.1"))
    async with trio.open_nursery() as nursery:
        tcp, ws = await nursery.start(server.serve, *endpoints)
        print(tcp, ws, flush=True)
        await wait_stdin_closed()
        server.shutdown()


async def serve_echo() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        print(listeners[0].socket.getsockname()[1], flush=True)
        await wait_stdin_closed()
        nursery.cancel_scope.cancel()


def blast_packet() -> bytes:
    """The packet a blast pushes, byte for byte what the trionano server sends."""
    body = json.dumps({"p": "x" * (PUSH_BODY_SIZE - 8)}, separators=(",", ":")).encode()
    return wire.MessageCodec().push_packet("onBlast", body)


def serve_rawsend() -> None:
    """Plain sockets: accept, answer the handshake, then on a blast request send the same
    packet to every connection with a non-blocking send loop."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    print(listener.getsockname()[1], flush=True)
    packet = blast_packet()
    handshake = wire.encode_packet(wire.PacketType.HANDSHAKE, wire.HandshakeResponse(heartbeat=0).encode())
    conns: list[socket.socket] = []
    while True:
        sock, _ = listener.accept()
        request = sock.recv(65536)
        if b"blast" in request:  # the controller's connection: {"rounds": K, "sessions": N}
            args = json.loads(request[request.index(b"{") :])
            break
        sock.sendall(handshake)
        sock.setblocking(False)
        conns.append(sock)
    start = time.perf_counter()
    pending = 0
    for _ in range(args["rounds"]):
        for conn in conns:
            try:
                conn.send(packet)
            except BlockingIOError:
                pending += 1
    seconds = time.perf_counter() - start
    sock.sendall(json.dumps({"encodes": 1, "seconds": seconds, "dropped": pending}).encode())
    sys.stdin.read()


def serve_cluster_node(role: str, listen: str, master: str) -> None:
    """B12's nodes: a master, a backend hosting the bench component, a gate forwarding to it."""
    from trionano.cluster import ClusterConfig, Node, run

    components = Components()
    if role == "backend":
        components.register(Bench(), name="bench")
    node = Node(
        components,
        ClusterConfig(
            service_address=listen,
            master_address=None if role == "master" else master,
            is_master=role == "master",
            node_id={"master": 1, "backend": 2, "gate": 3}[role],
        ),
        Config(heartbeat=0, outbox_size=1024, rate_limit=None),
    )
    server = node.server
    endpoints = [trionano.TCPEndpoint("127.0.0.1")] if role == "gate" else []

    async def main(bridge: Any) -> None:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(functools.partial(node.run, bridge, *endpoints))
            print(ports[0] if ports else 0, flush=True)
            await wait_stdin_closed()
            server.shutdown()

    run(main)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "kind", choices=["trionano", "trionano-ws", "trionano-defaults", "echo", "rawsend", "master", "backend", "gate"]
    )
    parser.add_argument("--listen", default="")
    parser.add_argument("--master", default="")
    parsed = parser.parse_args()
    kind = parsed.kind
    if kind in ("master", "backend", "gate"):
        serve_cluster_node(kind, parsed.listen, parsed.master)
        return
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if kind in ("trionano", "trionano-ws"):
        trio.run(serve_trionano, kind == "trionano-ws")
    elif kind == "trionano-defaults":
        trio.run(serve_defaults)
    elif kind == "echo":
        trio.run(serve_echo)
    else:
        serve_rawsend()


if __name__ == "__main__":
    main()
