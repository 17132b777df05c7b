"""Components: discovery from annotations, every decoding, return values and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.runtime.apps import Echo, Ping, Pong, echo_components
from trionano import Component, ComponentError, Components, Config, ProtobufSerializer, Server, Session, wire
from trionano.testing import open_test_server


def test_handlers_are_discovered_from_annotations() -> None:
    routes = sorted(h.route for h in echo_components().handlers())
    assert "echo.json" in routes
    assert "echo.ping" in routes
    assert "echo.slow" in routes  # async handlers too
    assert "echo.helper" not in routes  # (self, x: int) is not a handler
    assert "echo.init" not in routes  # lifecycle hooks are not handlers
    assert "echo.server" not in routes


def test_name_and_name_func() -> None:
    class RoomManager(Component):
        def Join(self, session: Session, msg: bytes) -> None: ...  # nano's Go-style name

    components = Components()
    components.register(RoomManager(), name="room", name_func=str.lower)
    assert [h.route for h in components.handlers()] == ["room.join"]
    default = Components()
    default.register(RoomManager())
    assert [h.route for h in default.handlers()] == ["RoomManager.Join"]


def test_startup_errors_read_as_nanos() -> None:
    components = echo_components()
    with pytest.raises(ComponentError, match="handler: service already defined: echo"):
        components.register(Echo(), name="echo")

    class Empty(Component):
        def helper(self) -> None: ...

    with pytest.raises(ComponentError, match=r"type Empty has no exported methods of suitable type"):
        Components().register(Empty())


def test_a_handler_without_annotations_is_refused_at_registration() -> None:
    class Room(Component):
        def join(self, session, msg):  # type: ignore[no-untyped-def]  # the trap this test is about
            return {"ok": True}

    with pytest.raises(ComponentError, match=r"Room\.join\(session, msg\) has no annotations.*trionano\.Session"):
        Components().register(Room())


def test_undecodable_annotation_is_a_startup_error() -> None:
    class Odd(Component):
        def take(self, session: Session, msg: int) -> None: ...

    components = Components()
    components.register(Odd())
    with pytest.raises(ComponentError, match=r"Odd\.take"):
        Server(components)
    with pytest.raises(ComponentError, match="protobuf: convert on wrong type value"):
        Server(echo_components(), Config(serializer=ProtobufSerializer()))


async def test_a_component_belongs_to_one_running_server() -> None:
    components = echo_components()
    async with open_test_server(components):
        with pytest.raises(ComponentError, match="another server, which is running"):
            Server(components)
    # stopped: the components may serve again (a test suite's module-level components)
    async with open_test_server(components) as running, running.connect() as client:
        assert await client.request("echo.json", {"again": True}, timeout=10) == {"again": True}


async def test_every_decoding_round_trips() -> None:
    async with open_test_server(echo_components()) as running, running.connect() as client:
        assert await client.request("echo.json", {"a": [1, "b"]}) == {"a": [1, "b"]}
        assert await client.request("echo.raw", b"abc", raw=True) == b"cba"
        assert await client.request("echo.point", {"x": 1, "y": 2}) == {"x": 2, "y": 1}
        assert await client.request("echo.note", {"text": "hi"}) == {"text": "HI"}
        pong = await client.request("echo.ping", Ping(content="ping"), raw=True)
        assert Pong().parse(pong).content == "ping pong"


async def test_protobuf_serializer_serves_betterproto_handlers() -> None:
    components = Components()
    components.register(ProtoOnly(), name="pb")
    config = Config(serializer=ProtobufSerializer())
    async with open_test_server(components, config) as running, running.connect() as client:
        answer = await client.request("pb.ping", Ping(content="x"), raw=True)
        assert Pong().parse(answer).content == "x pong"


class ProtoOnly(Component):
    def ping(self, session: Session, msg: Ping) -> Pong:
        return Pong(content=msg.content + " pong")


async def test_errors_become_one_documented_response_shape() -> None:
    async with open_test_server(echo_components()) as running, running.connect() as client:
        # the exception's text stays in the server's log unless the server opts in
        assert await client.request("echo.fail") == {"code": 500, "message": "internal error"}
        assert await client.request("echo.refuse") == {"code": 403, "message": "not allowed"}
        assert await client.request("echo.json", {"alive": True}) == {"alive": True}
        assert running.server.statistics().handler_errors == 2
    async with open_test_server(echo_components(), Config(expose_errors=True)) as running, running.connect() as client:
        assert await client.request("echo.fail") == {"code": 500, "message": "RuntimeError: boom"}


async def test_async_handlers_and_late_responses_answer_the_right_request() -> None:
    async with open_test_server(echo_components()) as running, running.connect() as client:
        assert await client.request("echo.slow", {"seconds": 0.01}) == {"slept": 0.01}
        # answered from a timer, by the captured mid, after other requests were handled
        assert await client.request("echo.later", {"after": 0.01}) == {"late": True}


async def test_a_handler_that_responded_is_not_answered_twice() -> None:
    async with open_test_server(echo_components()) as running, running.raw() as raw:
        await raw.handshake()
        await raw.send(raw.codec.request_packet(7, "echo.respond_twice", b"{}"))
        await raw.send(raw.codec.request_packet(8, "echo.json", b"{}"))
        first = await raw.receive_message()
        second = await raw.receive_message()
        assert (first.id, json.loads(first.body)) == (7, {"first": True})  # type: ignore[union-attr]
        assert second.id == 8  # type: ignore[union-attr]


async def test_lifecycle_hooks_run_in_order_and_reverse() -> None:
    calls: list[str] = []

    class Tracked(Component):
        def __init__(self, name: str) -> None:
            self.name = name

        async def init(self) -> None:
            calls.append(f"init {self.name}")

        def after_init(self) -> None:
            calls.append(f"after_init {self.name}")

        def before_shutdown(self) -> None:
            calls.append(f"before_shutdown {self.name}")

        async def shutdown(self) -> None:
            calls.append(f"shutdown {self.name}")

        def noop(self, session: Session, msg: Any) -> None: ...

    components = Components()
    components.register(Tracked("a"), name="a")
    components.register(Tracked("b"), name="b")
    async with open_test_server(components):
        assert calls == ["init a", "init b", "after_init a", "after_init b"]
    assert calls[4:] == ["before_shutdown b", "before_shutdown a", "shutdown b", "shutdown a"]


async def test_a_request_id_may_be_reused_once_answered() -> None:
    async with open_test_server(echo_components()) as running, running.raw() as raw:
        await raw.handshake()
        for n in range(3):  # nano's Go client and many bots reuse ids; each must be answered
            await raw.send(raw.codec.request_packet(1, "echo.json", b'{"n":%d}' % n))
            assert await raw.receive_message() == wire.Response(1, b'{"n":%d}' % n)
