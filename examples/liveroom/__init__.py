"""The live room ("danmaku") demo of the push-at-scale design (issue 13): viewers on several
gates watch one room's comment stream and viewer count; comments come from viewers and from
business systems over the HTTP push API.

::

    browser / trionano.client --ws--> gate 1 ---+                       +--- POST /v1/push
    browser / trionano.client --ws--> gate 2 ---+-- gRPC -- logic node -+    (push port)

- gate (``RoomService``, service ``room``): ``room.join`` (Request ``{"name", "uid"?}``) tells the
  logic node (``session.rpc("live.enter")``; answered 503 while no logic node is in the
  cluster), binds the viewer's uid (the given one, else the session id) and adds the session
  to the cluster-wide group ``room`` on its gate; ``room.stats`` (Request) answers the gate's
  own push counters (``shed``: pushes that came while its backlog was full). The gate's
  WebSocket port also serves the page (``/``) and ``/trionano.js``.
- logic (``LiveService``, service ``live``, also the cluster's master): ``live.comment``
  (Request ``{"text"}``, forwarded by the gate) pushes ``onComment`` ``{"name", "text"}`` to the
  room on every gate; ``live.stats`` (Request) answers the viewer count and the node's push
  counters; every half second a changed viewer count is pushed as ``onViewers``
  ``{"count"}``. It serves the HTTP push API: ``POST /v1/push {"route": "onComment",
  "message": {"name": "ops", "text": "hi"}, "group": "room"}``.

``python -m examples.liveroom`` starts the logic node and two gates as subprocesses and prints
the URLs; ``python -m examples.liveroom.load N`` runs N viewers against them.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

import trionano
from trionano import Component, Components, Config, HandlerError, Session
from trionano.cluster import Audience, Bridge, ClusterConfig, Node, NodeStopping
from trionano.cluster.push_api import serve_push_api

logger = logging.getLogger("examples.liveroom")
WEB = Path(__file__).resolve().parent / "web"
ROOM = "room"
MAX_NAME = 40
MAX_TEXT = 200
#: a viewer's comments: at most COMMENTS in any COMMENT_WINDOW seconds (more are answered 429),
#: counted per viewer across reconnects (see :meth:`LiveService.comment`)
COMMENTS = 5
COMMENT_WINDOW = 10.0


@attrs.frozen
class JoinRequest:
    name: str = ""
    uid: int = 0  # 0: the session id


@attrs.frozen
class Enter:
    name: str = ""
    #: who the comment limit counts against: "uid:N" for a viewer that gave its uid, else
    #: "host:H" (its address as the gate sees it)
    viewer: str = ""


@attrs.frozen
class CommentRequest:
    text: str = ""


#: a viewer's name, on the logic node's stand-in of its session
NAME = trionano.SessionKey[str]("name")
#: who its comments count against (:attr:`Enter.viewer`), on the stand-in too
VIEWER = trionano.SessionKey[str]("viewer")


class NodeComponent(Component):
    """A component that pushes through its node (given once the node is built)."""

    _node: Node | None = None

    @property
    def node(self) -> Node:
        assert self._node is not None, "build() gives the node"
        return self._node

    def give(self, node: Node) -> None:
        self._node = node


class RoomService(NodeComponent):
    """On each gate: viewers join the room here."""

    def join(self, session: Session, msg: JoinRequest) -> dict[str, Any]:
        if not 0 <= msg.uid < 1 << 53:
            raise HandlerError("uid: 1 to 2**53-1, or 0 for the session id", code=400)
        name = msg.name.strip()[:MAX_NAME] or f"viewer {session.id % 100_000}"
        viewer = f"uid:{msg.uid}" if msg.uid else f"host:{session.remote_address.rpartition(':')[0]}"
        try:
            session.rpc("live.enter", {"name": name, "viewer": viewer})
        except LookupError:  # no logic node in the cluster (not started yet, or restarting)
            raise HandlerError("the room is not open yet: try again shortly", code=503) from None
        session.bind(msg.uid or session.id)
        room = self.node.group(ROOM)
        if session not in room:
            room.add(session)
        return {"code": 0, "uid": session.uid, "name": name}

    def stats(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"push": attrs.asdict(self.node.push_statistics())}


class LiveService(NodeComponent):
    """On the logic node: the room's comments and viewer count."""

    def __init__(self) -> None:
        self.viewers: dict[int, Session] = {}  # stand-in session id -> its session
        self.shown = -1  # the count last pushed
        # viewer (Enter.viewer) -> when its recent comments came (trio time); kept across
        # reconnects, forgotten once the window has passed (report)
        self.said: dict[str, list[float]] = {}

    def after_init(self) -> None:
        self.server.on_session_closed(self.left)
        self.server.scheduler.every(0.5, self.report)

    def left(self, session: Session) -> None:
        self.viewers.pop(session.id, None)

    def report(self) -> None:
        since = trio.current_time() - COMMENT_WINDOW
        self.said = {viewer: said for viewer, said in self.said.items() if said[-1] > since}
        if len(self.viewers) != self.shown:
            self.shown = len(self.viewers)
            self.node.push("onViewers", {"count": self.shown}, Audience.of_group(ROOM))

    def enter(self, session: Session, msg: Enter) -> None:
        session[NAME] = msg.name[:MAX_NAME]
        session[VIEWER] = msg.viewer[:80] or f"session:{session.id}"
        self.viewers[session.id] = session

    def comment(self, session: Session, msg: CommentRequest) -> dict[str, Any]:
        text = msg.text.strip()[:MAX_TEXT]
        if not text:
            raise HandlerError("say something", code=400)
        if session.id not in self.viewers:
            raise HandlerError("join the room first", code=400)
        now = trio.current_time()
        viewer = session[VIEWER]
        said = [at for at in self.said.get(viewer, ()) if at > now - COMMENT_WINDOW]
        if len(said) >= COMMENTS:
            raise HandlerError(f"slow down: {COMMENTS} comments per {COMMENT_WINDOW:g} s", code=429)
        self.said[viewer] = [*said, now]
        gates = self.node.push("onComment", {"name": session.get(NAME, ""), "text": text}, Audience.of_group(ROOM))
        return {"code": 0, "gates": gates}

    def stats(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"viewers": len(self.viewers), "push": attrs.asdict(self.node.push_statistics())}


