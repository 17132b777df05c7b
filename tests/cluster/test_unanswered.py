"""Every forwarded Request is answered once, by the gate's ``rpc_timeout``, whatever the member
does, on both paths (the fast path's stream and nano's unary HandleRequest/HandleResponse): a
handler that never answers (503 at the deadline, its slot freed: the client's later Requests,
local ones included, are served), an answer over the client's packet limit (413 at once), an
answer that comes after the deadline or twice (dropped, counted, never a second Response). Real
grpclib servers on loopback, in one process; a Go nano backend is played by a plain grpclib
``clusterpb.Member`` that calls the gate's HandleResponse as nano's acceptor does (nano.md §5.5)."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import grpclib.client
import grpclib.server
import pytest
import trio

from trionano import Component, Components, Config, Session, TCPEndpoint
from trionano.client import open_client
from trionano.cluster import Bridge, ClusterConfig, Node, run
from trionano.cluster._generated import clusterpb as pb
from trionano.cluster._peers import split_address

from ._harness import free_address

RPC_TIMEOUT = 2.0
PATHS = pytest.mark.parametrize("fast", [True, False], ids=["stream", "unary"])


class Back(Component):
    """A backend's handlers: ``hold`` never answers, ``late`` answers after the gate's
    deadline, ``big`` answers ``n`` bytes, ``echo`` at once."""

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.late_answered = trio.Event()

    def hold(self, session: Session, msg: dict[str, Any]) -> None:
        self.held.append(session.defer())  # never answered

    async def late(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep(RPC_TIMEOUT + 1)
        self.late_answered.set()
        return {"late": True}

    def big(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"data": "x" * int(msg["n"])}

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"echo": msg}


class Local(Component):
    def ping(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True}


def nodes(fast: bool) -> tuple[Node, Node, Back]:
    """A gate (the master too, hosting ``Local``) and a backend hosting ``Back``; ``fast``
    False: the backend speaks nano's unary methods only."""
    gate_address, backend_address = free_address(), free_address()
    local = Components()
    local.register(Local(), name="Local")
    gate = Node(
        local, ClusterConfig(service_address=gate_address, is_master=True, rpc_timeout=RPC_TIMEOUT), Config(heartbeat=0)
    )
    component = Back()
    back = Components()
    back.register(component, name="Back")
    backend = Node(
        back,
        ClusterConfig(
            service_address=backend_address, master_address=gate_address, rpc_timeout=RPC_TIMEOUT, fast_path=fast
        ),
        Config(heartbeat=0),
    )
    return gate, backend, component


