"""A backend for the freeze tests: ``python -m tests.cluster._seq_backend --listen ADDRESS
--master ADDRESS --heartbeat SECONDS --rpc-timeout SECONDS [--nofast]`` hosts ``Seq.note``
(a notify: records ``i`` per session, in the order taken), ``Seq.check`` (the session's
record), ``Seq.echo`` and ``Seq.hold`` (never answered); logs "up:" once registered."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from trionano import Component, Components, Config, Session
from trionano.cluster import ClusterConfig, Node, run_node


class Seq(Component):
    def __init__(self) -> None:
        self.notes: dict[int, list[int]] = {}
        self.held: list[Any] = []

    def note(self, session: Session, msg: dict[str, Any]) -> None:
        self.notes.setdefault(session.id, []).append(msg["i"])

    def check(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"notes": self.notes.get(session.id, [])}

    def hold(self, session: Session, msg: dict[str, Any]) -> None:
        self.held.append(session.defer())

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"echo": msg}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--heartbeat", type=float, default=30.0)
    parser.add_argument("--rpc-timeout", type=float, default=5.0)
    parser.add_argument("--nofast", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    components = Components()
    components.register(Seq(), name="Seq")
    config = ClusterConfig(
        service_address=args.listen,
        master_address=args.master,
        heartbeat=args.heartbeat,
        rpc_timeout=args.rpc_timeout,
        fast_path=not args.nofast,
    )
    run_node(Node(components, config, Config(heartbeat=0)))


if __name__ == "__main__":
    main()
