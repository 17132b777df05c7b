"""Where a request's CPU goes: trionano's synchronous path by layer, beside the floor's.

In-process, no sockets: one Request packet at a time through the parts a served request
passes (B1's echo: 64 B JSON body), timed per layer over many requests, best of 5 rounds:

- protocol: ``wire.Connection.receive_requests`` takes the bytes and hands out the Request's
  id, route and body (the agent's fused path for reads of whole Requests);
- router: the route, its counters, the body's JSON decoding, the task queued on the lane;
- handler + answer: the lane's task: the handler, its error boundary and timing, the JSON
  encoding, the Response packet, the outbox;
- channels: taking the task off the lane and the packet off the outbox.

The floor's column is bench._servers' inline codec doing the same work (parse, JSON in and
out, Response packet) with two memory channels. What neither column holds: the socket calls,
the waits and Trio's task switches (B1's CPU per request minus these figures).

Run: ``python -m bench.profile`` (also in ``nox -s bench``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

import trionano
from bench._loadgen import BODY
from bench._servers import Bench, _json
from trionano import Components, Config, wire
from trionano._agent import Agent

ROUNDS = 5
REQUESTS = 20_000


def trionano_layers() -> dict[str, float]:
    components = Components()
    components.register(Bench(), name="bench")
    server = trionano.Server(components, Config(heartbeat=0, outbox_size=1024, rate_limit=None))
    stream, _peer = trio.testing.memory_stream_pair()
    agent = Agent(
        stream,
        "bench",
        config=server.config,
        codec=server.codec,
        router=server.router,
        counters=server._counters,
        log=server._agent_log,
        make_session=server.make_session,
        on_working=lambda agent: None,
        on_ended=lambda agent: None,
    )
    conn = agent.conn
    conn.receive_data(wire.encode_packet(wire.PacketType.HANDSHAKE, b'{"sys":{}}'), 0.0)
    conn.next_event()
    agent._enqueue(conn.send(wire.HandshakeResponse(heartbeat=0)), droppable=False)
    conn.receive_data(wire.encode_packet(wire.PacketType.HANDSHAKE_ACK), 0.0)
    conn.next_event()
    agent._receive.receive_nowait()
    packet = wire.MessageCodec().request_packet(1, "bench.echo", BODY)
    lane = server.router._main._receive
    outbox = agent._receive
    dispatch = server.router.dispatch_request
    receive_requests = conn.receive_requests
    session = agent.session
    clock = time.perf_counter
    totals = dict.fromkeys(("protocol", "router", "handler + answer", "channels"), 0.0)
    for _ in range(REQUESTS):
        t0 = clock()
        requests = receive_requests(packet, 0.0)  # the reader's fused path
        t1 = clock()
        for mid, route, body in requests:  # type: ignore[union-attr]
            dispatch(session, mid, route, body)
        t2 = clock()
        task = lane.receive_nowait()
        t3 = clock()
        task()
        t4 = clock()
        outbox.receive_nowait()
        t5 = clock()
        agent._queued, agent._queued_bytes = 0, 0
        totals["protocol"] += t1 - t0
        totals["router"] += t2 - t1
        totals["channels"] += t3 - t2 + t5 - t4
        totals["handler + answer"] += t4 - t3
    return totals


def floor_layers() -> dict[str, float]:
    loads, dumps = _json()
    handlers: dict[str, Callable[[Any], Any]] = {"bench.echo": lambda msg: msg}
    to_scheduler, scheduled = trio.open_memory_channel[Any](float("inf"))
    to_writer, outbox = trio.open_memory_channel[bytes](float("inf"))
    packet = wire.MessageCodec().request_packet(1, "bench.echo", BODY)
    clock = time.perf_counter
    totals = dict.fromkeys(("protocol", "router", "handler + answer", "channels"), 0.0)
    for _ in range(REQUESTS):
        t0 = clock()
        buf = packet
        end = 4 + int.from_bytes(buf[1:4], "big")
        mid = buf[5]
        route_end = 7 + buf[6]
        item = (to_writer, mid, buf[7:route_end].decode(), buf[route_end:end])
        t1 = clock()
        to_scheduler.send_nowait(item)
        t2 = clock()
        writer, mid, route, body = scheduled.receive_nowait()
        t3 = clock()
        result = dumps(handlers[route](loads(body)))
        head = b"\x04" + bytes((mid,))
        writer.send_nowait((0x04000000 | len(head) + len(result)).to_bytes(4, "big") + head + result)
        t4 = clock()
        outbox.receive_nowait()
        t5 = clock()
        totals["protocol"] += t1 - t0
        totals["channels"] += t2 - t1 + t3 - t2 + t5 - t4
        totals["handler + answer"] += t4 - t3
    return totals


#: timed segments per layer (each costs one clock read more than the work it times)
SEGMENTS = {
    "trionano": {"protocol": 1, "router": 1, "handler + answer": 1, "channels": 2},
    "floor": {"protocol": 1, "router": 0, "handler + answer": 1, "channels": 3},
}


async def measure() -> dict[str, dict[str, float]]:
    overhead = min(_clock_overhead() for _ in range(ROUNDS))
    results = {}
    for name, layers in (("trionano", trionano_layers), ("floor", floor_layers)):
        rounds = [layers() for _ in range(ROUNDS)]
        results[name] = {
            layer: max(0.0, min(r[layer] for r in rounds) / REQUESTS - overhead * SEGMENTS[name][layer]) * 1e6
            for layer in rounds[0]
        }
    return results


def main() -> None:
    results = trio.run(measure)
    print(
        "Profile by layer: the synchronous path of one request, in-process (CPU-us per request, best of"
        f" {ROUNDS} x {REQUESTS:,}); sockets, waits and task switches are the rest of B1's figure"
    )
    print(f"  {'layer':<18} {'trionano':>9} {'floor':>9}")
    for layer in results["trionano"]:
        print(f"  {layer:<18} {results['trionano'][layer]:>9.2f} {results['floor'][layer]:>9.2f}")
    total = {name: sum(layers.values()) for name, layers in results.items()}
    print(f"  {'total':<18} {total['trionano']:>9.2f} {total['floor']:>9.2f}\n")


def _clock_overhead() -> float:
    clock = time.perf_counter
    start = clock()
    for _ in range(REQUESTS):
        clock()
    return (clock() - start) / REQUESTS


if __name__ == "__main__":
    main()
