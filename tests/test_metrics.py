"""The Prometheus exporter, scraped over real HTTP after real clients did real things: the
values are what the clients caused; two servers' exporters share nothing; a cluster node adds
its RPCs and members."""

from __future__ import annotations

import functools
import http.client
import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.apps import s_components, wait_until
from trionano import Component, Components, Config, RateLimit, Server, Session, wire
from trionano.cluster import Audience, ClusterConfig, Node, run
from trionano.metrics import metrics_collector, serve_metrics
from trionano.testing import RunningServer, open_test_server

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text: str = response.read().decode()
        return text


async def scrape(port: int) -> Samples:
    """GET /metrics with the standard library's HTTP client, in a thread."""
    return parse(await trio.to_thread.run_sync(_get, port))


@asynccontextmanager
async def exported(config: Config | None = None) -> AsyncIterator[tuple[RunningServer, int]]:
    """The issues' test component on a free port, and its exporter on another."""
    components, _, _ = s_components()
    async with open_test_server(components, config) as running, trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, running.server)
        yield running, port
        nursery.cancel_scope.cancel()


def data(message: wire.Message) -> bytes:
    return wire.encode_packet(wire.PacketType.DATA, wire.encode_message(message))


async def test_a_scrape_reports_what_the_clients_did() -> None:
    # burst 30, refilled at 1/s: the flooder's 40 notifies overflow it; requests never do
    config = Config(rate_limit=RateLimit(rate=1, burst=30, kick_after=1000))
    async with exported(config) as (running, port):
        server = running.server
        async with running.connect() as client, running.raw() as flooder, running.raw() as garbage:
            for n in range(3):
                assert await client.request("s.echo", {"n": n}) == {"n": n}
            await client.notify("s.echo", {})
            assert await client.request("s.silent", {}) == {"code": 500, "message": "the handler gave no response"}
            assert (await client.request("s.unserializable", {}))["code"] == 500
            for _ in range(2):
                assert (await client.request("no.such", {}))["code"] == 404
            await client.notify("no.such", {})
            assert await client.request("s.pushes", {"n": 5}) == {"pushed": 5}
            for _ in range(5):
                await client.receive_push("onPush")

            async with running.connect():  # kicked by the application
                await wait_until(lambda: len(server.sessions) == 2)
                server.sessions[max(server.sessions)].kick("go away")
                await wait_until(lambda: len(server.sessions) == 1)

            await flooder.handshake()  # 2 packets of the burst
            await flooder.send(b"".join(data(wire.Notify("s.say", b"{}")) for _ in range(40)))

            await garbage.send(b"\x09\x00\x00\x00")  # no such packet type: a protocol error
            await garbage.receive_until_closed()

            def flood_done() -> bool:
                stats = server.statistics()
                say = stats.routes["s.say"]
                return say.notifies + stats.dropped_rate == 40 and say.handled == say.notifies

            await wait_until(flood_done)
            samples = await scrape(port)
            stats = server.statistics()

            assert value(samples, "trionano_sessions_open") == 2  # client, flooder
            assert value(samples, "trionano_sessions_opened_total") == 3
            assert value(samples, "trionano_sessions_closed_total") == 1
            assert value(samples, "trionano_connections_accepted_total") == 4
            assert value(samples, "trionano_connections_open") == 2  # garbage's was kicked
            assert value(samples, "trionano_connections_handshaking") == 0
            assert value(samples, "trionano_rate_limited_peers") == 0  # the flooder is still connected

            def messages_in(route: str, kind: str) -> float:
                return value(samples, "trionano_messages_in_total", route=route, type=kind)

            assert messages_in("s.echo", "request") == 3
            assert messages_in("s.echo", "notify") == 1
            assert messages_in("s.silent", "request") == 1
            assert messages_in("unknown", "request") == 2
            assert messages_in("unknown", "notify") == 1
            assert messages_in("s.join", "request") == 0  # every hosted route, from the start
            accepted = messages_in("s.say", "notify")
            assert 0 < accepted < 40
            assert value(samples, "trionano_dropped_messages_total", reason="rate") == 40 - accepted
            assert value(samples, "trionano_dropped_messages_total", reason="slow") == 0
            assert not any(labels and dict(labels).get("route") == "no.such" for _, labels in samples)

            def handled(route: str) -> float:
                return value(samples, "trionano_handler_seconds_count", route=route)

            assert handled("s.echo") == 4  # the notify was handled too
            assert handled("s.silent") == handled("s.unserializable") == handled("s.pushes") == 1
            assert handled("s.say") == accepted
            assert value(samples, "trionano_handler_seconds_bucket", route="s.echo", le="+Inf") == 4
            assert value(samples, "trionano_handler_seconds_bucket", route="s.echo", le="10.0") == 4
            assert 0 < value(samples, "trionano_handler_seconds_sum", route="s.echo") < 1
            assert ("trionano_handler_seconds_count", frozenset({("route", "unknown")})) not in samples

            assert value(samples, "trionano_error_responses_total", code="404") == 2
            assert value(samples, "trionano_error_responses_total", code="500") == 2
            assert value(samples, "trionano_handler_errors_total") == 2
            assert value(samples, "trionano_unknown_routes_total") == 3
            assert value(samples, "trionano_protocol_errors_total") == 1
            assert value(samples, "trionano_kicks_total", reason="application") == 1
            # 3 + 1 + 1 + 2 + 1 answers; 5 pushes
            assert value(samples, "trionano_messages_out_total", type="response") == 8
            assert value(samples, "trionano_messages_out_total", type="push") == 5
            assert value(samples, "trionano_outbox_messages") == stats.outbox_queued
            assert value(samples, "trionano_outbox_max_messages") == stats.outbox_max
            assert value(samples, "trionano_encoded_packets_total") == stats.encoded
            assert not any(name.startswith("trionano_cluster_") for name, _ in samples)


