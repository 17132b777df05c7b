"""A hung backend never gets healthy clients kicked: a gate's reader hands forwarded messages
to the session's forwarding queue (or the stream to the member) and goes on reading
(heartbeats, local routes); a forwarded Request is answered 503 at the RPC deadline; per-session
order is kept; the queue is bounded. The first test runs over the fast path (two trionano
nodes), the second over nano's unary calls (a member without the stream service)."""

from __future__ import annotations

import asyncio
import functools
import signal
from pathlib import Path
from typing import Any

import grpclib.client
import grpclib.server
import trio

from trionano import Component, Components, Config, Session, TCPEndpoint
from trionano.client import open_client
from trionano.cluster import Bridge, ClusterConfig, Node, run
from trionano.cluster._generated import clusterpb as pb
from trionano.cluster._peers import split_address

from ._harness import cluster, free_address

RPC_TIMEOUT = 5.0  # the example's (ClusterConfig's default)


async def test_a_frozen_backend_answers_503_at_the_deadline_and_the_client_stays(tmp_path: Path) -> None:
    async with cluster(tmp_path, heartbeat=2) as c:  # clients heartbeat every 2 s: kicked at 4 s of silence
        await c.standard()
        async with c.client() as ann:  # type: ignore[attr-defined]
            await ann.request("BindService.Login", {"nickname": "ann"})
            await ann.receive_push("onMembers")
            c.signal("chat", signal.SIGSTOP)
            try:
                started = trio.current_time()
                answered: list[str] = []
                async with trio.open_nursery() as nursery:

                    async def local_meanwhile() -> None:
                        await trio.sleep(1)
                        answer = await ann.request("BindService.BindChatServer", {})
                        assert answer == {"code": 500, "message": "not implement"}
                        answered.append("local")

                    nursery.start_soon(local_meanwhile)
                    answer = await ann.request("RoomService.SyncMessage", {"name": "ann", "content": "x"})
                    answered.append("forward")
                elapsed = trio.current_time() - started
                # the gate's reader is free: the local request was served before the forward's deadline
                assert answered == ["local", "forward"]
                assert answer["code"] == 503
                assert RPC_TIMEOUT - 0.5 < elapsed < RPC_TIMEOUT + 10  # at the deadline, not never
                # still connected: heartbeats were read all along
                assert await ann.request("BindService.BindChatServer", {}) == {"code": 500, "message": "not implement"}
            finally:
                c.signal("chat", signal.SIGCONT)
            assert "heartbeat timeout" not in c.log("gate")
            assert "stream to 127.0.0.1:" in c.log("gate")  # two trionano nodes: the fast path


class HungMember(pb.MemberBase):
    """A member (plain grpclib, as a Go node would be) that records what it is sent and
    never answers the request routed ``Slow.hang``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, int]] = []

    async def handle_request(self, request_message: pb.RequestMessage) -> pb.MemberHandleResponse:
        self.received.append((request_message.route, request_message.session_id))
        if request_message.route == "Slow.hang":
            await asyncio.Event().wait()  # until the gate gives up and cancels the call
        return pb.MemberHandleResponse()

    async def handle_notify(self, notify_message: pb.NotifyMessage) -> pb.MemberHandleResponse:
        self.received.append((notify_message.route, notify_message.session_id))
        return pb.MemberHandleResponse()


class Echo(Component):
    def ping(self, session: Session, msg: dict[str, Any]) -> dict[str, bool]:
        return {"pong": True}


def test_forwards_wait_in_order_in_a_bounded_queue_while_the_reader_serves_on() -> None:
    components = Components()
    components.register(Echo(), name="Echo")
    gate_address, member_address = free_address(), free_address()
    gate = Node(
        components,
        ClusterConfig(service_address=gate_address, is_master=True, rpc_timeout=6.0, max_pending_forwards=3),
        # a reader that stopped reading would be kicked after 2.5 s, well within the hung forward's
        # 6 s (at 0.4 s, a loaded machine's 1 s stall of this process could end in a kick)
        Config(heartbeat=1.0),
    )
    member = HungMember()
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        host, port = split_address(member_address)
        server = grpclib.server.Server([member])
        await bridge.to_asyncio(lambda: server.start(host, port))
        async with trio.open_nursery() as nursery:
            (client_port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            info = pb.MemberInfo(label="hung", service_addr=member_address, services=["Slow"])
            channel = grpclib.client.Channel(*split_address(gate_address))
            await bridge.to_asyncio(lambda: pb.MasterStub(channel).register(pb.RegisterRequest(member_info=info)))
            channel.close()
            async with open_client("127.0.0.1", client_port) as client:
                started = trio.current_time()
                async with trio.open_nursery() as requests:

                    async def hang() -> None:
                        seen["hang"] = await client.request("Slow.hang", {})
                        seen["hang_after"] = trio.current_time() - started

                    async def refused() -> None:
                        seen["refused"] = await client.request("Slow.refused", {})
                        seen["refused_after"] = trio.current_time() - started

                    requests.start_soon(hang)
                    with trio.fail_after(30):  # Slow.hang is in flight: out of the queue, at the member
                        while not member.received:  # noqa: ASYNC110 (the member is on asyncio)
                            await trio.sleep(0.01)
                    # each message's deadline runs from when the gate read it, waiting included:
                    # queued half an rpc_timeout after Slow.hang, the next ones have 3 s left to
                    # go out once it is answered 503 (at 0.2 s, a loaded machine missed that and
                    # Slow.n2 was dropped: "waited for the session's earlier messages past its deadline")
                    await trio.sleep(3.0)
                    for n in range(3):  # the queue's bound
                        await client.notify(f"Slow.n{n}", {})
                    requests.start_soon(refused)  # over the bound: answered 503 after Slow.hang's answer
                    seen["local"] = await client.request("Echo.ping", {})  # local routes are served
                    seen["local_after"] = trio.current_time() - started
                with trio.fail_after(30):  # the queue drained after Slow.hang's answer
                    while len(member.received) < 4:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                seen["connected"] = client.error is None
                seen["heartbeats"] = client.heartbeats_received
            gate.server.shutdown()
        server.close()

    run(main)
    assert seen["refused"]["code"] == 503
    assert seen["local"] == {"pong": True}
    assert seen["local_after"] < seen["hang_after"]  # served while the forward hung, not after
    assert seen["hang"]["code"] == 503  # at the deadline, not never
    assert 5.9 < seen["hang_after"] < 6.0 + 10  # at the gate's rpc_timeout
    assert seen["refused_after"] >= seen["hang_after"]  # never before the answer ahead of it
    assert seen["connected"]
    assert seen["heartbeats"] >= 2
    assert [route for route, _ in member.received] == ["Slow.hang", "Slow.n0", "Slow.n1", "Slow.n2"]
    assert len({sid for _, sid in member.received}) == 1  # one session's messages, in order
    statistics = gate.statistics()
    assert statistics.forwards_refused == 1
    assert statistics.forward_errors == 1
    assert statistics.forwarded == 3
