"""Helpers for testing trionano applications (and trionano itself) over real loopback sockets.

::

    async def test_join() -> None:
        async with open_test_server(components) as running:
            async with running.connect() as client:
                assert await client.request("room.join", {}) == {"code": 0, "result": "success"}

:func:`open_test_server` runs a :class:`~trionano.Server` on a free loopback port and shuts it
down gracefully when the block ends; :func:`open_raw_connection` speaks packets byte by byte,
for checking exactly what goes over the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from .. import wire
from .._component import Components
from .._config import Config
from .._server import Server, serve_tcp
from .._util import open_nursery_around
from ..client import Client, open_client

__all__ = ["RawConnection", "RunningServer", "open_raw_connection", "open_test_server"]


@attrs.frozen
class RunningServer:
    """A server that :func:`open_test_server` runs, and where it listens (``host``, ``port``)."""

    server: Server
    port: int
    host: str = "127.0.0.1"

    def connect(self, **kwargs: Any) -> AbstractAsyncContextManager[Client]:
        """:func:`trionano.client.open_client` to this server."""
        return open_client(self.host, self.port, **kwargs)

    def raw(self) -> AbstractAsyncContextManager[RawConnection]:
        """:func:`open_raw_connection` to this server (no handshake yet)."""
        return open_raw_connection(self.host, self.port)


@asynccontextmanager
async def open_test_server(
    app: Components | Server, config: Config | None = None, *, host: str = "127.0.0.1"
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` (components, or a ready Server) over TCP on a free port of ``host``.
    On exit the server shuts down gracefully and every task it started has finished."""
    server = app if isinstance(app, Server) else Server(app, config)
    async with open_nursery_around(lambda _: server.shutdown()) as nursery:
        port = await nursery.start(lambda task_status: serve_tcp(server, 0, host=host, task_status=task_status))
        yield RunningServer(server, port, host)


class RawConnection:
    """A TCP connection that sends raw bytes and reads whole packets."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = wire.PacketDecoder()
        self.codec = wire.MessageCodec()

    async def send(self, data: bytes) -> None:
        """Send ``data`` as it is. Raises trio.BrokenResourceError when the server has gone."""
        await self.stream.send_all(data)

    async def receive_packet(self) -> wire.Packet:
        """The next packet. Raises EOFError when the server closed the connection first."""
        while (packet := self.decoder.next_packet()) is None:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.decoder.feed(data)
        return packet

    async def receive_message(self) -> wire.Message:
        """The next Data packet's message, skipping heartbeats."""
        while True:
            packet = await self.receive_packet()
            if packet.type is wire.PacketType.DATA:
                return self.codec.decode(packet.body)
            if packet.type is not wire.PacketType.HEARTBEAT:
                raise AssertionError(f"expected a Data packet, got {packet}")

    async def receive_response(self) -> wire.Response:
        """The next Data packet's message, which must be a Response (heartbeats skipped)."""
        message = await self.receive_message()
        if not isinstance(message, wire.Response):
            raise AssertionError(f"expected a Response, got {message}")
        return message

    async def receive_until_closed(self) -> list[wire.Packet]:
        """Every packet until the server closes the connection."""
        packets = []
        while True:
            try:
                packets.append(await self.receive_packet())
            except (EOFError, trio.BrokenResourceError):
                return packets

    async def handshake(self, body: bytes = b"") -> wire.HandshakeResponse:
        """Handshake (``body`` as the request, empty as nano's Go client) and ack."""
        await self.send(wire.encode_packet(wire.PacketType.HANDSHAKE, body))
        packet = await self.receive_packet()
        assert packet.type is wire.PacketType.HANDSHAKE, packet
        response = wire.HandshakeResponse.parse(packet.body)
        if response.dictionary is not None:
            self.codec = wire.MessageCodec(response.dictionary)
        await self.send(wire.encode_packet(wire.PacketType.HANDSHAKE_ACK))
        return response


@asynccontextmanager
async def open_raw_connection(host: str, port: int) -> AsyncIterator[RawConnection]:
    """A TCP connection to ``host:port`` that speaks bytes, closed when the block ends.
    Raises OSError when it cannot connect."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        yield RawConnection(stream)
