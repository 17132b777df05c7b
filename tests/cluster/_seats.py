"""A backend whose stand-ins are visible: ``python -m tests.cluster._seats --listen ADDRESS
--master ADDRESS --heartbeat SECONDS [--no-fast-path]`` hosts ``Seats.take`` (the session takes
a seat: answers its id) and ``Seats.push_all`` (a cluster push to every client of every
gate), logs ``seat freed <sid>`` when a session's close hooks run, and ``up:`` once
registered."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from trionano import Component, Components, Config, Session
from trionano.cluster import Audience, ClusterConfig, Node, run_node

logger = logging.getLogger("seats")


class Seats(Component):
    def __init__(self) -> None:
        self.node: Node | None = None
        self.taken: dict[int, int] = {}  # this node's session id -> the gate's (the remote address)

    def after_init(self) -> None:
        self.server.on_session_closed(self.freed)

    def freed(self, session: Session) -> None:
        if self.taken.pop(session.id, None) is not None:
            logger.info("seat freed %s", session.remote_address)

    def push_all(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.node is not None
        return {"gates": self.node.push("onAll", msg, Audience.all())}

    def take(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.taken[session.id] = session.id
        return {"seat": session.remote_address}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--heartbeat", type=float, default=30.0)
    parser.add_argument("--no-fast-path", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    components = Components()
    seats = Seats()
    components.register(seats, name="Seats")
    config = ClusterConfig(
        service_address=args.listen,
        master_address=args.master,
        heartbeat=args.heartbeat,
        fast_path=not args.no_fast_path,
    )
    seats.node = Node(components, config, Config(heartbeat=0))
    run_node(seats.node)


if __name__ == "__main__":
    main()
