"""Which sans-I/O WebSocket engine the server drives: wsproto or websockets (issue #10).

Per message, what the server's WebSocket path does with each engine: parse one masked client
frame carrying a 68 B request packet and serialize one unmasked server frame carrying a 72 B
response packet, in-process, best of 5 repeats. Reported as microseconds per message and as
the ratio to wsproto, the engine the server drove before (same run).

Run: ``python -m bench.websocket`` (also in ``nox -s bench``).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from websockets.frames import Frame
from websockets.protocol import Protocol, Side, State
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage

from bench._loadgen import BODY, ws_frame
from trionano import wire

REQUEST: bytes = ws_frame(wire.MessageCodec().request_packet(1, "bench.echo", BODY))
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


def main() -> None:
    number = 20_000
    print("WebSocket engines: per message, one masked client frame parsed and one server frame serialized")
    results = {}
    for name, make in (("wsproto", wsproto_engine), ("websockets", websockets_engine)):
        one = make()
        assert one() == wsproto_engine()(), name  # byte for byte the same frame out
        results[name] = min(timeit.repeat(one, number=number, repeat=5)) / number * 1e6
    for name, us in results.items():
        print(f"  {name:<12} {us:6.2f} us per message   ratio to wsproto {us / results['wsproto']:.2f}")
    print("  the server drives websockets' engine (trionano._websocket.WebSocketServerStream)\n")


if __name__ == "__main__":
    main()
