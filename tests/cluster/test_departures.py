"""Going away is normal: clients closing with requests in flight through a gate, and calls
arriving at a stopping node, end quietly (no traceback, at most one line), and a stopping node
answers UNAVAILABLE, never grpclib's "Application error" (UNKNOWN)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpclib.client
import grpclib.exceptions
import grpclib.server
import pytest
import trio
from grpclib.const import Status

from trionano import Component, Components, Config, Session
from trionano.cluster import Bridge, ClusterConfig, Node, run
from trionano.cluster._generated import clusterpb as pb
from trionano.cluster._peers import split_address

from ._harness import cluster, free_address

NOISE = ("Traceback", "Application error", "UNKNOWN", "BrokenResourceError")


async def test_clients_leaving_with_requests_in_flight_log_at_most_a_line(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.standard()
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})
            await ann.receive_push("onMembers")
        marks = {name: len(c.log(name)) for name in ("master", "chat", "gate")}
        for n in range(4):
            async with c.client() as user:  # type: ignore[attr-defined]
                await user.request("BindService.Login", {"nickname": f"u{n}"})
                async with trio.open_nursery() as nursery:
                    for _ in range(30):
                        nursery.start_soon(user.notify, "RoomService.SyncMessage", {"name": f"u{n}", "content": "x"})
                        nursery.start_soon(user.request, "RoomService.SyncMessage", {"name": f"u{n}", "content": "y"})
                    await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()
            # closed abruptly: requests unanswered, pushes and responses on their way
        await trio.sleep(1.5)
        for name, mark in marks.items():
            tail = c.log(name)[mark:]
            for noise in NOISE:
                assert noise not in tail, (name, tail)
            warnings = [
                line
                for line in tail.splitlines()
                if (" WARNING " in line or " ERROR " in line)
                and "without answering" not in line  # SyncMessage is a Notify handler: a Request to it is answered 500
            ]
            assert len(warnings) <= 4, (name, warnings)  # at most one line per client that left


def test_calls_arriving_at_a_stopping_node_are_answered_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    master = Node(Components(), ClusterConfig(service_address=free_address(), is_master=True))
    statuses: dict[str, Status] = {}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as finished:
            finished.cancel_scope.cancel()
        # Trio starts nothing new in a finished nursery ("Nursery is closed to new arrivals"),
        # as when a node's Trio side winds down while grpclib still takes calls (trionano.cluster.run
        # cancels the bridge's nursery then)
        stopping = Bridge(bridge.loop, trio.lowlevel.current_trio_token(), finished)
        host, port = split_address(master.address)
        server = grpclib.server.Server(master.services(stopping))
        await bridge.to_asyncio(lambda: server.start(host, port))
        channel = grpclib.client.Channel(host, port)
        member, registry = pb.MemberStub(channel), pb.MasterStub(channel)
        info = pb.MemberInfo(service_addr="127.0.0.1:1")
        calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
            "Unregister": lambda: registry.unregister(pb.UnregisterRequest(service_addr="127.0.0.1:1")),
            "Register": lambda: registry.register(pb.RegisterRequest(member_info=info)),
            "Heartbeat": lambda: registry.heartbeat(pb.HeartbeatRequest(member_info=info)),
            "HandleRequest": lambda: member.handle_request(pb.RequestMessage(gate_addr="g:1", route="a.b", id=1)),
            "HandleNotify": lambda: member.handle_notify(pb.NotifyMessage(gate_addr="g:1", route="a.b")),
            "HandlePush": lambda: member.handle_push(pb.PushMessage(session_id=1, route="r")),
            "HandleResponse": lambda: member.handle_response(pb.ResponseMessage(session_id=1, id=1)),
            "NewMember": lambda: member.new_member(pb.NewMemberRequest(member_info=info)),
            "DelMember": lambda: member.del_member(pb.DelMemberRequest(service_addr="127.0.0.1:1")),
            "SessionClosed": lambda: member.session_closed(pb.SessionClosedRequest(session_id=1)),
            "CloseSession": lambda: member.close_session(pb.CloseSessionRequest(session_id=1)),
        }
        for name, call in calls.items():
            try:
                await bridge.to_asyncio(call)
            except grpclib.exceptions.GRPCError as exc:
                statuses[name] = exc.status
        channel.close()
        server.close()
        await bridge.to_asyncio(server.wait_closed)

    run(main)
    assert statuses == dict.fromkeys(statuses, Status.UNAVAILABLE)
    assert len(statuses) == 11
    assert "Application error" not in caplog.text


class Room(Component):
    def shout(self, session: Session, msg: dict[str, Any]) -> dict[str, bool]:
        for n in range(5):
            session.push("onShout", {"n": n})
        return {"done": True}


@pytest.mark.parametrize("fast_path", [False, True], ids=["unary", "stream"])
def test_replies_for_a_client_that_left_are_dropped_quietly(caplog: pytest.LogCaptureFixture, fast_path: bool) -> None:
    """Over nano's unary path the gate answers NOT_FOUND and the backend drops the rest; over
    a stream the gate drops them as they come."""
    caplog.set_level(logging.DEBUG, logger="trionano")
    master_address, backend_address = free_address(), free_address()
    gate = Node(
        Components(),
        ClusterConfig(service_address=master_address, is_master=True, fast_path=fast_path),
        Config(heartbeat=0),
    )
    components = Components()
    components.register(Room(), name="Room")
    backend = Node(
        components,
        ClusterConfig(service_address=backend_address, master_address=master_address, fast_path=fast_path),
        Config(heartbeat=0),
    )

    def dropped() -> int:
        return gate.statistics().late_frames if fast_path else backend.statistics().dropped_outbound

    noisy: list[logging.LogRecord] = []

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(gate.run, bridge))
            await nursery.start(functools.partial(backend.run, bridge))
            # a request from a client of the gate that is gone by the time the answers travel
            channel = grpclib.client.Channel(*split_address(backend_address))
            request = pb.RequestMessage(
                gate_addr=master_address, session_id=12345, id=1, route="Room.shout", data=b"{}"
            )
            await bridge.to_asyncio(lambda: pb.MemberStub(channel).handle_request(request))
            channel.close()
            with trio.fail_after(30):
                while dropped() < 6:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            noisy.extend(r for r in caplog.records if r.levelno >= logging.WARNING)
            backend.server.shutdown()
            gate.server.shutdown()

    run(main)
    assert dropped() == 6  # five pushes and the response
    assert noisy == []
    if not fast_path:
        assert "the client has left" in caplog.text  # one debug line
        assert caplog.text.count("the client has left") == 1
    else:
        assert gate.statistics().frames_in >= 6
