"""The server as a whole: pipelines, validators, TLS, graceful shutdown, isolation."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.runtime.apps import echo_components, tls_contexts, wait_until
from trionano import (
    Components,
    Config,
    HandshakeRejected,
    Kicked,
    Pipeline,
    PipelineMessage,
    Server,
    Session,
    serve_tcp,
    wire,
)
from trionano.client import open_client
from trionano.testing import open_test_server


async def test_pipeline_rewrites_in_and_out_and_drops_on_error() -> None:
    seen: list[tuple[str, bytes]] = []

    def inbound(session: Session, message: PipelineMessage) -> None:
        if message.route == "echo.json" and message.data == b'"secret"':
            raise ValueError("refused")
        seen.append((message.route, message.data))
        message.data = message.data.replace(b"rot", b"ROT")

    def outbound(session: Session, message: PipelineMessage) -> None:
        message.data = message.data.replace(b"ROT", b"out")

    pipeline = Pipeline()
    pipeline.inbound.push_back(inbound)
    pipeline.outbound.push_front(outbound)
    async with open_test_server(echo_components(), Config(pipeline=pipeline)) as running:
        async with running.connect() as client:
            assert await client.request("echo.json", {"k": "rot"}) == {"k": "out"}
            refused = await client.request("echo.json", "secret")
            assert refused == {"code": 400, "message": "refused"}
            await client.notify("echo.tell", {"k": "rot"})
            assert await client.receive_push("onTold") == {"k": "out"}
        assert running.server.statistics().dropped_pipeline == 1
        assert ("echo.json", b'{"k":"rot"}') in seen


async def test_handshake_validator_refuses_with_500_then_closes() -> None:
    def validator(session: Session, handshake: wire.Handshake) -> None:
        if not isinstance(handshake.user, dict) or handshake.user.get("token") != "t0ps3cret":
            raise HandshakeRejected("bad token")

    async with open_test_server(echo_components(), Config(handshake_validator=validator)) as running:
        with pytest.raises(HandshakeRejected, match="500") as refused:
            async with running.connect(user={"token": "wrong"}):
                pass
        assert refused.value.code == 500
        async with running.connect(user={"token": "t0ps3cret"}) as client:
            assert await client.request("echo.json", {}) == {}
        async with running.raw() as raw:
            await raw.send(wire.encode_packet(wire.PacketType.HANDSHAKE, b""))
            packets = await raw.receive_until_closed()
            assert [p.type for p in packets] == [wire.PacketType.HANDSHAKE]
            assert wire.HandshakeResponse.parse(packets[0].body).code == 500


async def test_async_validator_may_answer_501() -> None:
    async def validator(session: Session, handshake: wire.Handshake) -> None:
        await trio.lowlevel.checkpoint()
        if handshake.version != "2":
            raise HandshakeRejected("old client", code=wire.CODE_VERSION_MISMATCH)

    async with open_test_server(echo_components(), Config(handshake_validator=validator)) as running:
        with pytest.raises(HandshakeRejected) as refused:
            async with running.connect():
                pass
        assert refused.value.code == 501


async def test_pomelo_handshake_fields() -> None:
    routes = wire.RouteDict({"echo.json": 1, "onTold": 2})
    config = Config(routes=routes, pomelo_handshake=True)
    async with open_test_server(echo_components(), config) as running, running.raw() as raw:
        await raw.send(wire.encode_packet(wire.PacketType.HANDSHAKE, b"{}"))
        import json

        body = json.loads((await raw.receive_packet()).body)
        assert body["sys"]["useDict"] is True
        assert body["sys"]["routeToCode"] == {"echo.json": 1, "onTold": 2}
        assert body["sys"]["codeToRoute"] == {"1": "echo.json", "2": "onTold"}
        assert body["sys"]["dictVersion"] == wire.dict_version(routes)
    with pytest.raises(ValueError, match="whole"):
        Config(pomelo_handshake=True, heartbeat=1.5)


async def test_tls_round_trip() -> None:
    server_context, client_context = tls_contexts()
    server = Server(echo_components())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_tcp(
                server, 0, host="127.0.0.1", ssl_context=server_context, task_status=task_status
            )
        )
        async with open_client("127.0.0.1", port, ssl_context=client_context) as client:
            assert await client.request("echo.json", {"secure": True}) == {"secure": True}
        server.shutdown()


async def test_graceful_shutdown_kicks_every_session_with_reason_shutdown() -> None:
    closed: list[int] = []
    server = Server(echo_components())
    server.on_session_closed(lambda s: closed.append(s.id))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_tcp(server, 0, host="127.0.0.1", task_status=task_status))
        async with open_client("127.0.0.1", port) as a, open_client("127.0.0.1", port) as b:
            await a.request("echo.json", {})
            server.shutdown()
            for client in (a, b):
                with pytest.raises(Kicked, match="shutdown"):
                    await client.receive_push("never")
    # serve_tcp returned: every task finished; the close hooks ran before the scheduler stopped
    assert sorted(closed) == [1, 2]
    with pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_two_servers_in_one_run_share_nothing() -> None:
    from tests.runtime.apps import Echo

    echoes = [Echo(), Echo()]
    servers = []
    for n, echo in enumerate(echoes):
        components = Components()
        components.register(echo, name="echo")
        routes = wire.RouteDict({"echo.join": 1}) if n else wire.RouteDict()
        servers.append(Server(components, Config(routes=routes, heartbeat=10 + n)))
    closed: list[list[int]] = [[], []]
    for n, server in enumerate(servers):
        server.on_session_closed(lambda s, n=n: closed[n].append(s.id))  # type: ignore[misc]
    async with open_test_server(servers[0]) as one, open_test_server(servers[1]) as two:
        async with one.connect() as c1, two.connect() as c2:
            assert c1.handshake is not None
            assert c2.handshake is not None
            assert (c1.handshake.heartbeat, c2.handshake.heartbeat) == (10, 11)
            assert c1.handshake.dictionary is None
            assert c2.handshake.dictionary == wire.RouteDict({"echo.join": 1})
            await c1.request("echo.join", b"")
            await c2.request("echo.join", b"")
            assert list(one.server.sessions) == [1] == list(two.server.sessions)  # ids per server
            echoes[0].group.broadcast("onShout", {"to": "one"})
            assert await c1.receive_push("onShout") == {"to": "one"}
            await c2.request("echo.json", {})
            assert c2.pending_pushes("onShout") == 0
            assert one.server.statistics() is not two.server.statistics()
            assert one.server.statistics().sessions_opened == two.server.statistics().sessions_opened == 1
        await wait_until(lambda: closed == [[1], [1]])
    assert one.server.scheduler is not two.server.scheduler


async def test_a_server_runs_once_at_a_time() -> None:
    server = Server(echo_components())
    async with open_test_server(server):
        with pytest.raises(RuntimeError, match="already running"):
            await server.serve()


async def test_lanes_run_beside_the_main_lane() -> None:
    from trionano import Component

    order: list[str] = []
    release = trio.Event()

    class Slow(Component):
        async def wait(self, session: Session, msg: Any) -> dict[str, bool]:
            order.append("slow start")
            await release.wait()
            order.append("slow end")
            return {"ok": True}

    class Quick(Component):
        def go(self, session: Session, msg: Any) -> dict[str, bool]:
            order.append("quick")
            release.set()
            return {"ok": True}

    components = Components()
    components.register(Slow(), name="slow", lane="background")
    components.register(Quick(), name="quick")
    async with open_test_server(components) as running, running.connect() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.request, "slow.wait")
            await wait_until(lambda: order == ["slow start"])
            assert await client.request("quick.go") == {"ok": True}  # not stuck behind the lane
        assert order == ["slow start", "quick", "slow end"]


async def test_exceptions_from_the_block_come_out_unwrapped() -> None:
    with pytest.raises(ZeroDivisionError):
        async with open_test_server(echo_components()) as running, running.connect():
            1 / 0  # noqa: B018
