"""trionano.client once the server has kicked it: every later call raises Kicked (not the wire
layer's refusal to send on a closed connection), and a write the server no longer reads is
given up at the Kick, not when the server closes the socket later."""

from __future__ import annotations

import pytest
import trio

from trionano import Kicked, wire
from trionano.client import open_client


async def kicking_server(
    listeners: list[trio.SocketListener], kicked: trio.Event, task_status: trio.TaskStatus[int]
) -> None:
    """Handshakes one client, then stops reading and sends a Kick; holds the socket open."""
    listener = listeners[0]
    task_status.started(listener.socket.getsockname()[1])
    stream = await listener.accept()
    conn = wire.Connection(wire.Role.SERVER, heartbeat=0)
    while conn.state is not wire.State.WORKING:
        conn.receive_data(await stream.receive_some(), trio.current_time())
        while (event := conn.next_event()) is not None:
            if isinstance(event, wire.Handshake):
                await stream.send_all(conn.send(wire.HandshakeResponse(heartbeat=0)))
    await kicked.wait()
    await stream.send_all(conn.send(wire.Kick("go away")))
    await trio.sleep_forever()  # never reads again, never closes


async def test_after_a_kick_calls_raise_kicked_and_a_blocked_write_is_given_up() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    kicked = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(kicking_server, listeners, kicked)
        async with open_client("127.0.0.1", port, max_body=wire.MAX_BODY_SIZE) as client:
            blocked = trio.Event()

            async def flood() -> None:  # far more than the socket buffers hold: it blocks
                while True:
                    with trio.move_on_after(0.5) as scope:
                        await client.notify("room.say", {"text": "x" * 60_000})
                    if scope.cancelled_caught:
                        break
                blocked.set()
                with pytest.raises(Kicked, match="go away"):
                    await client.notify("room.say", {"text": "x" * 60_000})

            with trio.fail_after(60):  # a write the Kick does not release would wait forever
                async with trio.open_nursery() as inner:
                    inner.start_soon(flood)
                    await blocked.wait()
                    kicked.set()  # the flood's write is still blocked: the Kick must release it
            with pytest.raises(Kicked, match="go away"):
                await client.request("room.echo", {})
            with pytest.raises(Kicked, match="go away"):
                await client.notify("room.say", {})
        nursery.cancel_scope.cancel()
