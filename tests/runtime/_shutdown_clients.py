"""Many pomelo clients in a process of their own, for the shutdown tests:
``python -m tests.runtime._shutdown_clients HOST TCP_PORT WS_PORT TCP_READERS WS_READERS
TCP_IDLE WS_IDLE [JOIN_ROUTE]``.

Plain non-blocking sockets on one ``selectors`` loop (no task, no thread per client), so a test
can run a couple of thousand clients beside a server on a 2-core machine. Each client
handshakes and sends one Request to ``JOIN_ROUTE`` (``room.join`` by default; its body holds
``uid``: the client's number plus one); a WebSocket client does the opening handshake first (a
WebSocket port of 0: none is used). Readers read everything until the server closes the
connection, answering heartbeats; a WebSocket reader answers the server's close frame with its
own, as browsers do.
Idle clients (receive buffer of 4 KiB) read until their join is answered, then nothing more:
their buffers fill up, and neither a Kick nor a close frame can reach them.

Prints ``{"joined": N, "idle": [uid, ...]}`` once every client's join has been answered
(clients connect 100 at a time, within a server's handshake bounds); then, once stdin ends, reads what every idle
client's buffer holds until its connection ended, and prints a JSON object: for each kind
(``tcp_readers``, ``ws_readers``, ``tcp_idle``, ``ws_idle``) ``count``, ``ended`` (the server
closed it), ``kicked`` (its last packet was a Kick "shutdown") and ``pushes`` (Pushes read).
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import sys
import time
from typing import Final

from trionano import wire

ROUTE: Final = "onLoad"  # what the tests push
_KINDS: Final = ("tcp_readers", "ws_readers", "tcp_idle", "ws_idle")
_HANDSHAKE: Final = wire.encode_packet(wire.PacketType.HANDSHAKE, b'{"sys":{"type":"py","version":"0.1"}}')
_ACK: Final = wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
_MASK: Final = b"\x1f\x2e\x3d\x4c"


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client's (masked) WebSocket frame."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    masked = bytes(byte ^ _MASK[i % 4] for i, byte in enumerate(payload))
    return head + _MASK + masked


class Client:
    __slots__ = (
        "buffer",
        "closing",
        "codec",
        "ended",
        "joined",
        "kind",
        "last",
        "pushes",
        "raw",
        "sock",
        "upgraded",
        "ws",
    )

    def __init__(self, kind: str, sock: socket.socket, codec: wire.MessageCodec) -> None:
        self.kind = kind
        self.codec = codec
        self.ws = kind.startswith("ws")
        self.sock = sock
        self.raw = bytearray()  # WebSocket bytes not yet unframed
        self.buffer = bytearray()  # pomelo bytes not yet parsed
        self.upgraded = not self.ws
        self.joined = False
        self.ended = False
        self.closing = False  # a WebSocket close frame was read (and answered)
        self.last: tuple[int, bytes] | None = None  # the last packet read: its type and body
        self.pushes = 0

    def feed(self, data: bytes) -> None:
        if not self.ws:
            self.buffer += data
        else:
            self.raw += data
            if not self.upgraded:
                end = self.raw.find(b"\r\n\r\n")
                if end < 0:
                    return
                del self.raw[: end + 4]
                self.upgraded = True
            self._unframe()
        self._packets()

    def _unframe(self) -> None:
        raw = self.raw
        while len(raw) >= 2:
            opcode, size, start = raw[0] & 0x0F, raw[1] & 0x7F, 2
            if size == 126:
                if len(raw) < 4:
                    return
                size, start = int.from_bytes(raw[2:4], "big"), 4
            elif size == 127:
                if len(raw) < 10:
                    return
                size, start = int.from_bytes(raw[2:10], "big"), 10
            if len(raw) < start + size:
                return
            payload = bytes(raw[start : start + size])
            del raw[: start + size]
            if opcode in (0, 1, 2):
                self.buffer += payload
            elif opcode == 8 and not self.closing:  # the server's close: answered, as a browser does
                self.closing = True
                try:
                    self.sock.send(_frame(8, payload[:2]))
                except OSError:
                    pass

    def _packets(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 4:
            end = 4 + int.from_bytes(buffer[1:4], "big")
            if len(buffer) < end:
                return
            kind, body = buffer[0], bytes(buffer[4:end])
            del buffer[:end]
            if kind == wire.PacketType.HEARTBEAT:  # answered, as pomelo's clients do
                heartbeat = wire.encode_packet(wire.PacketType.HEARTBEAT)
                try:
                    self.sock.send(_frame(2, heartbeat) if self.ws else heartbeat)
                except OSError:
                    pass
            elif kind == wire.PacketType.DATA:
                message = self.codec.decode(body)
                if isinstance(message, wire.Response):
                    self.joined = True
                elif isinstance(message, wire.Push):
                    self.pushes += 1
            self.last = (kind, body)

    @property
    def kicked(self) -> bool:
        """Whether the last packet read was a Kick "shutdown"."""
        if self.last is None or self.last[0] != wire.PacketType.KICK:
            return False
        return wire.Kick.parse(self.last[1]).reason == "shutdown"

    def read(self) -> None:
        try:
            data = self.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.ended = not data
        self.feed(data)


def main() -> None:
    host, tcp_port, ws_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    counts = dict(zip(_KINDS, map(int, sys.argv[4:8]), strict=True))
    route = sys.argv[8] if len(sys.argv) > 8 else "room.join"
    codec = wire.MessageCodec()
    order = [kind for kind in _KINDS for _ in range(counts[kind])]
    order = order[::2] + order[1::2]  # the kinds mixed
    clients: list[Client] = []
    selector = selectors.DefaultSelector()

    def pump(timeout: float) -> bool:
        """Read what is ready; whether stdin has ended."""
        ended = False
        for key, _ in selector.select(timeout):
            client: Client | None = key.data
            if client is None:
                ended = not sys.stdin.read()
            elif client.kind.endswith("idle") and client.joined:
                selector.unregister(client.sock)  # joined: it reads no more
            else:
                client.read()
                if client.ended:
                    selector.unregister(client.sock)
                    client.sock.close()
        return ended

    for start in range(0, len(order), 100):
        batch = []
        for kind in order[start : start + 100]:
            sock = socket.socket()
            if kind.endswith("idle"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client = Client(kind, sock, codec)
            sock.connect((host, ws_port if client.ws else tcp_port))
            join = codec.request_packet(1, route, json.dumps({"uid": len(clients) + 1}).encode())
            if client.ws:
                key = base64.b64encode(os.urandom(16))
                upgrade = b"GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" % host.encode()
                upgrade += b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key
                sock.sendall(upgrade + b"".join(_frame(2, packet) for packet in (_HANDSHAKE, _ACK, join)))
            else:
                sock.sendall(_HANDSHAKE + _ACK + join)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, client)
            clients.append(client)
            batch.append(client)
        deadline = time.monotonic() + 120
        while not all(c.joined for c in batch):
            if time.monotonic() > deadline or any(c.ended for c in batch):
                raise SystemExit(f"clients {start}..{start + len(batch)} did not all join")
            pump(0.05)
    idle = [number for number, client in enumerate(clients, 1) if client.kind.endswith("idle")]
    print(json.dumps({"joined": len(clients), "idle": idle}), flush=True)
    os.set_blocking(sys.stdin.fileno(), False)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    while not pump(0.05):  # the readers read until stdin ends
        pass
    for client in clients:  # then what each idle client's buffer holds, until its end
        if client.kind.endswith("idle") and not client.ended:
            client.sock.setblocking(True)
            client.sock.settimeout(10)
            while not client.ended:
                try:
                    data = client.sock.recv(1 << 18)
                except TimeoutError:
                    break
                except OSError:  # reset
                    data = b""
                client.ended = not data
                client.feed(data)
            client.sock.close()
    report = {
        kind: {
            "count": sum(c.kind == kind for c in clients),
            "ended": sum(c.kind == kind and c.ended for c in clients),
            "kicked": sum(c.kind == kind and c.kicked for c in clients),
            "pushes": sum(c.pushes for c in clients if c.kind == kind),
        }
        for kind in _KINDS
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
