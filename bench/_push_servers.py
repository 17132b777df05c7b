"""Servers bench/push.py measures, each in its own process.

``python -m bench._push_servers KIND [options]`` prints its port on the first line of stdout,
then serves until stdin closes. Kinds:

- ``room [--window S]``: a live room over TCP. Viewers join with ``room.join``; ``room.run
  {"rate", "seconds", "size"}`` broadcasts ``rate`` messages a second of ``size`` bytes for
  ``seconds``, lets the writers finish, and answers with what the server did over the run:
  writes, Pushes queued, encodes, and this process's CPU seconds (B5).
- ``fanout --members N [--inline | --flood] [--gc run|page|off] [--trace PATH [--trace-steps]]``: ``N``
  members in one group, each a real agent (reader, writer, outbox, wire state) over a sink
  stream that takes whatever is written with one ``write(2)`` to /dev/null (this machine's file
  limit allows ~20,000 sockets, not 50,000), and a TCP port for a probe client. ``loop.start``
  (a Notify, on a lane of its own) starts broadcasts back to back (``broadcast_and_wait``;
  with ``--inline``, the whole group in one go, as before buckets; with ``--flood``, an
  overloaded server: ``broadcast`` without waiting, one per step of its lane, faster than the
  fan-out reaches the members); ``fan.stop`` stops them and answers with how many ran, how
  many ``broadcast`` refused (returned 0), the most the fan-out had waiting, the Pushes queued
  and ``dropped_backlog`` over the run; ``fan.echo`` answers at once. The collector: ``run`` (the
  default) as ``trionano.run`` sets it (``tune_gc`` once the server listens), and one
  ``gc.collect()`` once the members have joined (the joins' young objects, out of the way of
  the measurement); ``page``: ``gc.collect()``, ``gc.freeze()`` and ``gc.set_threshold(700,
  10, 10_000)`` once the members have joined, as the pushing page once advised; ``off``:
  CPython's defaults. ``--trace``: bench/_trace.py's timings (collections, scheduler batches,
  with ``--trace-steps`` task steps over 0.5 ms) written to PATH when the server stops.
- ``scale [--ws]``: raises RLIMIT_NOFILE to its hard limit and serves TCP (or WebSocket) on
  the second port it prints (the first is TCP, for control).
  ``scale.join`` joins the group; ``scale.stats`` answers the RSS (KiB), sessions and the file
  limit; ``scale.broadcast`` answers CLOCK_MONOTONIC just before it broadcasts one Push to
  everyone (the clients note when it reaches them) (B14).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from typing import Any

import trio
import trio.testing

import trionano
from bench._trace import Trace
from trionano import Component, Components, Config, Group, Session, wire
from trionano._session import Broadcast  # --inline: the fan-out as it was before buckets


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def wait_stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read)


async def serve(components: Components, config: Config, endpoint: Any, *, ready: Any = None) -> None:
    server = trionano.Server(components, config)
    async with trio.open_nursery() as nursery:
        (port,) = await nursery.start(server.serve, endpoint)
        if ready is not None:
            await ready(server, nursery)
        print(port, flush=True)
        await wait_stdin_closed()
        server.shutdown()


# -- room (B5) ------------------------------------------------------------------------------


class Room(Component):
    def __init__(self) -> None:
        self.group = Group("room")

    def join(self, session: Session, msg: bytes) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}

    async def run(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        rate, seconds = float(msg["rate"]), float(msg["seconds"])
        body = {"c": "x" * max(0, int(msg.get("size", 64)) - 10)}
        before = self.server.statistics()
        cpu0 = time.process_time()
        start = trio.current_time()
        sent = 0
        while sent < rate * seconds:  # on schedule: a late tick catches up, as a room's traffic would
            self.group.broadcast("onChat", body)
            sent += 1
            await trio.sleep_until(start + sent / rate)
        await trio.sleep(0.2)  # past any window: every writer has written
        await trio.testing.wait_all_tasks_blocked()
        after = self.server.statistics()
        return {
            "broadcasts": sent,
            "seconds": trio.current_time() - start,
            "writes": after.writes - before.writes,
            "pushes": after.pushes_out - before.pushes_out,
            "encoded": after.encoded - before.encoded,
            "dropped": after.dropped_slow - before.dropped_slow,
            "cpu": time.process_time() - cpu0,
        }


async def serve_room(window: float | None) -> None:
    components = Components()
    components.register(Room(), name="room")
    config = Config(heartbeat=0, rate_limit=None, merge_window=window, outbox_size=4096)
    await serve(components, config, trionano.TCPEndpoint("127.0.0.1"))


# -- fanout (the bucket goal) ---------------------------------------------------------------


class SinkStream(trio.abc.Stream):
    """A client that says hello (handshake, ack, a join request), then only reads: each write
    is one ``write(2)`` to /dev/null, as a socket's would be one ``send``."""

    def __init__(self, hello: bytes, devnull: int) -> None:
        self._hello = hello
        self._devnull = devnull

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self._hello:
            hello, self._hello = self._hello, b""
            return hello
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        os.write(self._devnull, data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class Fan(Component):
    """The main lane's side: joins, the probe's echo, stop."""

    def __init__(self) -> None:
        self.group = Group("fan")
        self.running = False
        self.count = 0
        self.refused = 0  # --flood: broadcasts refused (broadcast returned 0)
        self.max_waiting = 0  # --flood: the most deliveries the fan-out had waiting
        self.pushes_before = 0
        self.dropped_before = 0

    def join(self, session: Session, msg: bytes) -> None:
        self.group.add(session)

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return msg

    def stop(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        self.running = False
        stats = self.server.statistics()
        return {
            "broadcasts": self.count,
            "refused": self.refused,
            "max_waiting": self.max_waiting,
            "pushes": stats.pushes_out - self.pushes_before,
            "dropped_backlog": getattr(stats, "dropped_backlog", 0) - self.dropped_before,
        }


class Loop(Component):
    """On a lane of its own: ``loop.start`` (a Notify) broadcasts back to back until stopped."""

    def __init__(self, fan: Fan, inline: bool, flood: bool) -> None:
        self.fan = fan
        self.inline = inline
        self.flood = flood

    async def start(self, session: Session, msg: dict[str, Any]) -> None:
        fan, group = self.fan, self.fan.group
        body = {"c": "x" * 54}
        fan.running = True
        fan.count = fan.refused = fan.max_waiting = 0
        stats = self.server.statistics()
        fan.pushes_before, fan.dropped_before = stats.pushes_out, getattr(stats, "dropped_backlog", 0)
        fanout = group.sessions()[0].fanout
        assert fanout is not None
        while fan.running:
            if self.flood:  # an overloaded server: never waits for the fan-out
                fan.refused += group.broadcast("onFan", body) == 0
                fan.max_waiting = max(fan.max_waiting, fanout.waiting)
                await trio.lowlevel.checkpoint()
            elif self.inline:  # the whole group in one go, as before buckets
                members = group.sessions()
                broadcast = Broadcast("onFan", members[0].serializer.marshal(body))
                for member in members:
                    member.entity.send_broadcast(member, broadcast)
                await trio.lowlevel.checkpoint()
            else:
                await group.broadcast_and_wait("onFan", body)
            fan.count += 1


async def serve_fanout(
    members: int, inline: bool, flood: bool, gc_mode: str, trace_path: str | None, steps: bool
) -> None:
    fan = Fan()
    components = Components()
    components.register(fan, name="fan")
    components.register(Loop(fan, inline, flood), name="loop", lane="loop")
    config = Config(
        heartbeat=0,
        rate_limit=None,
        outbox_size=1 << 16,
        max_outbox_bytes=64 << 20,
        max_connections=1_000_000,  # every member handshakes at once, from one process
        max_handshaking=1_000_000,
        max_handshaking_per_host=None,
    )
    hello = (
        wire.encode_packet(wire.PacketType.HANDSHAKE)
        + wire.encode_packet(wire.PacketType.HANDSHAKE_ACK)
        + wire.MessageCodec().notify_packet("fan.join", b"{}")
    )
    devnull = os.open(os.devnull, os.O_WRONLY)

    async def ready(server: trionano.Server, nursery: trio.Nursery) -> None:
        if gc_mode == "run":  # as trionano.run does: once the server listens
            trionano.tune_gc()
        for i in range(members):
            nursery.start_soon(server.serve_connection, SinkStream(hello, devnull), f"sink#{i}")
            if i % 512 == 0:
                await trio.lowlevel.checkpoint()
        while fan.group.count() < members:  # noqa: ASYNC110 - polling the joins, a bench's setup
            await trio.sleep(0.05)
        if gc_mode == "run":
            gc.collect()
        if gc_mode == "page":  # the members' objects out of the full collections' walks
            gc.collect()
            gc.freeze()
            gc.set_threshold(700, 10, 10_000)  # and full collections rare
        if trace is not None:
            trace.install()

    trace = Trace(steps=steps, sizes=os.environ.get("TRACE_SIZES") == "1") if trace_path else None
    await serve(components, config, trionano.TCPEndpoint("127.0.0.1"), ready=ready)
    if trace is not None and trace_path:
        trace.dump(trace_path)


# -- scale (B14) ----------------------------------------------------------------------------


class Scale(Component):
    def __init__(self) -> None:
        self.group = Group("all")

    def join(self, session: Session, msg: bytes) -> None:
        self.group.add(session)

    def stats(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {
            "rss_kib": rss_kib(),
            "sessions": len(self.server.sessions),
            "members": self.group.count(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        }

    def broadcast(self, session: Session, msg: dict[str, Any]) -> dict[str, float]:
        start = time.monotonic()
        self.group.broadcast("onAll", {"t": start})
        return {"start": start}


async def serve_scale(websocket: bool) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    components = Components()
    components.register(Scale(), name="scale")
    config = Config(heartbeat=0, rate_limit=None, max_connections=1_000_000, handshake_timeout=120)
    server = trionano.Server(components, config)
    async with trio.open_nursery() as nursery:
        # the first port for control (TCP), the second for the clients (TCP or WebSocket)
        control = trionano.TCPEndpoint("127.0.0.1")
        clients = trionano.WebSocketEndpoint("0.0.0.0") if websocket else trionano.TCPEndpoint("0.0.0.0")
        ports = await nursery.start(server.serve, control, clients)
        print(*ports, flush=True)
        await wait_stdin_closed()
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["room", "fanout", "scale"])
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--inline", action="store_true")
    parser.add_argument("--flood", action="store_true")
    parser.add_argument("--gc", choices=["page", "run", "off"], default="page")
    parser.add_argument("--ws", action="store_true")
    parser.add_argument("--trace", default=None, help="fanout: write bench._trace's timings to this file")
    parser.add_argument("--trace-steps", action="store_true", help="and time each task step")
    args = parser.parse_args()
    if args.kind == "room":
        trio.run(serve_room, args.window)
    elif args.kind == "fanout":
        trio.run(serve_fanout, args.members, args.inline, args.flood, args.gc, args.trace, args.trace_steps)
    else:
        trio.run(serve_scale, args.ws)


if __name__ == "__main__":
    main()
