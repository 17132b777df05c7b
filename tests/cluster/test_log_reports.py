"""Every rate-limited log a cluster node or the push API owns reports what it suppressed on its
own: within about a second of its window's end, and at shutdown, as a server's logs do
(attack5's log_summary.sh: after a burst of 10,000-uid pushes, 137 answered 503 and 10 logged,
the other 127 were never reported, not 40 s later and not at shutdown).

Each owner's log is flooded past its 10 records per window through what reaches it: a client's
Requests for a service no member hosts (the node's log), a push batch of items with no route
(the push role's), a bug behind a gRPC method of each service (their logs: answered INTERNAL),
asyncio's "socket.send() raised exception." (the run's log of ordinary events), and pushes the
HTTP API cannot deliver (the API's log: answered 503)."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Final

import attrs
import grpclib.client
import grpclib.exceptions
import httpx
import pytest
import trio

from trionano import Components, Config, TCPEndpoint
from trionano.client import open_client
from trionano.cluster import Bridge, ClusterConfig, Node, run
from trionano.cluster import _pushwire as pushwire
from trionano.cluster._generated import clusterpb as pb
from trionano.cluster._generated.trionano import push as pushpb
from trionano.cluster._push import PushHub
from trionano.cluster._registry import Registry
from trionano.cluster.push_api import serve_push_api

from .test_call import address
from .test_push_api import Recording

PER_WINDOW: Final = 10  # RateLimitedLog's default


@attrs.frozen
class Flood:
    """``count`` records of ``kind`` on ``logger``: ``count - PER_WINDOW`` suppressed, a count
    of its own so that the summary names its owner (the services share a logger and a kind)."""

    logger: str
    kind: str
    count: int

    @property
    def summary(self) -> re.Pattern[str]:
        return re.compile(
            rf"{self.count - PER_WINDOW} similar messages suppressed in the last [0-9.]+ s \({re.escape(self.kind)}\)"
        )


FLOODS: Final = {
    "node": Flood("trionano.cluster", "no member", 23),
    "push role": Flood("trionano.cluster.push", "push refused", 24),
    "member service": Flood("trionano.cluster", "rpc failed", 25),
    "master service": Flood("trionano.cluster", "rpc failed", 26),
    "push service": Flood("trionano.cluster", "rpc failed", 27),
    "ordinary events": Flood("trionano.cluster", "socket.send() raised exception.", 28),
    "push api": Flood("trionano.cluster.push_api", "push unreached", 29),
}


@pytest.fixture
def bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug behind NewMember, Register, and Deliver of a batch from origin "bug"."""

    async def bug(self: object, request: object) -> Any:
        raise RuntimeError("a bug")

    deliver = PushHub.handle_deliver

    async def buggy_deliver(self: PushHub, batch: pushwire.EncodedPushBatch) -> pushpb.PushResult:
        if pushwire.batch_items(batch.data)[0] == "bug":
            raise RuntimeError("a bug")
        return await deliver(self, batch)

    monkeypatch.setattr(Node, "new_member", bug)
    monkeypatch.setattr(Registry, "register", bug)
    monkeypatch.setattr(PushHub, "handle_deliver", buggy_deliver)


class Cluster:
    """A lone master node serving clients, and the HTTP push API (for a pusher that reaches no
    gate), in one run; each flood drives its owner's log."""

    def __init__(self, bridge: Bridge, stack: AsyncExitStack, node: Node, client_port: int, api_port: int) -> None:
        self.bridge = bridge
        self.stack = stack
        self.node = node
        self.client_port = client_port
        self.api_port = api_port

    async def grpc(self, count: int, call: Callable[[grpclib.client.Channel], Awaitable[object]]) -> None:
        host, port = self.node.address.split(":")

        async def calls() -> None:
            channel = grpclib.client.Channel(host, int(port))
            try:
                for _ in range(count):
                    with pytest.raises(grpclib.exceptions.GRPCError):
                        await call(channel)
            finally:
                channel.close()

        await self.bridge.to_asyncio(calls)

    async def flood(self, owner: str) -> None:
        count = FLOODS[owner].count
        if owner == "node":
            client = await self.stack.enter_async_context(open_client("127.0.0.1", self.client_port))
            for _ in range(count):
                answer = await client.request("nobody.here", {}, check=False)
                assert answer["code"] == 404
        elif owner == "push role":
            bad = [pushpb.PushItem(route="", data=b"{}", everyone=True)] * count
            host, port = self.node.address.split(":")

            async def deliver() -> pushpb.PushResult:
                channel = grpclib.client.Channel(host, int(port))
                try:
                    return await pushpb.PushStub(channel).deliver(pushpb.PushBatch(origin="t", items=bad), timeout=10)
                finally:
                    channel.close()

            assert (await self.bridge.to_asyncio(deliver)).delivered == 0
        elif owner == "member service":
            await self.grpc(count, lambda channel: pb.MemberStub(channel).new_member(pb.NewMemberRequest(), timeout=10))
        elif owner == "master service":
            info = pb.MemberInfo(label="x", service_addr="127.0.0.1:1", services=[])
            await self.grpc(
                count, lambda channel: pb.MasterStub(channel).register(pb.RegisterRequest(member_info=info), timeout=10)
            )
        elif owner == "push service":
            batch = pushpb.PushBatch(origin="bug", items=[])
            await self.grpc(count, lambda channel: pushpb.PushStub(channel).deliver(batch, timeout=10))
        elif owner == "ordinary events":
            for _ in range(count):
                logging.getLogger("asyncio").warning("socket.send() raised exception.")
        elif owner == "push api":
            body = {"route": "onX", "message": {}, "everyone": True}
            async with httpx.AsyncClient(timeout=30) as http:
                for _ in range(count):
                    answer = await http.post(f"http://127.0.0.1:{self.api_port}/v1/push", json=body)
                    assert answer.status_code == 503
        else:
            raise AssertionError(owner)


