"""A visitor of examples/cluster's chat, through its gate: ``python
docs/tutorial/cluster_client.py --name ada`` once ``python -m examples.cluster local`` runs."""

from __future__ import annotations

import argparse
import functools
from typing import Any

import trio

from trionano.client import open_websocket_client


# --8<-- [start:visit]
async def visit(url: str, name: str, say: str) -> dict[str, Any]:
    """Log in through the gate at ``url``, say something, and return what came back."""
    async with open_websocket_client(url) as client:
        await client.request("BindService.Login", {"nickname": name})  # the gate's own service
        members = await client.receive_push("onMembers")  # from chat, once it has seated us
        await client.notify("RoomService.SyncMessage", {"name": name, "content": say})  # forwarded
        heard = await client.receive_push("onMessage")  # broadcast by the chat backend
        balance = await client.receive_push("onBalance")  # the master again, after chat's RPC
        return {"members": members, "heard": heard, "balance": balance}


# --8<-- [end:visit]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="visit examples/cluster's chat")
    parser.add_argument("--url", default="ws://127.0.0.1:34590/nano")
    parser.add_argument("--name", default="visitor")
    parser.add_argument("--say", default="hello")
    args = parser.parse_args()
    print(trio.run(functools.partial(visit, args.url, args.name, args.say)))
