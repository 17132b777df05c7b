"""The documentation cannot rot: the tutorial's programs run as the tutorial says, the cluster
page quotes examples/cluster verbatim, and every public callable has a docstring and a place
in the API reference.

``python -m tests.test_docs`` lists the public callables that have no docstring.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trustme

from examples import wire_tour
from trionano import wire
from trionano.client import open_client
from trionano.testing import open_test_server

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: The public modules: what ``trionano`` exports, and these.
PUBLIC_MODULES = (
    "trionano",
    "trionano.wire",
    "trionano.client",
    "trionano.testing",
    "trionano.nursery_scheduler",
    "trionano.cluster",
    "trionano.cluster.push_api",
)


def load(path: Path) -> ModuleType:
    """A tutorial program as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"tutorial_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the tutorial ---------------------------------------------------------------------------

room = load(DOCS / "tutorial" / "room.py")
bot = load(DOCS / "tutorial" / "bot.py")
ticker = load(DOCS / "tutorial" / "ticker.py")
cluster_client = load(DOCS / "tutorial" / "cluster_client.py")


# --8<-- [start:testing]
async def test_players_hear_each_other() -> None:
    server = room.build(round_seconds=60)
    async with open_test_server(server) as running, running.connect() as ada, running.connect() as bob:
        assert await ada.request("room.join", {"name": "ada"}) == {"uid": 1, "players": ["ada"]}
        assert await bob.request("room.join", {"name": "bob"}) == {"uid": 2, "players": ["ada", "bob"]}
        assert await bob.request("room.join", {}) == {
            "code": 400,
            "message": "deserialize to Join failed: required field missing @ $.name",
        }
        await bob.notify("room.say", {"content": "hi"})
        assert await ada.receive_push("onChat") == {"name": "bob", "content": "hi"}


# --8<-- [end:testing]


async def test_the_tutorials_room_game_plays_as_the_tutorial_says() -> None:
    async with trio.open_nursery() as nursery:
        [port] = await nursery.start(lambda task_status: room.main(port=0, round_seconds=0.2, task_status=task_status))
        with trio.fail_after(60):
            async with open_client("127.0.0.1", port) as ada:
                assert await ada.request("room.join", {"name": "ada"}) == {"uid": 1, "players": ["ada"]}
                assert await ada.request("room.join", {"name": "ada"}) == {
                    "code": 409,
                    "message": "you are in the room already",
                }
                async with open_client("127.0.0.1", port) as bob:
                    assert await bob.request("room.join", {"name": "bob"}) == {"uid": 2, "players": ["ada", "bob"]}
                    assert await ada.receive_push("onJoin") == {"uid": 2, "name": "bob"}
                    await ada.notify("room.say", {"content": "hi bob"})
                    for client in (ada, bob):
                        assert await client.receive_push("onChat") == {"name": "ada", "content": "hi bob"}
                    while len((result := await bob.receive_push("onRound"))["rolls"]) < 2:
                        pass  # a round before bob joined, then one for both
                    assert [roll["name"] for roll in result["rolls"]] == ["ada", "bob"]
                    assert all(1 <= roll["roll"] <= 6 for roll in result["rolls"])
                    assert result["winner"] in ("ada", "bob", None)
                leave = await ada.receive_push("onLeave")
                assert leave["name"] == "bob"
                assert leave["score"] in range(result["round"] + 1)
                # the bot, as `python docs/tutorial/bot.py` runs it
                results = await bot.play("127.0.0.1", port, "cy", rounds=2)
                assert [sorted(roll["name"] for roll in r["rolls"]) for r in results] == [["ada", "cy"]] * 2
                assert results[1]["round"] == results[0]["round"] + 1
                assert await ada.receive_push("onJoin") == {"uid": 3, "name": "cy"}
                assert await ada.receive_push("onChat") == {"name": "cy", "content": "hello, I am cy"}
                assert (await ada.receive_push("onLeave"))["name"] == "cy"
        nursery.cancel_scope.cancel()


