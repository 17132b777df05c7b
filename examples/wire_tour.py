"""A sans-IO tour: a client and a server :class:`~trionano.wire.Connection` talk through
memory, replaying nano's chat transcript (nano.md §6.1), and every byte is printed.

Run: ``python -m examples.wire_tour``
"""

from __future__ import annotations

from trionano import wire


def _show(direction: str, data: bytes) -> None:
    print(f"{direction}  {data[:4].hex(' ')}  {data[4:].hex(' ')}")


def main() -> list[wire.Event]:
    """Run the tour; returns what each side received, in order (the example's smoke test)."""
    received: list[wire.Event] = []
    server = wire.Connection(wire.Role.SERVER, heartbeat=30)
    client = wire.Connection(wire.Role.CLIENT)

    def to_server(data: bytes) -> wire.Event:
        _show("C->S", data)
        server.receive_data(data, now=0)
        event = server.next_event()
        assert event is not None
        received.append(event)
        return event

    def to_client(data: bytes) -> wire.Event:
        _show("S->C", data)
        client.receive_data(data, now=0)
        event = client.next_event()
        assert event is not None
        received.append(event)
        return event

    to_server(client.send(wire.Handshake(type="js-websocket", version="0.0.1")))
    to_client(server.send(wire.HandshakeResponse(heartbeat=30, servertime=1700000000)))
    to_server(client.send(wire.HandshakeAck()))
    request = to_server(client.send(wire.Request(1, "room.join", b"{}")))
    assert isinstance(request, wire.Request)
    to_client(server.send(wire.Push("onMembers", b'{"members":null}')))
    to_client(server.send(wire.Response(request.id, b'{"code":0,"result":"success"}')))
    to_server(client.send(wire.Notify("room.message", b'{"name":"guest","content":"hi"}')))
    to_client(server.send(wire.Push("onMessage", b'{"name":"guest","content":"hi"}')))
    to_client(server.send(wire.Heartbeat(), now=30))
    to_client(server.send(wire.Kick("shutdown")))
    for event in received:
        print(event)
    return received


if __name__ == "__main__":
    main()