@PATHS
def test_a_request_the_backend_never_answers_is_answered_503_at_the_deadline(fast: bool) -> None:
    """t16 (attack3): ``back.hold`` defers its answer and never gives it; ``back.big`` answers
    70,000 bytes (over the 64 KiB packet). Then 130 holds at once (over the client's
    ``max_pending_requests``, 128): each is answered 503, and the client's later Requests, a
    local route and a forwarded one, are served."""
    gate, backend, _ = nodes(fast)
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        with trio.fail_after(60):  # a wrong expectation fails, never hangs
            await scenario(bridge)

    async def scenario(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            await nursery.start(functools.partial(backend.run, bridge))
            async with open_client("127.0.0.1", port) as client:
                started = trio.current_time()
                seen["hold"] = await client.request("Back.hold", {})
                seen["hold_after"] = trio.current_time() - started
                seen["big"] = await client.request("Back.big", {"n": 70_000})
                seen["echo"] = await client.request("Back.echo", {"i": 1})
                holds: list[Any] = []

                async def hold() -> None:
                    holds.append(await client.request("Back.hold", {}))

                async with trio.open_nursery() as requests:
                    for _ in range(130):
                        requests.start_soon(hold)
                seen["holds"] = holds
                seen["ping"] = await client.request("Local.ping", {})
                seen["echo_after"] = await client.request("Back.echo", {"i": 2})
                seen["connected"] = client.error is None
            seen["gate"] = gate.statistics()
            backend.server.shutdown()
            gate.server.shutdown()

    run(main)
    assert seen["hold"] == {"code": 503, "message": f"Back unavailable: no answer within {RPC_TIMEOUT:g}s"}
    assert RPC_TIMEOUT - 0.5 < seen["hold_after"] < RPC_TIMEOUT + 10  # at the deadline, not never
    assert seen["big"]["code"] == 413  # the same answer on both paths, at once
    assert "does not fit in a packet" in seen["big"]["message"]
    assert seen["echo"] == {"echo": {"i": 1}}
    assert len(seen["holds"]) == 130
    assert all(answer["code"] == 503 for answer in seen["holds"])
    assert seen["ping"] == {"pong": True}
    assert seen["echo_after"] == {"echo": {"i": 2}}
    assert seen["connected"]
    assert seen["gate"].forward_errors == 131


@PATHS
def test_an_answer_after_the_deadline_is_dropped_and_counted(caplog: pytest.LogCaptureFixture, fast: bool) -> None:
    """``back.late`` answers a second after the gate answered 503: the client gets that one
    answer only; the gate counts the late one (``late_frames``); the backend's stand-in for
    the client lives on (the late HandleResponse is not refused as "session not found")."""
    caplog.set_level(logging.WARNING, logger="trionano.client")
    gate, backend, component = nodes(fast)
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        with trio.fail_after(60):  # a wrong expectation fails, never hangs
            await scenario(bridge)

    async def scenario(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            await nursery.start(functools.partial(backend.run, bridge))
            async with open_client("127.0.0.1", port) as client:
                seen["late"] = await client.request("Back.late", {})
                with trio.fail_after(10):
                    await component.late_answered.wait()
                    while gate.statistics().late_frames < 1:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                seen["echo"] = await client.request("Back.echo", {"i": 3})
                seen["remote_sessions"] = backend.remote_sessions
            seen["gate"] = gate.statistics()
            seen["backend"] = backend.statistics()
            backend.server.shutdown()
            gate.server.shutdown()

    run(main)
    assert seen["late"]["code"] == 503
    assert seen["echo"] == {"echo": {"i": 3}}
    assert seen["remote_sessions"] == 1
    assert seen["gate"].late_frames == 1
    assert seen["backend"].dropped_outbound == 0  # the gate took the late answer (and dropped it)
    assert "unknown request id" not in caplog.text  # never a second Response


class NanoBackend(pb.MemberBase):
    """A member as a Go nano backend is (plain grpclib, nano's unary methods only): each
    HandleRequest is answered with the gate's HandleResponse carrying the id it was given,
    as nano's acceptor does (``ResponseMID(LastMid(), v)``). Routes: ``Nano.echo`` once,
    ``Nano.twice`` twice, ``Nano.late`` once after the gate's deadline, ``Nano.stray`` with
    an id the gate never sent (then never the right one). Records each HandleResponse's
    outcome."""

    def __init__(self) -> None:
        self.gate: pb.MemberStub | None = None
        self.outcomes: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle_request(self, request_message: pb.RequestMessage) -> pb.MemberHandleResponse:
        route, sid, mid = request_message.route, request_message.session_id, request_message.id
        answers = {
            "Nano.echo": [(0.0, mid)],
            "Nano.twice": [(0.0, mid), (0.1, mid)],
            "Nano.late": [(RPC_TIMEOUT + 1, mid)],
            "Nano.stray": [(0.0, mid + 1_000_000)],
        }[route]
        for delay, answer_id in answers:
            task = asyncio.ensure_future(self._respond(delay, sid, answer_id, route))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return pb.MemberHandleResponse()

    async def _respond(self, delay: float, sid: int, mid: int, route: str) -> None:
        await asyncio.sleep(delay)
        assert self.gate is not None
        message = pb.ResponseMessage(session_id=sid, id=mid, data=b'{"route":"%s"}' % route.encode())
        try:
            await self.gate.handle_response(message, timeout=10)
            self.outcomes.append(f"{route} ok")
        except grpclib.exceptions.GRPCError as exc:
            self.outcomes.append(f"{route} {exc.status.name}")


def test_a_go_nano_backends_responses_are_taken_once(caplog: pytest.LogCaptureFixture) -> None:
    """Over nano's unary path to a Go-style backend: its HandleResponse answers the client
    (under the client's own request id); a second one for the same Request, one after the
    deadline, and one with an id the gate never sent are each taken (OK, so nano logs no
    error), dropped and counted; the client gets exactly one answer per Request."""
    caplog.set_level(logging.WARNING, logger="trionano.client")
    gate_address, member_address = free_address(), free_address()
    gate = Node(
        Components(),
        ClusterConfig(service_address=gate_address, is_master=True, rpc_timeout=RPC_TIMEOUT),
        Config(heartbeat=0),
    )
    member = NanoBackend()
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        with trio.fail_after(60):  # a wrong expectation fails, never hangs
            await scenario(bridge)

    async def scenario(bridge: Bridge) -> None:
        host, port = split_address(member_address)
        server = grpclib.server.Server([member])
        await bridge.to_asyncio(lambda: server.start(host, port))
        channel = grpclib.client.Channel(*split_address(gate_address))
        member.gate = pb.MemberStub(channel)
        async with trio.open_nursery() as nursery:
            (client_port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            info = pb.MemberInfo(label="nano", service_addr=member_address, services=["Nano"])
            await bridge.to_asyncio(lambda: pb.MasterStub(channel).register(pb.RegisterRequest(member_info=info)))
            async with open_client("127.0.0.1", client_port) as client:
                for route in ("Nano.echo", "Nano.twice", "Nano.late", "Nano.stray", "Nano.echo"):
                    seen[route] = await client.request(route, {})
                with trio.fail_after(10):
                    while len(member.outcomes) < 6:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                seen["connected"] = client.error is None
            seen["gate"] = gate.statistics()
            gate.server.shutdown()
        channel.close()
        server.close()

    run(main)
    assert seen["Nano.echo"] == {"route": "Nano.echo"}
    assert seen["Nano.twice"] == {"route": "Nano.twice"}
    assert seen["Nano.late"]["code"] == 503
    assert seen["Nano.stray"]["code"] == 503
    assert seen["connected"]
    assert sorted(member.outcomes) == sorted(
        ["Nano.echo ok", "Nano.twice ok", "Nano.twice ok", "Nano.late ok", "Nano.stray ok", "Nano.echo ok"]
    )
    assert seen["gate"].late_frames == 3  # the second of twice, the late one, the stray one
    assert "unknown request id" not in caplog.text  # never a second Response
