"""A bot for the tutorial's room game, on :mod:`trionano.client`: it joins, says hello, prints
what it hears, plays a few rounds and leaves. ``python docs/tutorial/bot.py --name ada``."""

from __future__ import annotations

import argparse
import functools
from typing import Any

import trio

from trionano.client import open_client


# --8<-- [start:play]
async def play(host: str, port: int, name: str, *, rounds: int = 3) -> list[Any]:
    """Join as ``name``, say hello, and return the next ``rounds`` results."""
    async with open_client(host, port) as client:
        client.on("onChat", lambda chat: print(f"[{name}] {chat['name']}: {chat['content']}"))
        welcome = await client.request("room.join", {"name": name})
        if "code" in welcome:  # an error Response: {"code": ..., "message": ...}
            raise RuntimeError(f"could not join: {welcome['message']}")
        print(f"[{name}] joined as uid {welcome['uid']} with {welcome['players']}")
        await client.notify("room.say", {"content": f"hello, I am {name}"})
        results = []
        for _ in range(rounds):
            result = await client.receive_push("onRound")
            print(f"[{name}] round {result['round']}: {result['rolls']}, won by {result['winner']}")
            results.append(result)
        return results  # leaving the block closes the connection: the room says onLeave


# --8<-- [end:play]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a bot for the tutorial's room game")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3250)
    parser.add_argument("--name", default="bot")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(functools.partial(play, args.host, args.port, args.name, rounds=args.rounds))