async def test_the_ticker_pushes_as_the_pushing_page_says() -> None:
    async with trio.open_nursery() as nursery:
        [port] = await nursery.start(lambda task_status: ticker.main(port=0, interval=0.2, task_status=task_status))
        with trio.fail_after(60):
            async with open_client("127.0.0.1", port) as ada, open_client("127.0.0.1", port) as bob:
                assert await ada.request("ticker.subscribe", {"symbols": ["NOPE"]}) == {
                    "code": 404,
                    "message": "unknown symbols: ['NOPE']",
                }
                assert await ada.request("ticker.subscribe", {"symbols": ["ACME"]}) == {"subscribed": ["ACME"]}
                assert ada.handshake is not None
                assert ada.handshake.dictionary == ticker.ROUTES  # announced, and used from now on
                assert ada.pending_pushes("onPrice") == 1  # pushed before the Response, so here already
                assert await ada.receive_push("onPrice") == {"symbol": "ACME", "price": 100.0}
                assert await bob.request("ticker.subscribe", {"symbols": ["ACME", "INIT"]}) == {
                    "subscribed": ["ACME", "INIT"]
                }
                tick = (await ada.request("ticker.next_tick"))["tick"]
                assert tick >= 1
                assert (await ada.request("ticker.next_tick"))["tick"] == tick + 1
                prices = [await ada.receive_push("onPrice") for _ in range(2)]
                assert {price["symbol"] for price in prices} == {"ACME"}
                symbols = [(await bob.receive_push("onPrice"))["symbol"] for _ in range(6)]
                assert symbols[:2] == ["ACME", "INIT"]
                assert set(symbols[2:]) == {"ACME", "INIT"}
        nursery.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_cluster_pages_commands_and_client(tmp_path: Path) -> None:
    """The three commands of the cluster page, one process each, visited by its client."""
    master, gate = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    commands = {
        "master": ["master", "--listen", master],
        "chat": ["chat", "--listen", f"127.0.0.1:{free_port()}", "--master", master],
        "gate": ["gate", "--listen", f"127.0.0.1:{free_port()}", "--gate-address", gate, "--master", master],
    }
    processes = []
    try:
        with trio.fail_after(180):  # three process starts: slow on a loaded machine
            for name, arguments in commands.items():
                log = tmp_path / f"{name}.log"
                with log.open("wb") as out:
                    # the page's keepalive (30 s): at 0.5 s a loaded machine's 2 s stall of a
                    # node had the master evict it, or 1.25 s of the client had the gate kick it
                    command = [sys.executable, "-m", "examples.cluster", *arguments]
                    processes.append(await trio.lowlevel.open_process(command, cwd=ROOT, stdout=out, stderr=out))
                while "up:" not in log.read_text(errors="replace"):
                    assert processes[-1].poll() is None, log.read_text(errors="replace")
                    await trio.sleep(0.05)
            url = f"ws://{gate}/nano"
            # no warm-up: chat pushes onMembers once it has seated the user, so the client's
            # first message (gate -> chat) cannot overtake the master's JoinRoom (master -> chat)
            ada = await cluster_client.visit(url, "ada", "hi ✓")
            assert ada["members"] == {"members": ""}
            assert ada["heard"] == {"name": "ada", "content": "hi ✓"}
            assert ada["balance"] == {"currentBalance": 999}
            assert (await cluster_client.visit(url, "bob", "yo"))["heard"] == {"name": "bob", "content": "yo"}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            for process in processes:
                await process.wait()
        for process in processes:
            if process.returncode is None:
                process.kill()


