"""Which sans-I/O WebSocket engine the server drives, and what its own path costs (issue #10).

Per message, what the server's WebSocket path does: parse one masked client frame carrying a
68 B request packet and serialize one unmasked server frame carrying a 72 B response packet,
in-process, best of 5 repeats, for

- wsproto's engine (``Connection``: events in, events out), the engine the server drove first;
- websockets' engine (``Protocol``: ``receive_data``/``events_received``, ``send_binary``);
- the server's path (``WebSocketServerStream.receive_some`` and ``send_some_nowait`` over a
  transport that hands the frame over at once): a whole single-frame message read inline and
  unmasked by websockets' ``apply_mask``, the response framed inline; websockets' engine takes
  every other frame (control frames, fragments, anything malformed or split across reads).

Reported as microseconds per message and as the ratio to wsproto (same run).

Run: ``python -m bench.websocket`` (also in ``nox -s bench``).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import trio
from websockets.frames import Frame
from websockets.protocol import Protocol, Side, State
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage

from bench._loadgen import BODY, ws_frame
from trionano import wire
from trionano._websocket import WebSocketServerStream

PACKET: bytes = wire.MessageCodec().request_packet(1, "bench.echo", BODY)
REQUEST: bytes = ws_frame(PACKET)
RESPONSE: bytes = wire.MessageCodec().response_packet(1, BODY)


def wsproto_engine() -> Callable[[], bytes]:
    ws = Connection(ConnectionType.SERVER)

    def one() -> bytes:
        ws.receive_data(REQUEST)
        for event in ws.events():
            assert isinstance(event, BytesMessage)
        return ws.send(BytesMessage(RESPONSE))

    return one


def websockets_engine() -> Callable[[], bytes]:
    ws = Protocol(Side.SERVER, state=State.OPEN, max_size=1 << 20)

    def one() -> bytes:
        ws.receive_data(REQUEST)
        for frame in ws.events_received():
            assert isinstance(frame, Frame)
        ws.send_binary(RESPONSE)
        return b"".join(ws.data_to_send())

    return one


class _Transport(trio.abc.Stream):
    """Hands over one request frame per read, at once; keeps the last write."""

    written = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return REQUEST

    def send_some_nowait(self, data: bytes) -> int:
        self.written = data
        return len(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise AssertionError("send_some_nowait takes every frame")

    async def wait_send_all_might_not_block(self) -> None:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        raise AssertionError("not used")


def server_path() -> Callable[[], bytes]:
    transport = _Transport()
    stream = WebSocketServerStream(transport, max_message_size=1 << 20)
    receive_some, send_some_nowait = stream.receive_some, stream.send_some_nowait

    def one() -> bytes:
        # the coroutine runs to its end without waiting (the transport never blocks)
        coro = receive_some(65536)
        try:
            coro.send(None)
        except StopIteration as done:
            received = done.value
        else:
            raise AssertionError("the read waited")
        if received != PACKET:
            raise AssertionError(f"read {received!r}")
        send_some_nowait(RESPONSE)
        return transport.written

    return one


def main() -> None:
    number = 20_000
    print("WebSocket per message: one masked client frame parsed and one server frame serialized")
    results = {}
    for name, make in (
        ("wsproto", wsproto_engine),
        ("websockets", websockets_engine),
        ("server path", server_path),
    ):
        one = make()
        assert one() == wsproto_engine()(), name  # byte for byte the same frame out
        results[name] = min(timeit.repeat(one, number=number, repeat=5)) / number * 1e6
    for name, us in results.items():
        print(f"  {name:<12} {us:6.2f} us per message   ratio to wsproto {us / results['wsproto']:.2f}")
    print(
        "  the server's path: trionano._websocket.WebSocketServerStream (single-frame messages inline,"
        " websockets' engine for every other frame)\n"
    )


if __name__ == "__main__":
    main()