def build(
    role: str,
    *,
    listen: str,
    master: str,
    heartbeat: float = 30.0,
    rpc_timeout: float = 5.0,
    push_queue: int = 1024,
    push_bytes: int = 16 * 1024 * 1024,
    merge_window: float | None = None,
) -> Node:
    """The node for ``role`` ("logic": also the master; or "gate"), not yet running; at most
    ``push_queue`` pushes and ``push_bytes`` bytes held for each other gate.
    ``merge_window``: seconds a viewer's connection may hold comments to send them in one write
    (:attr:`trionano.Config.merge_window`; None: each at once)."""
    components = Components()
    config = ClusterConfig(
        service_address=listen,
        master_address=None if role == "logic" else master,
        is_master=role == "logic",
        label=role,
        heartbeat=heartbeat,
        rpc_timeout=rpc_timeout,
        max_pending_pushes=push_queue,
        max_pending_push_bytes=push_bytes,
    )
    component: NodeComponent = LiveService() if role == "logic" else RoomService()
    components.register(component, name="live" if role == "logic" else "room")
    # the logic node reports the viewer count every 0.5 s: a timer tick finer than the default 1 s
    node = Node(components, config, Config(heartbeat=heartbeat, timer_precision=0.1, merge_window=merge_window))
    component.give(node)
    return node


async def serve(
    node: Node,
    bridge: Bridge,
    *,
    host: str = "127.0.0.1",
    ws_port: int | None = None,
    push_port: int | None = None,
    token: str | None = None,
) -> None:
    """Run ``node`` (with the page and WebSocket on ``ws_port``, the push API on
    ``push_port``) until its server shuts down."""
    endpoints: list[trionano.Endpoint] = []
    if ws_port is not None:
        endpoints.append(
            trionano.WebSocketEndpoint(
                host, ws_port, static_dir=WEB, static_files={"/trionano.js": trionano.BROWSER_CLIENT}
            )
        )
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        try:
            ports: list[int] = await nursery.start(functools.partial(node.run, bridge, *endpoints))
        except NodeStopping as exc:  # stopped (Ctrl-C) before it joined the cluster
            logger.info("%s", exc)
            return
        trionano.tune_gc()  # a long-running server's collector settings, as run_node has them
        if ports:
            logger.info("liveroom page: http://%s:%d/", host, ports[0])
        if push_port is not None:
            await nursery.start(functools.partial(serve_push_api, node, host, push_port, token=token, shutdown=stopped))
        logger.info("liveroom %s ready", node.config.label)
        await node.server.wait_stopped()
        stopped.set()


def commands(
    *,
    master: str,
    gates: list[tuple[str, int]],
    push_port: int,
    token: str | None = None,
    rpc_timeout: float = 5.0,
    push_queue: int = 1024,
    push_bytes: int = 16 * 1024 * 1024,
    merge_window: float | None = None,
) -> dict[str, list[str]]:
    """The launcher's processes: the logic node (the master, on ``master``, with the push API
    on ``push_port``) and one gate per (service address, WebSocket port), which hold its
    viewers' comments for ``merge_window`` seconds to send them in one write (None: at once)."""
    me = [sys.executable, "-m", "examples.liveroom"]
    common = ["--rpc-timeout", str(rpc_timeout), "--push-queue", str(push_queue), "--push-bytes", str(push_bytes)]
    merging = ["--merge-window", str(merge_window)] if merge_window else []
    logic = [*me, "logic", "--listen", master, "--push-port", str(push_port), *common]
    if token is not None:
        logic += ["--token", token]
    result = {"logic": logic}
    for number, (listen, ws_port) in enumerate(gates, 1):
        result[f"gate{number}"] = [*me, "gate", "--listen", listen, "--ws-port", str(ws_port), *common, *merging]
    return result
