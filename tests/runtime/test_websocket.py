"""The WebSocket transport: framing, static files on the same port, origins, WSS, and TCP
and WebSocket served by one server at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_websocket

from tests.runtime.apps import Echo, echo_components, tls_contexts
from trionano import Components, Server, TCPEndpoint, WebSocketEndpoint, wire
from trionano.client import open_client, open_websocket_client

CODEC = wire.MessageCodec()
HANDSHAKE = wire.encode_packet(wire.PacketType.HANDSHAKE) + wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)


@asynccontextmanager
async def serving(server: Server, *endpoints: TCPEndpoint | WebSocketEndpoint) -> AsyncIterator[list[int]]:
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(server.serve, *endpoints)
        yield ports
        server.shutdown()


def packets_of(message: bytes) -> list[wire.Packet]:
    """Decode one WebSocket message on its own: it must hold whole packets only."""
    decoder = wire.PacketDecoder()
    decoder.feed(message)
    packets = []
    while (packet := decoder.next_packet()) is not None:
        packets.append(packet)
    assert decoder.buffered == 0, f"a packet was split across messages: {message!r}"
    return packets


async def test_python_client_over_websocket() -> None:
    async with (
        serving(Server(echo_components()), WebSocketEndpoint("127.0.0.1")) as (port,),
        open_websocket_client(f"ws://127.0.0.1:{port}/") as client,
    ):
        assert await client.request("echo.json", {"over": "ws"}) == {"over": "ws"}
        assert await client.request("echo.raw", b"abc", raw=True) == b"cba"


async def test_framing_whole_packets_out_any_split_in_text_too() -> None:
    async with (
        serving(Server(echo_components()), WebSocketEndpoint("127.0.0.1")) as (port,),
        trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as ws,
    ):
        await ws.send_message(HANDSHAKE)  # two packets in one message
        (response,) = packets_of(await ws.get_message())  # type: ignore[arg-type]
        assert response.type is wire.PacketType.HANDSHAKE
        request = CODEC.request_packet(1, "echo.json", b'{"n":1}')
        await ws.send_message(request[:3])  # one packet split over three messages
        await ws.send_message(request[3:10])
        await ws.send_message(request[10:])
        (packet,) = packets_of(await ws.get_message())  # type: ignore[arg-type]
        assert CODEC.decode(packet.body) == wire.Response(1, b'{"n":1}')
        # a text frame carries the same bytes (a JS client may send one)
        await ws.send_message(CODEC.request_packet(2, "echo.json", b'{"n":2}').decode("latin-1"))
        (packet,) = packets_of(await ws.get_message())  # type: ignore[arg-type]
        assert CODEC.decode(packet.body) == wire.Response(2, b'{"n":2}')
        # many requests at once: answers may be joined, but never split
        await ws.send_message(b"".join(CODEC.request_packet(n, "echo.json", b"{}") for n in range(3, 40)))
        answered = 0
        while answered < 37:
            answered += len(packets_of(await ws.get_message()))  # type: ignore[arg-type]


async def test_protocol_error_over_websocket_is_kicked() -> None:
    async with (
        serving(Server(echo_components()), WebSocketEndpoint("127.0.0.1")) as (port,),
        trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as ws,
    ):
        await ws.send_message(HANDSHAKE)
        await ws.get_message()
        await ws.send_message(b"\x09\x00\x00\x00")
        (kick,) = packets_of(await ws.get_message())  # type: ignore[arg-type]
        assert kick.type is wire.PacketType.KICK
        assert "wrong packet type" in wire.Kick.parse(kick.body).reason
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()


async def test_origin_check_refuses_the_handshake() -> None:
    endpoint = WebSocketEndpoint("127.0.0.1", check_origin=lambda origin: origin == "https://game.example")
    async with serving(Server(echo_components()), endpoint) as (port,):
        with pytest.raises(trio_websocket.ConnectionRejected) as refused:
            async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/", use_ssl=False, extra_headers=[(b"origin", b"https://evil.example")]
            ):
                pass
        assert refused.value.status_code == 403
        async with trio_websocket.open_websocket(
            "127.0.0.1", port, "/", use_ssl=False, extra_headers=[(b"origin", b"https://game.example")]
        ) as ws:
            await ws.send_message(HANDSHAKE)
            assert packets_of(await ws.get_message())[0].type is wire.PacketType.HANDSHAKE  # type: ignore[arg-type]


async def test_wss_round_trip_with_a_self_signed_certificate() -> None:
    server_context, client_context = tls_contexts()
    async with (
        serving(Server(echo_components()), WebSocketEndpoint("127.0.0.1", ssl_context=server_context)) as (port,),
        open_websocket_client(f"wss://127.0.0.1:{port}/", ssl_context=client_context) as client,
    ):
        assert await client.request("echo.json", {"tls": True}) == {"tls": True}


async def test_static_files_share_the_port(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>chat</h1>")
    (tmp_path / "app.js").write_text("export const x = 1;")
    (tmp_path.parent / "secret.txt").write_text("no")
    extra = tmp_path.parent / "client.mjs"
    extra.write_text("export default 2;")
    endpoint = WebSocketEndpoint("127.0.0.1", static_dir=tmp_path, static_files={"/lib/client.js": extra})
    async with serving(Server(echo_components()), endpoint) as (port,):

        async def get(target: str, method: str = "GET") -> tuple[bytes, bytes]:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            return head, body

        head, body = await get("/")
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"<h1>chat</h1>"
        head, body = await get("/app.js")
        assert b"content-type: text/javascript" in head.lower()
        head, body = await get("/lib/client.js")
        assert body == b"export default 2;"
        assert (await get("/../secret.txt"))[0].startswith(b"HTTP/1.1 404")
        assert (await get("/%2e%2e/secret.txt"))[0].startswith(b"HTTP/1.1 404")
        assert (await get("/missing"))[0].startswith(b"HTTP/1.1 404")
        assert (await get("/", "POST"))[0].startswith(b"HTTP/1.1 405")
        head, body = await get("/", "HEAD")
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b""
        # and the WebSocket on the same port and path still works
        async with open_websocket_client(f"ws://127.0.0.1:{port}/") as client:
            assert await client.request("echo.json", {}) == {}


async def test_silent_connection_is_reaped(autojump_clock: trio.testing.MockClock) -> None:
    async with serving(Server(echo_components()), WebSocketEndpoint("127.0.0.1", handshake_timeout=5)) as (port,):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            start = trio.current_time()
            assert await stream.receive_some(100) == b""  # closed by the server
            assert 5 <= trio.current_time() - start < 6


async def test_tcp_and_websocket_served_by_one_server() -> None:
    echo = Echo()
    components = Components()
    components.register(echo, name="echo")
    server = Server(components)
    async with serving(server, TCPEndpoint("127.0.0.1"), WebSocketEndpoint("127.0.0.1", path="/nano")) as ports:
        tcp_port, ws_port = ports
        async with (
            open_client("127.0.0.1", tcp_port) as tcp,
            open_websocket_client(f"ws://127.0.0.1:{ws_port}/nano") as ws,
        ):
            assert await tcp.request("echo.join", b"") == {"members": 1}
            assert await ws.request("echo.join", b"") == {"members": 2}
            await ws.notify("echo.shout", {"from": "ws"})
            assert await tcp.receive_push("onShout") == {"from": "ws"}
            assert await ws.receive_push("onShout") == {"from": "ws"}
