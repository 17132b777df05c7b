"""README's server sample runs as shown (with a free port, driven by the client)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio

from trionano import Server, serve_tcp
from trionano.client import open_client

README = Path(__file__).resolve().parent.parent / "README.md"


async def test_readme_server_sample() -> None:
    code = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)[0]
    assert "trionano.run(Server(components), TCPEndpoint(port=3250))" in code
    namespace: dict[str, Any] = {"__name__": "readme"}  # not "__main__": the sample does not start serving
    exec(compile(code, "README.md", "exec"), namespace)
    server = Server(namespace["components"])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp, server, 0)
        async with open_client("127.0.0.1", port) as a, open_client("127.0.0.1", port) as b:
            assert await a.request("room.join") == {"members": 1}
            assert await b.request("room.join") == {"members": 2}
            await a.notify("room.say", {"text": "hi"})
            assert await b.receive_push("onSay") == {"text": "hi"}
        server.shutdown()
