"""The pushing page's example: a price ticker that pushes to its subscribers.

Routes: ``ticker.subscribe`` (Request ``{"symbols": [...]}``) and ``ticker.next_tick``
(Request, answered at the next tick). Pushes: ``onPrice`` ``{"symbol": ..., "price": ...}``.
Run it with ``python docs/tutorial/ticker.py`` (TCP port 3250).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
import trio

import trionano
from trionano import Component, Components, Config, DeferredResponse, Group, HandlerError, Session, SessionKey

SYMBOLS = SessionKey[frozenset[str]]("symbols")
# --8<-- [start:routes]
ROUTES = trionano.wire.RouteDict({"ticker.subscribe": 1, "ticker.next_tick": 2, "onPrice": 3})
# --8<-- [end:routes]


@attrs.frozen
class Subscribe:
    symbols: list[str]


def subscribed_to(symbol: str) -> Callable[[Session], bool]:
    """A group filter: the sessions subscribed to ``symbol``."""
    return lambda session: symbol in session.get(SYMBOLS, frozenset())


# --8<-- [start:ticker]
class Ticker(Component):
    def __init__(self, *, interval: float = 1.0, seed: int | None = None) -> None:
        self.interval = interval
        self.prices = {"ACME": 100.0, "INIT": 42.0}
        self.subscribers = Group("subscribers")
        self.waiting: list[DeferredResponse] = []  # next_tick requests, answered by tick()
        self.ticks = 0
        self.random = random.Random(seed)

    def after_init(self) -> None:
        self.server.scheduler.every(self.interval, self.tick)

    def subscribe(self, session: Session, msg: Subscribe) -> dict[str, Any]:
        unknown = set(msg.symbols) - self.prices.keys()
        if unknown:
            raise HandlerError(f"unknown symbols: {sorted(unknown)}", code=404)
        session[SYMBOLS] = frozenset(msg.symbols)
        if session not in self.subscribers:
            self.subscribers.add(session)
        for symbol in sorted(msg.symbols):  # the current prices at once, ahead of the Response
            session.push("onPrice", {"symbol": symbol, "price": self.prices[symbol]})
        return {"subscribed": sorted(msg.symbols)}

    def next_tick(self, session: Session, msg: dict[str, Any]) -> None:
        self.waiting.append(session.defer())  # returning None is fine: this Request is promised

    def tick(self) -> None:
        self.ticks += 1
        for symbol in self.prices:
            price = self.prices[symbol] = round(self.prices[symbol] * self.random.uniform(0.99, 1.01), 2)
            self.subscribers.multicast("onPrice", {"symbol": symbol, "price": price}, subscribed_to(symbol))
        for answer in self.waiting:
            answer.respond({"tick": self.ticks})  # False if that client has gone meanwhile
        self.waiting.clear()


# --8<-- [end:ticker]


def build(*, interval: float = 1.0) -> trionano.Server:
    """The ticker's server, not running yet."""
    components = Components()
    components.register(Ticker(interval=interval), name="ticker")
    return trionano.Server(components, Config(routes=ROUTES, timer_precision=min(1.0, interval / 4)))


async def main(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    interval: float = 1.0,
    task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ticker over TCP until SIGINT or SIGTERM; ``task_status`` gets the bound port."""
    endpoint = trionano.TCPEndpoint(host, port)
    await trionano.serve_until_signalled(build(interval=interval), endpoint, task_status=task_status)


if __name__ == "__main__":
    trionano.run(build(), trionano.TCPEndpoint("127.0.0.1", 3250))