def run_python_blocks(page: str) -> dict[str, Any]:
    """Run the page's Python blocks in order, in one namespace; returns it."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), re.S)
    assert blocks
    namespace: dict[str, Any] = {"__name__": page}
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), namespace)
    return namespace


def test_the_operations_pages_python_blocks_run(tmp_path: Path) -> None:
    namespace = run_python_blocks("operations.md")
    namespace["report"](room.build())
    assert namespace["testing"].rate_limit is None
    authority = trustme.CA()
    certificate = authority.issue_cert("game.example.com")
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    tcp, websocket = namespace["tls_endpoints"](str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert tcp.ssl_context is not None
    assert websocket.ssl_context is tcp.ssl_context


def test_the_protocol_pages_code_and_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run_python_blocks("protocol.md")
    assert namespace["server"].state is wire.State.CLOSED
    page = (DOCS / "protocol.md").read_text(encoding="utf-8")
    [transcript] = re.findall(r'```text title="python -m examples.wire_tour"\n(.*?)```', page, re.S)
    wire_tour.main()
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert transcript.splitlines() == printed[: len(transcript.splitlines())]


def test_the_cluster_page_quotes_examples_cluster_verbatim() -> None:
    page = (DOCS / "tutorial" / "cluster.md").read_text(encoding="utf-8")
    source = (ROOT / "examples" / "cluster" / "__init__.py").read_text(encoding="utf-8")
    quoted = re.findall(r'```python title="examples/cluster/__init__.py"\n(.*?)```', page, re.S)
    assert quoted
    for block in quoted:
        assert block in source, block


# -- the API reference ----------------------------------------------------------------------


def public_names(module: ModuleType) -> list[str]:
    names: list[str] | None = getattr(module, "__all__", None)
    if names is None:  # `from ._x import Y as Y`: every public name that is trionano's own
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not inspect.ismodule(value)
            and ((getattr(value, "__module__", "") or "").startswith("trionano") or name.isupper())
        ]
    return names


def docstring(obj: Any) -> str | None:
    doc: str | None = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc and doc.startswith(obj.__name__ + "("):
        return None  # the signature dataclasses write when there is no docstring
    return doc if doc and doc.strip() else None


def public_callables() -> Iterator[tuple[str, str | None]]:
    """(dotted name, docstring) of every public function, class, and method or property a
    public class defines itself."""
    seen: set[int] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module):
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
                continue
            if not (getattr(obj, "__module__", "") or "").startswith("trionano"):
                continue
            seen.add(id(obj))
            yield f"{module_name}.{name}", docstring(obj)
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(value, (staticmethod, classmethod)):
                        value = value.__func__
                    if isinstance(value, property):
                        value = value.fget
                    if inspect.isfunction(value):
                        yield f"{module_name}.{name}.{attr}", docstring(value)


#: Undocumented: the betterproto class generated from proto/cluster.proto (nano's, unchanged).
CLUSTER_UNDOCUMENTED = frozenset({"trionano.cluster.MemberInfo"})


def undocumented() -> list[str]:
    return [name for name, doc in public_callables() if doc is None]


def test_every_public_callable_has_a_docstring() -> None:
    assert set(undocumented()) <= CLUSTER_UNDOCUMENTED


def test_the_reference_renders_every_public_name() -> None:
    """A module's page renders it whole (``::: trionano.wire``), or names each object."""
    pages = "\n".join(path.read_text(encoding="utf-8") for path in (DOCS / "reference").glob("*.md"))
    directives = set(re.findall(r"^::: ([\w.]+)\s*$", pages, re.M))
    for module_name in PUBLIC_MODULES:
        if module_name in directives:
            continue
        module = importlib.import_module(module_name)
        missing = [name for name in public_names(module) if f"{module_name}.{name}" not in directives]
        assert not missing, f"docs/reference does not render {module_name}: {missing}"


if __name__ == "__main__":
    names = undocumented()
    print("\n".join(names))
    print(f"{len(names)} of {sum(1 for _ in public_callables())} public callables have no docstring")


def test_snippet_includes_are_written_as_the_extension_reads_them() -> None:
    # a formatter once rewrote "--8<--" as "--8 < --", which renders as text, not code
    for page in DOCS.rglob("*.md"):
        assert "--8 <" not in page.read_text(encoding="utf-8"), page
