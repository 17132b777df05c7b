"""Servers the benchmarks measure, each run in its own process by bench/runtime.py.

``python -m bench._servers KIND`` prints its port on the first line of stdout, then serves
until stdin closes. Kinds: ``trionano`` (the bench component), ``trionano-defaults`` (the same
with the default Config, over TCP and WebSocket: "TCP WS" ports), ``echo`` (a raw trio TCP echo
server), ``floor`` and ``floor-ws`` (trionano's required shape with nothing else, over TCP and
WebSocket: B1's and B3's baselines, see :func:`serve_floor`), ``rawsend`` (accepts connections
and, on demand, pushes with a plain non-blocking ``socket.send`` loop: B4's baseline).
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Final

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
        trionano.tune_gc()  # as trionano.run does
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


# -- the floor: trionano's required shape with nothing else ---------------------------------

_FLOOR_HANDSHAKE: Final = wire.encode_packet(wire.PacketType.HANDSHAKE, wire.HandshakeResponse(heartbeat=0).encode())
_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B41"


def _json() -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    try:
        import orjson
    except ImportError:  # the same stdlib fallback trionano has
        return json.loads, lambda value: json.dumps(value, separators=(",", ":")).encode()
    return orjson.loads, orjson.dumps


async def serve_floor(websocket: bool = False) -> None:
    """The minimal shape trionano must keep (issue #10): per connection a reader task and a
    writer task, joined by trio memory channels to one scheduler task that runs every handler;
    each hop drains what is queued; the writer joins what is queued and tries a non-blocking
    write first. Plain non-blocking sockets, an inline pomelo codec (packets, Request ids,
    uncompressed routes, Response packets), the same JSON echo handler, and nothing else: no
    heartbeats, limits, counters, pipelines or error boundary. ``websocket``: the same behind a
    WebSocket upgrade, framed by websockets' sans-I/O engine (the one trionano's server drives)."""
    loads, dumps = _json()
    handlers: dict[str, Callable[[Any], Any]] = {"bench.echo": lambda msg: msg}
    to_scheduler, scheduled = trio.open_memory_channel[tuple[Any, int, str, bytes]](math.inf)
    wait_readable, wait_writable = trio.lowlevel.wait_readable, trio.lowlevel.wait_writable

    async def scheduler() -> None:
        while True:
            batch = [await scheduled.receive()]
            while True:
                try:
                    batch.append(scheduled.receive_nowait())
                except trio.WouldBlock:
                    break
            for outbox, mid, route, body in batch:
                result = dumps(handlers[route](loads(body)))
                head = b"\x04" + bytes((mid,)) if mid < 0x80 else b"\x04" + _varint(mid)
                packet = (0x04000000 | len(head) + len(result)).to_bytes(4, "big") + head + result
                outbox.send_nowait(packet)

    async def writer(sock: socket.socket, outbox: Any, frame: Callable[[bytes], bytes]) -> None:
        while True:
            try:
                first = outbox.receive_nowait()
            except trio.WouldBlock:
                first = await outbox.receive()
            parts = [first]
            while True:
                try:
                    parts.append(outbox.receive_nowait())
                except trio.WouldBlock:
                    break
            data = frame(b"".join(parts) if len(parts) > 1 else first)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            while sent < len(data):
                await wait_writable(sock)
                try:
                    sent += sock.send(memoryview(data)[sent:])
                except BlockingIOError:
                    pass

    def decode(buf: bytes, outbox: Any) -> bytes:
        """Take whole packets off ``buf``, hand Requests to the scheduler; the rest."""
        pos, n = 0, len(buf)
        while n - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos + 1 : pos + 4], "big")
            if end > n:
                break
            ptype = buf[pos]
            if ptype == 4:
                offset, mid, shift = pos + 5, 0, 0
                while True:
                    b = buf[offset]
                    offset += 1
                    mid |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                route_end = offset + 1 + buf[offset]
                to_scheduler.send_nowait((outbox, mid, buf[offset + 1 : route_end].decode(), buf[route_end:end]))
            elif ptype == 1:
                outbox.send_nowait(_FLOOR_HANDSHAKE)
            pos = end
        return buf[pos:]

    async def connection(sock: socket.socket) -> None:
        outbox_send, outbox = trio.open_memory_channel[bytes](math.inf)
        frame: Callable[[bytes], bytes] = bytes
        ws: Any = None
        if websocket:
            ws, frame = await _floor_upgrade(sock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, sock, outbox, frame)
            pending = b""
            while True:
                await wait_readable(sock)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                if ws is not None:
                    ws.receive_data(data)
                    data = b"".join(frame.data for frame in ws.events_received() if frame.opcode.value <= 2)
                pending = decode(pending + data if pending else data, outbox_send)
            nursery.cancel_scope.cancel()
        trio.lowlevel.notify_closing(sock)
        sock.close()

    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(scheduler)
        trionano.tune_gc()  # the same collector settings as the trionano server it is the floor of

        async def accept() -> None:
            while True:
                await wait_readable(listener)
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(connection, sock)

        nursery.start_soon(accept)
        await wait_stdin_closed()
        nursery.cancel_scope.cancel()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


async def _floor_upgrade(sock: socket.socket) -> tuple[Any, Callable[[bytes], bytes]]:
    """Answer a WebSocket upgrade by hand; the framing of websockets' sans-I/O engine from
    then on (the engine trionano drives): its protocol, and a function framing one binary
    message."""
    from websockets.protocol import Protocol, Side, State

    head = b""
    while b"\r\n\r\n" not in head:
        await trio.lowlevel.wait_readable(sock)
        head += sock.recv(65536)
    key = next(
        line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    ws = Protocol(Side.SERVER, state=State.OPEN, max_size=1 << 20)

    def frame(data: bytes) -> bytes:
        ws.send_binary(data)
        return b"".join(ws.data_to_send())

    return ws, frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "kind",
        choices=[
            "trionano",
            "trionano-ws",
            "trionano-defaults",
            "floor",
            "floor-ws",
            "echo",
            "rawsend",
        ],
    )
    parsed = parser.parse_args()
    kind = parsed.kind
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if kind in ("trionano", "trionano-ws"):
        trio.run(serve_trionano, kind == "trionano-ws")
    elif kind == "trionano-defaults":
        trio.run(serve_defaults)
    elif kind in ("floor", "floor-ws"):
        trio.run(serve_floor, kind == "floor-ws")
    elif kind == "echo":
        trio.run(serve_echo)
    else:
        serve_rawsend()


if __name__ == "__main__":
    main()
