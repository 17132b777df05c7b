"""Push API load and the node's other clients: a newcomer posted 10,000-uid pushes (the
documented maximum) over HTTP while a viewer's requests went through a gate to the logic
node; the requests went unanswered for over 5 s at a time (``DeadlineExceeded``) and the
logic node's loop stalled long enough for it to evict both gates. Each push was encoded by
betterproto once per gate (25 to 50 ms) and parsed by each gate (100 to 160 ms), batches of
them in one step each, and the answers to the gate's requests waited behind them on the
stream. Also: the push API's bound on the requests waiting for their turn (503), and what a
gate does with a backlog of received pushes (it delivers them in order; while it is full, a
unary call waits for room and what comes on the stream is shed: ``test_push_shed``)."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing

from trionano import Components, Config, TCPEndpoint
from trionano.client import open_client
from trionano.client import open_websocket_client as open_viewer
from trionano.cluster import Audience, Bridge, ClusterConfig, Node, run
from trionano.cluster import _pushwire as pushwire
from trionano.cluster.push_api import MAX_UIDS, PushAPI

from .test_call import address
from .test_liveroom import AUTH, join, liveroom
from .test_push import Room
from .test_push_api import Recording
from .test_push_shed import Desk

POSTS = 160
AT_ONCE = 16
BYSTANDER_UID = 4321  # among the uids of every post: each push reaches the bystander too


async def test_max_size_uid_posts_never_starve_a_gates_requests(tmp_path: Path) -> None:
    """The attack, smaller: 160 posts of 10,000 uids, 16 at a time, while a viewer on gate 1
    asks the logic node for ``live.stats`` over and over. Every request is answered, well
    within the gate's deadline (5 s; the bound here is 3 s, on a loaded machine: before the
    fix they took 2.6 s and more, and missed it every 5 s), every post is answered 202, and
    the viewer gets every push."""
    uids = list(range(1, MAX_UIDS + 1))
    latencies: list[float] = []
    answers: list[Any] = []
    statuses: dict[int, int] = {}
    async with (
        liveroom(tmp_path) as (_, push_url, (gate1, _gate2)),
        httpx.AsyncClient(headers=AUTH, timeout=30, limits=httpx.Limits(max_connections=AT_ONCE)) as http,
        open_viewer(gate1) as viewer,
    ):
        await join(viewer, "bystander", uid=BYSTANDER_UID)
        posted = trio.Event()

        async def bystander() -> None:
            while not posted.is_set():
                start = time.monotonic()
                answers.append(await viewer.request("live.stats", {}, timeout=20))
                latencies.append(time.monotonic() - start)
                await trio.sleep(0.05)

        async def post(number: int, turn: trio.Semaphore) -> None:
            async with turn:
                body = {"route": "onNotice", "message": {"n": number}, "uids": uids}
                response = await http.post(push_url, json=body)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bystander)
            await trio.sleep(0.5)  # a few answers before the posts
            turn = trio.Semaphore(AT_ONCE)
            async with trio.open_nursery() as posting:
                for number in range(POSTS):
                    posting.start_soon(post, number, turn)
            await trio.sleep(0.5)
            posted.set()
        with trio.fail_after(30):
            received = sorted([(await viewer.receive_push("onNotice"))["n"] for _ in range(POSTS)])
        stats = await viewer.request("live.stats", {})
    assert statuses == {202: POSTS}
    assert received == list(range(POSTS))
    failed = [answer for answer in answers if not (isinstance(answer, dict) and "viewers" in answer)]
    assert not failed, failed[:3]  # before: {'code': 503, 'message': 'live unavailable: no answer within 5s'}
    assert len(latencies) >= 10
    assert max(latencies) < 3.0, sorted(latencies)[-10:]
    assert (stats["push"]["dropped"], stats["push"]["failed"]) == (0, 0)


async def test_pushes_over_max_waiting_are_answered_503() -> None:
    """One request is parsed and pushed at a time; those whose body has come wait for their
    turn, at most ``max_waiting`` of them: the next are answered 503 with Retry-After, at once,
    and nothing of them is pushed."""
    pusher = Recording()
    app = PushAPI(pusher, max_waiting=3, retry_after=4)
    scope = {"type": "http", "method": "POST", "path": "/v1/push", "headers": [(b"content-type", b"application/json")]}
    answers: dict[int, tuple[int, dict[bytes, bytes]]] = {}

    async def one(number: int) -> None:
        body = json.dumps({"route": "onX", "message": number, "uids": [number + 1]}).encode()
        incoming = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                answers[number] = (message["status"], dict(message["headers"]))

        await app(scope, receive, send)

    async with trio.open_nursery() as nursery:
        for number in range(6):  # all in one scheduler batch: 1 takes the turn, 3 wait, 2 are refused
            nursery.start_soon(one, number)
    statuses = [answers[number][0] for number in range(6)]
    assert sorted(statuses) == [202, 202, 202, 202, 503, 503]
    refused = [number for number in range(6) if answers[number][0] == 503]
    assert all(answers[number][1][b"retry-after"] == b"4" for number in refused)
    assert sorted(cast(int, value) for _, value, _ in pusher.pushes) == sorted(set(range(6)) - set(refused))
    assert (app.accepted, app.unreached) == (4, 2)
    # once the turn is free, the next request is taken again
    await one(9)
    assert answers[9][0] == 202


@pytest.mark.parametrize("fast_path", [True, False], ids=["stream", "unary"])
def test_a_gate_delivers_its_backlog_in_order_waits_on_unary_calls_and_sheds_on_its_stream(fast_path: bool) -> None:
    """A gate takes received pushes into a backlog delivered by a task of its own, in order;
    over its bound (``max_pending_pushes`` here 4) a unary Deliver waits for room rather than
    dropping: a Deliver of 30 items by hand, then the logic node's first push (over the unary
    call, before the gate has answered that it is one), all arrive in order. Then 59 pushes
    at once: over unary calls (``fast_path=False``) they arrive, in order; on the stream (one
    batch of 59) the gate keeps reading its stream rather than wait for room: it takes 4 and
    sheds 55, counted as ``shed``. Either way the gate's client is answered by the logic node
    afterwards."""
    master_address = address()
    desk = Components()
    desk.register(Desk(), name="desk")
    logic = Node(desk, ClusterConfig(service_address=master_address, is_master=True), Config(heartbeat=0))
    components = Components()
    room = Room()
    components.register(room, name="room")
    gate = Node(
        components,
        ClusterConfig(
            service_address=address(),
            master_address=master_address,
            node_id=2,
            heartbeat=5,
            max_pending_pushes=4,
            fast_path=fast_path,
        ),
        Config(heartbeat=0),
    )
    room.node = gate
    seen: dict[str, Any] = {}

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(logic.run, bridge))
            (port,) = await nursery.start(functools.partial(gate.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            async with open_client("127.0.0.1", port) as client:
                await client.request("room.join", {"uid": 7})
                with trio.fail_after(30):
                    # by hand, over the unary call: 30 items, more than the backlog holds
                    items = [
                        Audience.of_uids([7, 8, 9]).encode("onN", json.dumps(number).encode()) for number in range(30)
                    ]
                    batch = pushwire.EncodedPushBatch(pushwire.encode_batch("test", items))
                    peer = gate.address
                    result = await logic._peers[peer].deliver(batch)  # the caller under test
                    seen["result"] = (result.gate, result.delivered)
                    got = [await client.receive_push("onN") for _ in range(30)]
                    # from the logic node: the first over the unary call, the rest on the stream
                    assert logic.push("onN", 30, Audience.of_uids([7])) == 1
                    got.append(await client.receive_push("onN"))
                    for number in range(31, 90):
                        assert logic.push("onN", number, Audience.of_uids([7])) == 1
                    stats = gate.push_statistics()
                    while stats.delivered + stats.shed < 90:
                        await trio.sleep(0.01)
                        stats = gate.push_statistics()
                    got += [await client.receive_push("onN") for _ in range(stats.delivered - 31)]
                    seen["got"] = got
                    seen["answer"] = await client.request("desk.ask", {})
                seen["stats"] = (logic.push_statistics(), gate.push_statistics())
                seen["more"] = client.pending_pushes("onN")
            for node in (gate, logic):
                node.server.shutdown()

    run(main)
    assert seen["result"] == (True, 30)
    logic_stats, gate_stats = seen["stats"]
    assert (logic_stats.dropped, logic_stats.failed) == (0, 0)
    assert (gate_stats.received, gate_stats.refused) == (90, 0)
    if fast_path:
        assert (gate_stats.delivered, gate_stats.shed) == (35, 55)
        assert seen["got"] == list(range(35))
    else:
        assert (gate_stats.delivered, gate_stats.shed) == (90, 0)
        assert seen["got"] == list(range(90))
    assert seen["more"] == 0
    assert seen["answer"] == {"ok": True}
