"""nano's chat demo (nano.md §6.1) against examples.chat: byte for byte, and via the client."""

from __future__ import annotations

import json
import time

import trio

import examples.chat
from tests.runtime.apps import wait_until
from trionano import wire
from trionano.client import open_client
from trionano.testing import open_test_server

STARX_HANDSHAKE = bytes.fromhex(
    "0100003a7b22737973223a7b2274797065223a226a732d776562736f636b6574222c2276657273696f6e223a22302e302e31222c22"
    "727361223a7b7d7d7d"
)


def data_packet(hex_head: str, payload: str) -> bytes:
    return bytes.fromhex(hex_head) + payload.encode()


async def test_chat_transcript_byte_for_byte() -> None:
    server, _ = examples.chat.build()
    async with open_test_server(server) as running, running.raw() as raw:
        await raw.send(STARX_HANDSHAKE)
        packet = await raw.receive_packet()
        assert packet.type is wire.PacketType.HANDSHAKE
        response = json.loads(packet.body)
        assert response["code"] == 200
        assert response["sys"]["heartbeat"] == 30
        assert abs(response["sys"]["servertime"] - time.time()) < 60
        assert packet.body == json.dumps(response, separators=(",", ":"), sort_keys=True).encode()
        await raw.send(bytes.fromhex("02000000"))
        await raw.send(bytes.fromhex("0400000e000109726f6f6d2e6a6f696e7b7d"))  # Request id=1 room.join {}
        first = await raw.stream.receive_some(4096)
        while len(first) < 0x1B + 4 + 0x1F + 4:
            first += await raw.stream.receive_some(4096)
        assert first == data_packet("0400001b06096f6e4d656d62657273", '{"members":null}') + data_packet(
            "0400001f0401", '{"code":0,"result":"success"}'
        )
        await raw.send(data_packet("0400002d020c726f6f6d2e6d657373616765", '{"name":"guest","content":"hi"}'))
        echoed = await raw.stream.receive_some(4096)
        assert echoed == data_packet("0400002a06096f6e4d657373616765", '{"name":"guest","content":"hi"}')


async def test_chat_through_the_client() -> None:
    server, room = examples.chat.build()
    async with open_test_server(server) as running:
        async with running.connect() as alice, running.connect() as bob:
            assert await alice.request("room.join") == {"code": 0, "result": "success"}
            assert await alice.receive_push("onMembers") == {"members": None}
            # users are shown by name (unlike nano's ids): the name given at join, else "user <id>"
            assert await bob.request("room.join", {"name": "bob"}) == {"code": 0, "result": "success"}
            assert await bob.receive_push("onMembers") == {"members": ["user 1"]}
            assert await alice.receive_push("onNewUser") == {"content": "New user: bob"}
            await bob.notify("room.message", {"name": "bob", "content": "hi ✓ 🎲"})
            for client in (alice, bob):
                assert await client.receive_push("onMessage") == {"name": "bob", "content": "hi ✓ 🎲"}
            await bob.notify("room.message", {"name": "mallory", "content": "it is me"})  # the joined name wins
            for client in (alice, bob):
                assert await client.receive_push("onMessage") == {"name": "bob", "content": "it is me"}
        # the close hook took both out of the room
        await wait_until(lambda: room.room.count() == 0)
        assert room.traffic.inbound > 0
        assert room.traffic.outbound > room.traffic.inbound


async def test_chat_message_before_join_is_an_error_response_and_the_connection_lives() -> None:
    server, _ = examples.chat.build()
    async with open_test_server(server) as running, running.connect() as client:
        answer = await client.request("room.message", {"name": "x", "content": "y"})
        assert answer == {"code": 500, "message": "not join room yet"}
        assert await client.request("room.join") == {"code": 0, "result": "success"}


async def test_chat_with_route_compression() -> None:
    server, _ = examples.chat.build(use_dict=True)
    async with open_test_server(server) as running:
        async with running.raw() as raw:
            response = await raw.handshake()
            assert response.dictionary == examples.chat.ROUTES
            await raw.send(bytes.fromhex("04000006010100017b7d"))  # Request id=1, code 1 (room.join), {}
            packet = await raw.receive_packet()
            assert packet.body[:3] == bytes.fromhex("070003")  # Push, compressed, code 3 (onMembers)
            assert raw.codec.decode(packet.body) == wire.Push("onMembers", b'{"members":null}')
        async with running.connect() as client:
            assert await client.request("room.join") == {"code": 0, "result": "success"}
            assert client.conn.codec.routes == examples.chat.ROUTES


async def test_chat_example_main_serves_on_the_port_it_reports() -> None:
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(lambda task_status: examples.chat.main(port=0, task_status=task_status))
        async with open_client("127.0.0.1", port) as client:
            assert await client.request("room.join") == {"code": 0, "result": "success"}
        nursery.cancel_scope.cancel()


async def test_a_message_with_only_its_content_is_served_as_nano_serves_it() -> None:
    # what the official pomelo client sends in the field: no "name" (nano decodes it as "")
    server, _ = examples.chat.build()
    async with open_test_server(server) as running, running.connect() as client:
        assert await client.request("room.join", {}, timeout=10) == {"code": 0, "result": "success"}
        await client.notify("room.message", {"content": "hello"})
        with trio.fail_after(10):
            assert await client.receive_push("onMessage") == {"name": "", "content": "hello"}
        await client.notify("room.message", {"name": 123, "content": "typed"})  # a wrong type: refused
        await client.notify("room.message", {"name": "ann", "content": "still here"})
        with trio.fail_after(10):
            assert await client.receive_push("onMessage") == {"name": "ann", "content": "still here"}
