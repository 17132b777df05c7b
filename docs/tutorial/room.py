"""The tutorial's room game: players join a room, chat, and roll dice every round.

Routes: ``room.join`` (Request ``{"name": ...}``) and ``room.say`` (Notify ``{"content":
...}``). Pushes: ``onJoin``, ``onChat``, ``onRound`` and ``onLeave``. Run it with ``python
docs/tutorial/room.py`` (TCP port 3250) and play with ``python docs/tutorial/bot.py``.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import attrs
import trio

import trionano
from trionano import Component, Components, Config, Group, HandlerError, Session, SessionKey

logger = logging.getLogger("tutorial.room")


# --8<-- [start:messages]
@attrs.frozen
class Join:
    name: str


@attrs.frozen
class Say:
    content: str


NAME = SessionKey[str]("name")  # the player's name, stored on their session
# --8<-- [end:messages]


# --8<-- [start:room]
class Room(Component):
    """Registered as service ``room``: its handlers are the routes ``room.join`` and
    ``room.say``."""

    def __init__(self, *, round_seconds: float = 5.0, seed: int | None = None) -> None:
        self.players = Group("room")
        self.round_seconds = round_seconds
        self.rounds = 0
        self.scores: dict[int, int] = {}  # uid -> rounds won
        self.dice = random.Random(seed)

    # --8<-- [end:room]
    # --8<-- [start:join]
    def join(self, session: Session, msg: Join) -> dict[str, Any]:
        if session in self.players:
            raise HandlerError("you are in the room already", code=409)
        name = msg.name.strip()
        if not name:
            raise HandlerError("a name, please", code=400)
        session.bind(session.id)  # the uid: the session id is unique enough here
        session[NAME] = name
        self.players.broadcast("onJoin", {"uid": session.uid, "name": name})  # to the others
        self.players.add(session)
        self.scores[session.uid] = 0
        return {"uid": session.uid, "players": [player[NAME] for player in self.players.sessions()]}

    # --8<-- [end:join]
    # --8<-- [start:say]
    def say(self, session: Session, msg: Say) -> None:
        if session not in self.players:
            raise HandlerError("join the room first")
        self.players.broadcast("onChat", {"name": session[NAME], "content": msg.content})

    # --8<-- [end:say]
    # --8<-- [start:timer]
    def after_init(self) -> None:
        self.server.scheduler.every(self.round_seconds, self.play_round)
        self.server.on_session_closed(self.leave)

    def play_round(self) -> None:
        players = self.players.sessions()
        if not players:
            return
        self.rounds += 1
        rolls = [(player, self.dice.randint(1, 6)) for player in players]
        best = max(roll for _, roll in rolls)
        winners = [player for player, roll in rolls if roll == best]
        winner = winners[0] if len(winners) == 1 else None  # a tie scores for nobody
        if winner is not None:
            self.scores[winner.uid] += 1
        logger.info("round %d: %d players", self.rounds, len(players))
        self.players.broadcast(
            "onRound",
            {
                "round": self.rounds,
                "rolls": [{"name": player[NAME], "roll": roll} for player, roll in rolls],
                "winner": None if winner is None else winner[NAME],
            },
        )

    # --8<-- [end:timer]
    # --8<-- [start:leave]
    def leave(self, session: Session) -> None:
        if NAME not in session:  # connected, never joined
            return
        self.players.leave(session)
        score = self.scores.pop(session.uid, 0)
        self.players.broadcast("onLeave", {"name": session[NAME], "score": score})

    # --8<-- [end:leave]


# --8<-- [start:build]
def build(*, round_seconds: float = 5.0, seed: int | None = None) -> trionano.Server:
    """The game's server, not running yet."""
    components = Components()
    components.register(Room(round_seconds=round_seconds, seed=seed), name="room")
    # timers fire on the scheduler's tick: make it finer than a round
    config = Config(timer_precision=min(1.0, round_seconds / 4))
    return trionano.Server(components, config)


async def main(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    round_seconds: float = 5.0,
    task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the game over TCP until SIGINT or SIGTERM; ``task_status`` gets the bound port."""
    server = build(round_seconds=round_seconds)
    endpoint = trionano.TCPEndpoint(host, port)
    await trionano.serve_until_signalled(server, endpoint, task_status=task_status)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    trionano.run(build(), trionano.TCPEndpoint("127.0.0.1", 3250))
# --8<-- [end:build]
