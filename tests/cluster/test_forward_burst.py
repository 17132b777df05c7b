"""A client's burst of forwarded Requests in one write is answered as a local server answers
it (every one, in the order of their ids), and error answers made by the gate (503 over
``max_pending_forwards``, 404 for a route nobody hosts) never overtake the answers of the
session's Requests ahead of them."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
import trio

from trionano import Component, Components, Config, Session, TCPEndpoint, wire
from trionano.cluster import Bridge, ClusterConfig, Node, run
from trionano.testing import open_raw_connection

from ._harness import free_address


def request(mid: int, route: str, body: object) -> bytes:
    data = json.dumps(body).encode()
    return wire.encode_packet(wire.PacketType.DATA, wire.encode_message(wire.Request(mid, route, data)))


class Echo(Component):
    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"seq": msg["seq"]}

    async def slow(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep(0.5)  # the answers of the Requests behind it wait
        return {"seq": msg["seq"]}


def burst(
    payload: list[bytes], count: int, *, max_pending_forwards: int | None = None, stream_up: bool = False
) -> list[wire.Response]:
    """A master, a gate and a backend hosting Echo; one raw client sends ``payload`` in one
    write; returns the first ``count`` Responses in the order they arrived. The gate's first
    forward opens its stream to the backend; ``stream_up``: another client's Request has
    opened it before, so the client's messages go straight onto it."""
    master_address, gate_address, backend_address = free_address(), free_address(), free_address()
    extra = {} if max_pending_forwards is None else {"max_pending_forwards": max_pending_forwards}
    master = Node(Components(), ClusterConfig(service_address=master_address, is_master=True), Config(heartbeat=0))
    gate = Node(
        Components(),
        ClusterConfig(service_address=gate_address, master_address=master_address, rpc_timeout=20, **extra),  # type: ignore[arg-type]
        Config(heartbeat=0),
    )
    components = Components()
    components.register(Echo(), name="Echo")
    backend = Node(components, ClusterConfig(service_address=backend_address, master_address=master_address))
    answers: list[wire.Response] = []

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(master.run, bridge))
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            await nursery.start(functools.partial(backend.run, bridge))
            with trio.fail_after(30):
                while "Echo" not in gate.remote_services:  # noqa: ASYNC110 - the master's NewMember
                    await trio.sleep(0.02)
                if stream_up:
                    async with open_raw_connection("127.0.0.1", port) as other:
                        await other.handshake()
                        await other.send(request(1, "Echo.echo", {"seq": 0}))
                        await other.receive_response()
            async with open_raw_connection("127.0.0.1", port) as raw:
                await raw.handshake()
                await raw.send(b"".join(payload))
                with trio.fail_after(60):
                    answers.extend([await raw.receive_response() for _ in range(count)])
            backend.server.shutdown()
            gate.server.shutdown()
            master.server.shutdown()

    run(main)
    return answers


def test_a_burst_of_200_forwarded_requests_is_answered_in_order() -> None:
    answers = burst([request(mid, "Echo.echo", {"seq": mid}) for mid in range(1, 201)], 200)
    assert [answer.id for answer in answers] == list(range(1, 201))
    assert [json.loads(answer.body) for answer in answers] == [{"seq": mid} for mid in range(1, 201)]


@pytest.mark.parametrize("stream_up", [False, True], ids=["stream opened by the burst", "stream up"])
def test_error_answers_wait_behind_the_answers_ahead_of_them(stream_up: bool) -> None:
    """A slow Request, then more than the bound behind it and a route nobody hosts: the
    refusals (503) and the 404 come after every answer ahead of them, all in id order, whether
    the Requests ahead of them went straight onto a live stream (their refusals overtook them before
    the fix) or waited for a new one."""
    payload = [request(1, "Echo.slow", {"seq": 1})]
    payload += [request(mid, "Echo.echo", {"seq": mid}) for mid in range(2, 7)]
    payload += [request(7, "Nobody.here", {}), request(8, "Echo.echo", {"seq": 8})]
    answers = burst(payload, 8, max_pending_forwards=4, stream_up=stream_up)
    assert [answer.id for answer in answers] == list(range(1, 9))
    bodies = [json.loads(answer.body) for answer in answers]
    assert bodies[:4] == [{"seq": mid} for mid in range(1, 5)]  # the bound: 4 pending
    assert [body["code"] for body in bodies[4:]] == [503, 503, 404, 503]
