"""Wire-layer throughput, each figure beside a same-run baseline that slices the same bytes.

Run: ``nox -s bench`` or ``python bench/wire.py [--seconds S]``. The machine is shared and
noisy, so every figure is the best of several rounds and is printed as a ratio to a baseline
measured in the same process: the ratio is what to compare between runs, not the raw rate.
Targets (issue #2): >= 1,000,000 Push encodes/s with the body already serialized, and
>= 500,000 message decodes/s.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from trionano import wire

BODY = b"x" * 64
ROUTE_REQUEST = "room.message"
ROUTE_PUSH = "onMessage"
ROUTES = wire.RouteDict({ROUTE_REQUEST: 1, ROUTE_PUSH: 2})


def rate(fn: Callable[[], object], seconds: float, rounds: int = 5) -> float:
    """Best calls/s over ``rounds`` rounds of about ``seconds`` each (loops of 1,000 calls)."""
    best = 0.0
    batch = range(1000)
    for _ in range(rounds):
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in batch:
                fn()
            calls += 1000
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, calls / (now - start))
    return best


def best_time(fn: Callable[[], object], rounds: int = 7) -> float:
    """The shortest of ``rounds`` timed calls, in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def row(name: str, value: float, baseline: float, unit: str = "/s", target: float | None = None) -> None:
    goal = "" if target is None else f"   target >= {target:>11,.0f}{unit}: {'met' if value >= target else 'MISSED'}"
    print(f"{name:<44} {value:>13,.0f}{unit}   baseline {baseline:>13,.0f}{unit}   ratio {value / baseline:5.2f}{goal}")


def working_server() -> wire.Connection:
    """A server-role Connection brought to WORKING through a real handshake."""
    conn = wire.Connection(wire.Role.SERVER, heartbeat=30)
    conn.receive_data(wire.encode_packet(wire.PacketType.HANDSHAKE, wire.Handshake().encode()), 0.0)
    conn.next_event()
    conn.send(wire.HandshakeResponse(heartbeat=30))
    conn.receive_data(wire.encode_packet(wire.PacketType.HANDSHAKE_ACK), 0.0)
    conn.next_event()
    assert conn.state is wire.State.WORKING
    return conn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one measuring round")
    seconds = parser.parse_args().seconds

    print(f"trionano wire benchmark (best of 5 rounds of {seconds}s; baseline = slicing the same bytes)\n")
    print("encode (whole Data packet, body already serialized)")
    for compressed in (False, True):
        codec = wire.MessageCodec(ROUTES if compressed else wire.RouteDict())
        label = "compressed" if compressed else "plain"
        push = codec.push_packet(ROUTE_PUSH, BODY)
        head, tail = push[:-64], push[-64:]
        baseline = rate(lambda: head + tail, seconds)  # the concatenation any encoder must do
        row(
            f"  Push 64 B ({label})",
            rate(lambda: codec.push_packet(ROUTE_PUSH, BODY), seconds),
            baseline,
            target=1_000_000,
        )
        request = codec.request_packet(7, ROUTE_REQUEST, BODY)
        head, tail = request[:-64], request[-64:]
        baseline = rate(lambda: head + tail, seconds)
        row(f"  Request 64 B ({label})", rate(lambda: codec.request_packet(7, ROUTE_REQUEST, BODY), seconds), baseline)

    print("\ndecode (one message frame)")
    for compressed in (False, True):
        codec = wire.MessageCodec(ROUTES if compressed else wire.RouteDict())
        label = "compressed" if compressed else "plain"
        for name, frame in (
            ("Push", codec.encode(wire.Push(ROUTE_PUSH, BODY))),
            ("Request", codec.encode(wire.Request(7, ROUTE_REQUEST, BODY))),
        ):
            baseline = rate(lambda: frame[3:], seconds)
            decoded = rate(lambda: codec.decode(frame), seconds)
            row(f"  {name} 64 B ({label})", decoded, baseline, target=500_000)

    print("\nserver Connection in WORKING (what the runtime calls per message)")
    server = working_server()
    request = wire.MessageCodec().request_packet(7, ROUTE_REQUEST, BODY)
    head, tail = request[:-64], request[-64:]
    baseline = rate(lambda: head + tail, seconds)

    def receive_request() -> object:
        server.receive_data(request, 0.0)
        return server.next_event()

    row("  receive_data + next_event: Request 64 B", rate(receive_request, seconds), baseline)
    row(
        "  codec.push_packet 64 B (no state check)",
        rate(lambda: server.codec.push_packet(ROUTE_PUSH, BODY), seconds),
        baseline,
    )
    row("  send(Push(...)) 64 B", rate(lambda: server.send(wire.Push(ROUTE_PUSH, BODY)), seconds), baseline)
    row("  send(Response(...)) 64 B", rate(lambda: server.send(wire.Response(7, BODY)), seconds), baseline)
    row("  send_push 64 B", rate(lambda: server.send_push(ROUTE_PUSH, BODY), seconds), baseline, target=1_000_000)
    row("  send_response 64 B", rate(lambda: server.send_response(7, BODY), seconds), baseline)
    shared = server.send_push(ROUTE_PUSH, BODY)
    row("  send_encoded (a broadcast's shared packet)", rate(lambda: server.send_encoded(shared), seconds), baseline)

    print("\nstream decoder: 10,000 Request packets fed in 4 KiB chunks")
    codec = wire.MessageCodec()
    packet = codec.request_packet(7, ROUTE_REQUEST, BODY)
    stream = packet * 10_000
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    size = len(packet)

    def decode_stream() -> None:
        decoder = wire.PacketDecoder()
        for chunk in chunks:
            decoder.feed(chunk)
            while decoder.next_packet() is not None:
                pass

    def slice_stream() -> None:
        data = b"".join(chunks)
        for offset in range(0, len(data), size):
            data[offset + 4 : offset + size]

    stream_rate = 10_000 / best_time(decode_stream)
    baseline = 10_000 / best_time(slice_stream)
    row("  packets", stream_rate, baseline)
    print(f"  = {stream_rate * size / 1e6:,.1f} MB/s")


if __name__ == "__main__":
    main()
