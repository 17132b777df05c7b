"""The load generator: plain non-blocking sockets and epoll, precomputed frames, no trio, so
it stays cheap beside the server it loads. Run in its own process by bench/runtime.py; prints
one JSON line of results, including its own CPU seconds.

``python -m bench._loadgen b1 PORT --connections 50 --seconds 5 [--pomelo] [--window]``
``python -m bench._loadgen b4 PORT --sessions N --rounds K --packet-len L [--websocket]``
``python -m bench._loadgen hold PORT --sessions N`` (connect, handshake, hold until stdin closes)
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from trionano import wire

# what pomelo's clients send (pinus refuses a handshake without "sys"); the Ack follows the answer
HANDSHAKE = wire.encode_packet(wire.PacketType.HANDSHAKE, b'{"sys":{"type":"bench","version":"0.1"},"user":{}}')
HANDSHAKE_ACK = wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
ROUTE = "bench.echo"
BODY = json.dumps({"msg": "y" * 54}, separators=(",", ":")).encode()  # 64 bytes
assert len(BODY) == 64


def cpu() -> float:
    return time.process_time()


def read_packet(sock: socket.socket, buf: bytearray) -> int:
    """Block until one whole non-heartbeat packet is in; return its type."""
    while True:
        while len(buf) >= 4:
            end = 4 + int.from_bytes(buf[1:4], "big")
            if len(buf) < end:
                break
            ptype = buf[0]
            del buf[:end]
            if ptype != wire.PacketType.HEARTBEAT:
                return ptype
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        buf += data


def ws_frame(payload: bytes) -> bytes:
    """A masked binary WebSocket frame (clients must mask; a fixed key is valid)."""
    mask = b"\x11\x22\x33\x44"
    n = len(payload)
    head = bytes([0x82, 0x80 | n]) if n < 126 else bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_upgrade(sock: socket.socket) -> None:
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head


def ws_payloads(buf: bytearray) -> list[bytes]:
    """Take whole unmasked server frames off ``buf``; their payloads."""
    out = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        start = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, start = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, start = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < start + n:
            break
        out.append(bytes(buf[start : start + n]))
        del buf[: start + n]
    return out


def connect(port: int, pomelo: bool, join: bool = False, websocket: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if websocket:
        ws_upgrade(sock)
        sock.sendall(ws_frame(HANDSHAKE))
        buf = bytearray()
        while not ws_payloads(buf):
            buf += sock.recv(65536)
        sock.sendall(ws_frame(HANDSHAKE_ACK))
        if join:
            sock.sendall(ws_frame(wire.MessageCodec().request_packet(1, "bench.join", b"")))
            while not ws_payloads(buf):
                buf += sock.recv(65536)
        return sock
    if pomelo:
        sock.sendall(HANDSHAKE)
        buf = bytearray()
        assert read_packet(sock, buf) == wire.PacketType.HANDSHAKE
        sock.sendall(HANDSHAKE_ACK)
        if join:
            sock.sendall(wire.MessageCodec().request_packet(1, "bench.join", b""))
            assert read_packet(sock, buf) == wire.PacketType.DATA
    return sock


class _Conn:
    __slots__ = ("buf", "sent_at")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.sent_at = 0


def _closed_loop_result(done: int, elapsed: float, used: float, latencies: list[int]) -> dict[str, Any]:
    latencies.sort()
    return {
        "requests": done,
        "seconds": elapsed,
        "rps": done / elapsed,
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1000,
        "loadgen_cpu": used / elapsed,
    }


def packets(buf: bytearray) -> list[bytes]:
    """Take whole packets off ``buf``."""
    out = []
    while len(buf) >= 4 and len(buf) >= (end := 4 + int.from_bytes(buf[1:4], "big")):
        out.append(bytes(buf[:end]))
        del buf[:end]
    return out


def packet_types(buf: bytearray) -> list[int]:
    """Take whole packets off ``buf``; their types."""
    return [packet[0] for packet in packets(buf)]


def message_packets(buf: bytearray) -> list[bytes]:
    """Take whole WebSocket messages off ``buf``; the packets they carry."""
    out = []
    for payload in ws_payloads(buf):
        out.extend(packets(bytearray(payload)))
    return out


def b1(
    port: int,
    connections: int,
    seconds: float,
    pomelo: bool,
    websocket: bool = False,
    route: str = ROUTE,
    window: bool = False,
) -> dict[str, Any]:
    """Closed loop: each connection sends a request to ``route`` and waits for its answer,
    again and again; every answer must be the echo (the Response packet carrying the request's
    body, byte for byte), or it is counted in ``wrong``. ``websocket``: the same over WebSocket
    (one masked frame per request). ``window``: see :func:`closed_loop`."""
    frame = wire.MessageCodec().request_packet(1, route, BODY)
    expected = wire.MessageCodec().response_packet(1, BODY)
    if websocket:
        socks = [connect(port, pomelo=True, websocket=True) for _ in range(connections)]
        return closed_loop(socks, ws_frame(frame), expected, seconds, message_packets, window)
    return closed_loop([connect(port, pomelo) for _ in range(connections)], frame, expected, seconds, packets, window)


def _handshake_with_caller(what: str) -> None:
    """Say ``what`` on stdout and wait for the caller's line on stdin."""
    print(what, flush=True)
    sys.stdin.readline()