def with_cluster(use: Callable[[Cluster], Awaitable[None]]) -> None:
    """Run ``use`` against a fresh :class:`Cluster`, then stop the push API and the node."""
    node = Node(
        Components(), ClusterConfig(service_address=address(), is_master=True, heartbeat=5), Config(heartbeat=0)
    )

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            (client_port,) = await nursery.start(functools.partial(node.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            stop = trio.Event()
            api_port = await nursery.start(
                lambda task_status: serve_push_api(Recording(gates=0), port=0, shutdown=stop, task_status=task_status)
            )
            await use(Cluster(bridge, stack, node, client_port, api_port))
            await stack.aclose()
            stop.set()
            node.server.shutdown()

    run(main)


def summaries(caplog: pytest.LogCaptureFixture, flood: Flood) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == flood.logger and flood.summary.fullmatch(record.getMessage())
    ]


def records(caplog: pytest.LogCaptureFixture, flood: Flood) -> int:
    """The records of the flood let through (each its own, not a summary)."""
    kind = {
        "no member": "nano/handler:",
        "push refused": "a cluster push to",
        "rpc failed": "new_member failed|register failed|deliver failed",
        "socket.send() raised exception.": "a connection was lost",
        "push unreached": "a push reached no gate",
    }[flood.kind]
    return sum(1 for record in caplog.records if record.name == flood.logger and re.match(kind, record.getMessage()))


@pytest.mark.usefixtures("bugs")
def test_every_cluster_log_reports_what_it_suppressed_within_seconds_of_its_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each owner's flood, then quiet: each summary comes on its own while the node still
    runs (10 s after the flood's first record, within the generous bound of 60 s)."""
    caplog.set_level(logging.DEBUG, logger="trionano.cluster")
    seen: dict[str, list[str]] = {}

    async def use(cluster: Cluster) -> None:
        for owner in FLOODS:
            await cluster.flood(owner)
        with trio.move_on_after(60):
            while any(not summaries(caplog, flood) for flood in FLOODS.values()):  # noqa: ASYNC110 - a log to watch
                await trio.sleep(0.2)
        seen.update({owner: summaries(caplog, flood) for owner, flood in FLOODS.items()})

    with_cluster(use)
    for owner, flood in FLOODS.items():
        assert len(seen[owner]) == 1, f"{owner}: no report of the {flood.count - PER_WINDOW} suppressed {flood.kind!r}"


@pytest.mark.usefixtures("bugs")
@pytest.mark.parametrize("owner", list(FLOODS))
def test_a_cluster_log_reports_what_it_suppressed_at_shutdown(owner: str, caplog: pytest.LogCaptureFixture) -> None:
    """One owner's flood, then the stop at once (long before its window ends): the count is
    reported as the node (or the push API, or the run) ends."""
    caplog.set_level(logging.DEBUG, logger="trionano.cluster")
    flood = FLOODS[owner]

    async def use(cluster: Cluster) -> None:
        await cluster.flood(owner)
        assert not summaries(caplog, flood)

    with_cluster(use)
    assert records(caplog, flood) >= PER_WINDOW
    assert len(summaries(caplog, flood)) == 1, f"{owner}: no report of the suppressed {flood.kind!r} at shutdown"


def test_a_burst_of_uid_pushes_refused_busy_is_all_accounted_for_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """log_summary.sh: a burst of 10,000-uid pushes, 40 at a time, to the push API of a node
    (here with ``max_waiting=0``: none waits for its turn), until more than 20 were answered 503
    busy; then the stop. Every 503 is in the log: let through, or counted in a report (main:
    10 let through, the rest never reported)."""
    caplog.set_level(logging.INFO, logger="trionano.cluster.push_api")
    node = Node(
        Components(), ClusterConfig(service_address=address(), is_master=True, heartbeat=5), Config(heartbeat=0)
    )
    body = json.dumps({"route": "onX", "message": {"text": "x"}, "uids": list(range(1, 10_001))}).encode()
    statuses: list[int] = []

    async def main(bridge: Bridge) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(node.run, bridge, TCPEndpoint("127.0.0.1", 0)))
            stop = trio.Event()
            port = await nursery.start(
                lambda task_status: serve_push_api(node, port=0, max_waiting=0, shutdown=stop, task_status=task_status)
            )
            headers = {"content-type": "application/json"}
            limits = httpx.Limits(max_connections=40)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:

                async def post() -> None:
                    answer = await http.post(f"http://127.0.0.1:{port}/v1/push", content=body, headers=headers)
                    statuses.append(answer.status_code)

                with trio.fail_after(60):
                    while statuses.count(503) <= 20:
                        async with trio.open_nursery() as posting:
                            for _ in range(40):
                                posting.start_soon(post)
            stop.set()
            node.server.shutdown()

    run(main)
    assert set(statuses) == {202, 503}
    busy = [r.getMessage() for r in caplog.records if r.name == "trionano.cluster.push_api"]
    let_through = [m for m in busy if re.match("(the push API is at|[0-9]+ pushes wait)", m)]
    # reported on its own (its kind named), or appended to the first record of the next window
    report = re.compile(r"([0-9]+) similar messages suppressed in the last [0-9.]+ s(\)| \(push api busy\))$")
    reported = sum(int(match.group(1)) for m in busy if (match := report.search(m)))
    assert len(let_through) + reported == statuses.count(503), (busy, statuses.count(503))
