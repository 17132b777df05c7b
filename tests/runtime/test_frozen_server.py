"""A server process that was stopped (SIGSTOP) or starved for longer than its clients' heartbeat
timeout kicks none of the clients that kept sending heartbeats meanwhile: their packets wait
unread in its sockets, and are read before their silence is judged (the cluster master's
eviction had the same fault: attack3 t3)."""

from __future__ import annotations

import signal
import socket
import sys

import trio

from trionano import wire
from trionano.testing import open_raw_connection

HEARTBEAT = 0.5  # the client timeout is 2.5 intervals: 1.25 s

SERVER = """
import logging, sys
import trionano
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
server = trionano.Server(trionano.Components(), trionano.Config(heartbeat={heartbeat}))
trionano.run(server, trionano.TCPEndpoint("127.0.0.1", {port}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_frozen_server_kicks_no_client_that_kept_its_heartbeats() -> None:
    port = _free_port()
    code = SERVER.format(heartbeat=HEARTBEAT, port=port)
    process = await trio.lowlevel.open_process([sys.executable, "-c", code])
    try:
        with trio.fail_after(60):
            await _wait_listening(port)
            async with open_raw_connection("127.0.0.1", port) as raw:
                await raw.handshake()
                kicked: list[wire.Packet] = []

                async def heartbeats() -> None:
                    while True:  # as a client does: whatever the server does
                        await raw.send(wire.encode_packet(wire.PacketType.HEARTBEAT))
                        await trio.sleep(HEARTBEAT / 2)

                async def watch() -> None:
                    while True:  # EOFError (closed: kicked) fails the test
                        packet = await raw.receive_packet()
                        if packet.type is wire.PacketType.KICK:
                            kicked.append(packet)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(heartbeats)
                    nursery.start_soon(watch)
                    await trio.sleep(2 * HEARTBEAT)
                    process.send_signal(signal.SIGSTOP)
                    await trio.sleep(8 * HEARTBEAT)  # far past the 2.5 intervals of its timeout
                    process.send_signal(signal.SIGCONT)
                    await trio.sleep(8 * HEARTBEAT)
                    nursery.cancel_scope.cancel()
                assert kicked == []
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        await process.wait()


async def _wait_listening(port: int) -> None:
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.1)
            continue
        await stream.aclose()
        return