def closed_loop(
    socks: list[socket.socket],
    frame: bytes,
    expected: bytes,
    seconds: float,
    replies: Callable[[bytearray], list[bytes]],
    window: bool = False,
) -> dict[str, Any]:
    """``window``: the timed window is the caller's too: "ready" on stdout once every
    connection is up (handshakes done), then wait for a line on stdin to start; "done" when the
    time is up, then wait for a line before closing the connections. The caller samples the
    server's CPU at those two points, so connecting and closing are not charged to requests."""
    selector = selectors.DefaultSelector()
    state = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        state[sock] = _Conn()
    if window:
        _handshake_with_caller("ready")
    latencies: list[int] = []
    wrong: list[bytes] = []
    cpu0 = cpu()
    start = time.perf_counter()
    deadline = start + seconds
    for sock in socks:
        state[sock].sent_at = time.perf_counter_ns()
        sock.send(frame)
    done = 0
    heartbeat = wire.PacketType.HEARTBEAT
    while time.perf_counter() < deadline:
        for key, _ in selector.select():
            sock = key.fileobj  # type: ignore[assignment]
            conn = state[sock]
            conn.buf += sock.recv(65536)
            for packet in replies(conn.buf):
                if packet != expected:
                    if packet[0] == heartbeat:
                        continue
                    wrong.append(packet)
                now = time.perf_counter_ns()
                latencies.append(now - conn.sent_at)
                done += 1
                conn.sent_at = now
                sock.send(frame)
    result = _closed_loop_result(done, time.perf_counter() - start, cpu() - cpu0, latencies)
    if window:
        _handshake_with_caller("done")
    for sock in socks:
        sock.close()
    result["wrong"] = len(wrong)
    result["first_wrong"] = wrong[0].hex() if wrong else ""
    return result


def b4(
    port: int, sessions: int, rounds: int, packet_len: int, baseline: bool, paced: bool, websocket: bool = False
) -> dict[str, float]:
    """N receivers; one controller asks for ``rounds`` broadcasts. The server times its own
    fan-out (so this process, which only drains and checks every byte arrived, cannot be the
    bottleneck). ``baseline``: the server is bench._servers' rawsend, not trionano.
    ``websocket``: over WebSocket (packets counted inside the frames: a writer joins several
    packets into one message)."""
    socks = [connect(port, pomelo=True, join=not baseline, websocket=websocket) for _ in range(sessions)]
    selector = selectors.DefaultSelector()
    remaining = {}
    buffers = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        remaining[sock] = rounds * packet_len
        buffers[sock] = bytearray()
    controller = connect(port, pomelo=not baseline, websocket=websocket)
    cpu0 = cpu()
    start = time.perf_counter()
    if baseline:
        controller.sendall(b'blast{"rounds":%d}' % rounds)
    else:
        request = json.dumps({"rounds": rounds, "paced": paced}).encode()
        packet = wire.MessageCodec().request_packet(2, "bench.blast", request)
        controller.sendall(ws_frame(packet) if websocket else packet)
    left = len(socks)
    while left:
        for key, _ in selector.select(timeout=30):
            sock = key.fileobj  # type: ignore[assignment]
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("a receiver was closed")
            if websocket:
                buf = buffers[sock]
                buf += data
                remaining[sock] -= sum(len(payload) for payload in ws_payloads(buf))
            else:
                remaining[sock] -= len(data)
            if remaining[sock] <= 0:
                selector.unregister(sock)
                left -= 1
    used = cpu() - cpu0
    controller.setblocking(True)
    controller.settimeout(30)
    if websocket:
        buf = bytearray()
        while not (payloads := ws_payloads(buf)):
            buf += controller.recv(65536)
        reply = payloads[0]
    else:
        reply = controller.recv(65536)
    info = json.loads(reply if baseline else reply[6:])  # a Response: header, flag, id 2, body
    for sock in [*socks, controller]:
        sock.close()
    return {
        "deliveries": sessions * rounds,
        "seconds": info["seconds"],  # measured by the server: first send to last byte handed over
        "per_second": sessions * rounds / info["seconds"],
        "encodes_per_broadcast": info["encodes"] / (1 if baseline else rounds),
        "dropped": info["dropped"],
        "loadgen_cpu": used / (time.perf_counter() - start),
    }


def hold(port: int, sessions: int) -> None:
    socks = [connect(port, pomelo=True) for _ in range(sessions)]
    print(json.dumps({"connected": len(socks)}), flush=True)
    sys.stdin.read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["b1", "b4", "hold"])
    parser.add_argument("port", type=int)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--packet-len", type=int, default=0)
    parser.add_argument("--pomelo", action="store_true", help="b1: handshake first (not for the echo server)")
    parser.add_argument("--baseline", action="store_true", help="b4: the server is the raw send loop")
    parser.add_argument("--paced", action="store_true", help="b4: yield after each broadcast")
    parser.add_argument("--route", default=ROUTE, help="b1: the echo handler's route")
    parser.add_argument("--websocket", action="store_true", help="b1, b4: over WebSocket")
    parser.add_argument("--window", action="store_true", help="b1: the caller times the window (closed_loop)")
    args = parser.parse_args()
    if args.mode == "b1":
        result: dict[str, Any] = b1(
            args.port, args.connections, args.seconds, args.pomelo, args.websocket, args.route, args.window
        )
    elif args.mode == "b4":
        result = b4(args.port, args.sessions, args.rounds, args.packet_len, args.baseline, args.paced, args.websocket)
    else:
        hold(args.port, args.sessions)
        return
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
