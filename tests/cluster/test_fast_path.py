"""The fast path between trionano nodes (one stream per peer, batches of frames), and the
fallback to nano's unary clusterpb for a peer without it, on real grpclib in one process."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio

from trionano import Component, Components, Config, Session, TCPEndpoint
from trionano.client import open_client
from trionano.cluster import Bridge, ClusterConfig, Node, run

from ._harness import free_address


class Echo(Component):
    """Records what it is sent, in order; ``ping`` pushes before it answers."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def note(self, session: Session, msg: dict[str, Any]) -> None:
        self.seen.append(msg["n"])

    def ping(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(msg["n"])
        session.push("onPing", {"n": msg["n"]})
        return {"n": msg["n"], "pong": True}


def pair(gate_fast: bool = True, backend_fast: bool = True) -> tuple[Node, Node, Echo]:
    """A gate (the master too) with a client endpoint, and a backend hosting Echo."""
    gate_address, backend_address = free_address(), free_address()
    gate = Node(
        Components(),
        ClusterConfig(service_address=gate_address, is_master=True, fast_path=gate_fast),
        Config(heartbeat=0),
    )
    echo = Echo()
    components = Components()
    components.register(echo, name="Echo")
    backend = Node(
        components,
        ClusterConfig(service_address=backend_address, master_address=gate_address, fast_path=backend_fast),
        Config(heartbeat=0),
    )
    return gate, backend, echo


def unary_calls(node: Node, method: str) -> int:
    return sum(stats.calls for (name, _), stats in node.rpc_stats.snapshot().items() if name == method)


async def until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


def drive(gate: Node, backend: Node, seen: dict[str, Any]) -> None:
    """Start both nodes; one client sends ten notifies and a request without waiting, then two
    more requests; then leaves. Records answers and pushes in ``seen``."""

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            await nursery.start(functools.partial(backend.run, bridge))
            async with open_client("127.0.0.1", port) as client:
                for n in range(10):
                    await client.notify("Echo.note", {"n": n})
                seen["answers"] = [await client.request("Echo.ping", {"n": n}) for n in (10, 11, 12)]
                seen["pushes"] = [await client.receive_push("onPing") for _ in range(3)]
                seen["missing"] = await client.request("Echo.nothing", {})
                await until(lambda: backend.remote_sessions == 1)
            await until(lambda: backend.remote_sessions == 0)  # the gate announced the client's end
            seen["gate"] = gate.statistics()
            seen["backend"] = backend.statistics()
            backend.server.shutdown()
            gate.server.shutdown()

    run(main)


def test_two_trionano_nodes_talk_over_one_stream() -> None:
    gate, backend, echo = pair()
    seen: dict[str, Any] = {}
    drive(gate, backend, seen)
    assert echo.seen == list(range(13))  # one session's messages, in order
    assert seen["answers"] == [{"n": n, "pong": True} for n in (10, 11, 12)]
    assert seen["pushes"] == [{"n": n} for n in (10, 11, 12)]
    assert seen["missing"]["code"] == 404  # the member has no such route: an Error frame, answered 404
    # everything rode the stream: 10 notifies, 4 requests, the session's end; back 3 responses,
    # 3 pushes, the Error; nano's unary methods were not used for any of it
    assert seen["gate"].frames_out == 15
    assert seen["gate"].frames_in == 7
    assert seen["backend"].frames_in == 15
    assert seen["gate"].batches_out <= 15
    assert seen["gate"].forwarded == 14
    for method in ("HandleRequest", "HandleNotify", "SessionClosed"):
        assert unary_calls(gate, method) == 0
    for method in ("HandleResponse", "HandlePush"):
        assert unary_calls(backend, method) == 0


@pytest.mark.parametrize(("gate_fast", "backend_fast"), [(True, False), (False, True)], ids=["backend", "gate"])
def test_a_node_without_the_stream_is_spoken_to_in_nanos_unary_calls(
    caplog: pytest.LogCaptureFixture, gate_fast: bool, backend_fast: bool
) -> None:
    """A peer that answers UNIMPLEMENTED (a Go nano node; here a trionano node with
    ``fast_path=False``) gets nano's unary calls; the node asks it once."""
    caplog.set_level(logging.INFO, logger="trionano.cluster")
    gate, backend, echo = pair(gate_fast, backend_fast)
    seen: dict[str, Any] = {}
    drive(gate, backend, seen)
    assert echo.seen == list(range(13))
    assert seen["answers"] == [{"n": n, "pong": True} for n in (10, 11, 12)]
    assert seen["pushes"] == [{"n": n} for n in (10, 11, 12)]
    assert seen["missing"]["code"] == 404
    for statistics in (seen["gate"], seen["backend"]):
        assert statistics.frames_out == statistics.frames_in == 0
    assert unary_calls(gate, "HandleNotify") == 10
    assert unary_calls(gate, "HandleRequest") == 4
    assert unary_calls(gate, "SessionClosed") == 1
    assert unary_calls(backend, "HandleResponse") == 3
    assert unary_calls(backend, "HandlePush") == 3
    assert caplog.text.count("has no stream service") == 1  # remembered for that peer


@pytest.mark.parametrize("backend_fast", [True, False], ids=["stream", "unary"])
def test_a_failed_forward_logs_the_clients_route_escaped(caplog: pytest.LogCaptureFixture, backend_fast: bool) -> None:
    """A route the backend does not host is answered 404 and logged by the gate with the
    client's text escaped: a newline or a bidi control in a route cannot forge a log line."""
    caplog.set_level(logging.WARNING, logger="trionano.cluster")
    gate, backend, _ = pair(backend_fast=backend_fast)
    seen: dict[str, Any] = {}
    route = "Echo.\u202eevil\nFAKE) error: forged"

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            await nursery.start(functools.partial(backend.run, bridge))
            async with open_client("127.0.0.1", port) as client:
                seen["answer"] = await client.request(route, {})
            backend.server.shutdown()
            gate.server.shutdown()

    run(main)
    assert seen["answer"]["code"] == 404
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Process remote message")]
    assert len(failed) == 1, caplog.text
    assert "\n" not in failed[0]
    assert "\u202e" not in failed[0]
    assert repr(route) in failed[0]


class Room(Component):
    """``room.join``: joins the cluster-wide group "room" on this gate."""

    def __init__(self) -> None:
        self.node: Node | None = None

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.node is not None
        self.node.group("room").add(session)
        return {}


def test_cluster_pushes_ride_the_stream_once_the_gate_has_answered() -> None:
    """The first batch of pushes to a gate is nano-style unary (``Push/Deliver``: it answers
    whether it is a gate); then they go as frames on the stream, in order."""
    logic_address, gate_address = free_address(), free_address()
    logic = Node(Components(), ClusterConfig(service_address=logic_address, is_master=True), Config(heartbeat=0))
    room = Room()
    components = Components()
    components.register(room, name="room")
    gate = Node(components, ClusterConfig(service_address=gate_address, master_address=logic_address), Config())
    room.node = gate
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(logic.run, bridge))
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            async with open_client("127.0.0.1", port) as client:
                await client.request("room.join", {})
                with trio.fail_after(10):
                    seen["pushes"] = []
                    for n in range(4):
                        logic.group("room").broadcast("onNews", {"n": n})
                        seen["pushes"].append(await client.receive_push("onNews"))
            seen["gate"] = gate.statistics()
            gate.server.shutdown()
            logic.server.shutdown()

    run(main)
    assert seen["pushes"] == [{"n": n} for n in range(4)]
    assert unary_calls(logic, "Deliver") == 1
    assert seen["gate"].frames_in == 3