async def test_the_outbox_gauges_see_a_client_that_does_not_read() -> None:
    async with exported(Config(outbox_size=10_000)) as (running, port), running.raw() as raw:
        await raw.handshake()
        await raw.send(data(wire.Request(1, "s.pads", b'{"n": 200}')))  # 12 MB the client never reads
        await wait_until(lambda: running.server.statistics().outbox_max > 50)
        samples = await scrape(port)
        assert value(samples, "trionano_outbox_max_messages") > 50
        assert value(samples, "trionano_outbox_messages") >= value(samples, "trionano_outbox_max_messages")


async def test_two_servers_exporters_share_nothing() -> None:
    async with exported() as (first, first_port), exported() as (second, second_port):
        async with first.connect() as client:
            assert await client.request("s.echo", {}) == {}
            assert await client.request("s.echo", {}) == {}
            one, two = await scrape(first_port), await scrape(second_port)
        assert value(one, "trionano_messages_in_total", route="s.echo", type="request") == 2
        assert value(two, "trionano_messages_in_total", route="s.echo", type="request") == 0
        assert value(one, "trionano_sessions_opened_total") == 1
        assert value(two, "trionano_sessions_opened_total") == 0
        assert value(two, "trionano_handler_seconds_count", route="s.echo") == 0

        # one registry, two servers: refused, not mixed
        registry = CollectorRegistry()
        registry.register(metrics_collector(first.server))
        with pytest.raises(ValueError, match="Duplicated"):
            registry.register(metrics_collector(second.server))
        assert value(parse(generate_latest(registry).decode()), "trionano_sessions_opened_total") == 1


async def test_an_exporter_on_a_registry_of_ones_own_and_its_http() -> None:
    registry = CollectorRegistry()
    components, _, _ = s_components()
    server = Server(components)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_metrics, server, registry=registry))
        assert "trionano_sessions_open" in generate_latest(registry).decode()

        def talk() -> list[tuple[int, str]]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            seen = []
            for method, path, headers in [
                ("GET", "/metrics", {}),
                ("GET", "/", {}),
                ("POST", "/metrics", {}),
                ("GET", "/metrics?x=1", {"Accept": "application/openmetrics-text; version=1.0.0"}),
            ]:
                conn.request(method, path, headers=headers)  # one kept-alive connection
                response = conn.getresponse()
                body = response.read().decode()
                seen.append((response.status, response.headers["Content-Type"] or ""))
                if response.status == 200:
                    assert "trionano_sessions_open 0" in body
            conn.close()
            return seen

        seen = await trio.to_thread.run_sync(talk)
        assert [status for status, _ in seen] == [200, 404, 405, 200]
        assert seen[0][1].startswith("text/plain")
        assert seen[3][1].startswith("application/openmetrics-text")
        nursery.cancel_scope.cancel()
    # the collector leaves the registry with the exporter
    assert "trionano_sessions_open" not in generate_latest(registry).decode()


