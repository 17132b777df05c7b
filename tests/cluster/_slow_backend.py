"""A backend for the fast path's multi-process tests: ``python -m tests.cluster._slow_backend
--listen ADDRESS --master ADDRESS --heartbeat SECONDS`` hosts ``Slow.wait`` (answers after a
minute) and ``Slow.ping`` (at once); logs "up:" once registered."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import trio

from trionano import Component, Components, Config, Session
from trionano.cluster import ClusterConfig, Node, run_node


class Slow(Component):
    async def wait(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep(60)
        return {"waited": True}

    def ping(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--heartbeat", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    components = Components()
    components.register(Slow(), name="Slow")
    config = ClusterConfig(service_address=args.listen, master_address=args.master, heartbeat=args.heartbeat)
    run_node(Node(components, config, Config(heartbeat=0)))


if __name__ == "__main__":
    main()