def test_the_ends_of_sessions_owed_to_a_member_they_never_reached_go_on_one_stream() -> None:
    """A session that reached a member announces its end to every member hosting a service (a
    stand-in may have been made there too, by a backend's ``session.rpc``). With no stream to
    that member yet, each end was a unary SessionClosed: a live-room gate stopping with 2,000
    viewers called the other gate 2,000 times, a fifth of its CPU in the stop, most of it past
    ``shutdown_timeout``. The ends now wait for one stream, opened for them, and go on it as
    frames."""
    master_address = free_address()
    master = Node(Components(), ClusterConfig(service_address=master_address, is_master=True), Config(heartbeat=0))
    gate = Node(Components(), ClusterConfig(service_address=free_address(), master_address=master_address), Config())
    backends = []
    for name in ("Echo", "Other"):  # members, as the gate: no stream between them but what they open
        components = Components()
        components.register(Echo(), name=name)
        config = ClusterConfig(service_address=free_address(), master_address=master_address)
        backends.append(Node(components, config, Config()))
    backend, other = backends
    clients = 50
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(master.run, bridge))
            for node in backends:
                await nursery.start(functools.partial(node.run, bridge))
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            async with contextlib.AsyncExitStack() as stack:
                for n in range(clients):
                    client = await stack.enter_async_context(open_client("127.0.0.1", port))
                    await client.request("Echo.ping", {"n": n})
            await until(
                lambda: (
                    backend.remote_sessions == 0
                    and other.statistics().frames_in + unary_calls(gate, "SessionClosed") >= clients
                )
            )
            seen["other"] = other.statistics()
            for node in (*backends, gate, master):
                node.server.shutdown()

    run(main)
    assert unary_calls(gate, "SessionClosed") == 0
    assert seen["other"].frames_in == clients