def test_trionano_imports_without_the_extra_and_metrics_names_it() -> None:
    script = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed
import trionano, trionano.cluster, trionano.testing
try:
    import trionano.metrics
except ImportError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert "pip install 'trionano[metrics]'" in out.stdout, out


# -- a cluster node ---------------------------------------------------------------------------


class Calc(Component):
    def add(self, session: Session, msg: dict[str, int]) -> dict[str, int]:
        return {"sum": msg["a"] + msg["b"]}


def address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_node_exports_its_rpcs_and_members() -> None:
    master_address, member_address = address(), address()
    master = Node(Components(), ClusterConfig(service_address=master_address, is_master=True), Config(heartbeat=0))
    components = Components()
    components.register(Calc(), name="calc")
    member = Node(
        components,
        ClusterConfig(service_address=member_address, master_address=master_address, node_id=2),
        Config(heartbeat=0),
    )
    nowhere = address()  # a member whose master is not there: its registration fails
    lost = Node(
        Components(),
        ClusterConfig(service_address=address(), master_address=nowhere, retry_interval=0.05, rpc_timeout=0.5),
        Config(heartbeat=0),
    )
    seen: dict[str, Samples] = {}

    async def main(bridge: Any) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(master.run, bridge))
            await nursery.start(functools.partial(member.run, bridge))
            async with trio.open_nursery() as exporters:
                port = await exporters.start(serve_metrics, master)
                for a in range(3):
                    answer = await master.call("calc.add", json.dumps({"a": a, "b": 1}).encode())
                    assert json.loads(answer) == {"sum": a + 1}
                master.push("onNews", {"n": 1}, Audience.all())  # to the member, which has no clients
                await wait_until(lambda: master.push_statistics().not_gates == 1)  # as it answers
                seen["master"] = await scrape(port)

                exporters.start_soon(functools.partial(lost.run, bridge))
                lost_port = await exporters.start(serve_metrics, lost)
                await wait_until(lambda: sum(s.failures for s in lost.rpc_stats.snapshot().values()) >= 2)
                seen["lost"] = await scrape(lost_port)
                exporters.cancel_scope.cancel()
            member.server.shutdown()
            master.server.shutdown()

    run(main)
    samples = seen["master"]
    assert value(samples, "trionano_cluster_members") == 1
    calls = {"method": "HandleRequest", "peer": member_address}
    assert value(samples, "trionano_cluster_rpc_seconds_count", **calls) == 3
    assert value(samples, "trionano_cluster_rpc_seconds_bucket", le="+Inf", **calls) == 3
    assert value(samples, "trionano_cluster_rpc_failures_total", **calls) == 0
    assert value(samples, "trionano_cluster_dropped_total") == 0
    assert value(samples, "trionano_cluster_pushes_total", outcome="pushes") == 1
    assert value(samples, "trionano_cluster_pushes_total", outcome="queued") == 1  # for the member
    assert value(samples, "trionano_cluster_pushes_total", outcome="dropped") == 0
    assert value(samples, "trionano_cluster_not_gates") == 1
    assert value(samples, "trionano_cluster_pushes_held") == 0  # nothing waits for the member by now
    assert value(samples, "trionano_cluster_push_bytes_held") == 0
    assert value(samples, "trionano_cluster_groups") == 0
    assert value(samples, "trionano_sessions_open") == 0  # the server's metrics as well

    lost_samples = seen["lost"]
    register = {"method": "Register", "peer": nowhere}
    assert value(lost_samples, "trionano_cluster_rpc_failures_total", **register) >= 2
    assert value(lost_samples, "trionano_cluster_rpc_seconds_count", **register) >= 2
    assert value(lost_samples, "trionano_cluster_members") == 0
