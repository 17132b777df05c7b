"""The ``trionano`` command line against a real server on loopback TCP and WebSocket: scripted
mode and the one-shot helpers run :func:`trionano.cli.main` in a worker thread (its own
``trio.run``); the REPL runs as ``python -m trionano`` on a real pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.runtime.apps import echo_components
from trionano import (
    Component,
    Config,
    HandshakeRejected,
    Server,
    Session,
    TCPEndpoint,
    WebSocketEndpoint,
    wire,
)
from trionano.cli import main
from trionano.client import open_client
from trionano.wire import Handshake

REPO = Path(__file__).resolve().parents[1]
DICTIONARY = wire.RouteDict({"echo.json": 1, "echo.point": 2, "echo.join": 3, "echo.shout": 4, "onShout": 5})


class Admin(Component):
    def kick(self, session: Session, msg: dict[str, Any]) -> None:
        session.kick(msg.get("reason", ""))

    def close(self, session: Session, msg: dict[str, Any]) -> None:
        session.close()


class Servers:
    def __init__(self, tcp: int, ws: int, users: list[Any]) -> None:
        self.tcp = f"tcp://127.0.0.1:{tcp}"
        self.ws = f"ws://127.0.0.1:{ws}/nano"
        self.tcp_port = tcp
        self.users = users  # each handshake's user data


@asynccontextmanager
async def serving() -> AsyncIterator[Servers]:
    """The echo components and Admin, over TCP and WebSocket, with a route dictionary; a
    handshake whose user data is {"refuse": true} is refused."""
    users: list[Any] = []

    def validate(session: Session, handshake: Handshake) -> None:
        users.append(handshake.user)
        if handshake.user == {"refuse": True}:
            raise HandshakeRejected("refused", code=501)

    components = echo_components()
    components.register(Admin(), name="admin")
    server = Server(components, Config(routes=DICTIONARY, handshake_validator=validate))
    async with trio.open_nursery() as nursery:
        endpoints = TCPEndpoint("127.0.0.1"), WebSocketEndpoint("127.0.0.1", path="/nano")
        tcp, ws = await nursery.start(lambda task_status: server.serve(*endpoints, task_status=task_status))
        try:
            yield Servers(tcp, ws, users)
        finally:
            server.shutdown()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``trionano ARGV`` in a worker thread: (status, stdout, stderr)."""
    status = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def script(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, text: str, *argv: str
) -> tuple[int, list[dict[str, Any]]]:
    """``trionano run - ARGV`` with ``text`` on stdin: (status, the JSON lines)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    status, out, _ = await cli(capsys, "run", "-", *argv)
    return status, [json.loads(line) for line in out.splitlines()]


# -- scripted mode ---------------------------------------------------------------------------


async def test_a_script_requests_notifies_sees_pushes_and_stops_when_kicked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = """\
        # comments and blank lines are skipped

        request echo.point {"x": 1, "y": 2}
        expect {"x": 2, "y": 1}
        request echo.join
        notify echo.tell {"n": 1}
        wait onTold 5
        expect {"n": 1}
        request echo.refuse
        request echo.raw
        routes
        notify admin.kick {"reason": "bye"}
        wait nothing.ever 5
        request echo.json
    """
    async with serving() as servers:
        status, events = await script(capsys, monkeypatch, text, "--connect", servers.tcp, "--user", '{"id": 7}')
    assert status == 1
    assert servers.users == [{"id": 7}]
    assert events[0] == {"event": "connected", "url": servers.tcp, "heartbeat": 30.0, "routes": len(DICTIONARY)}
    responses = [(event["route"], event["body"]) for event in events if event["event"] == "response"]
    assert responses == [
        ("echo.point", {"x": 2, "y": 1}),
        ("echo.join", {"members": 1}),
        ("echo.refuse", {"code": 403, "message": "not allowed"}),  # without --strict, not a failure
        ("echo.raw", {"$bytes": "}{"}),
    ]
    assert {"event": "push", "route": "onTold", "body": {"n": 1}} in events
    assert {"event": "routes", "routes": dict(DICTIONARY)} in events
    assert {"event": "kicked", "reason": "bye"} in events
    # the kick ends the wait: its line is the failure
    assert events[-1] == {
        "event": "error",
        "line": 13,
        "command": "wait nothing.ever 5",
        "error": "wait nothing.ever: not connected (kicked by the server: bye)",
    }


async def test_a_script_over_websocket_sees_the_server_close(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving() as servers:
        text = f'connect {servers.ws} --user {{"name": "ws"}}\nrequest echo.json {{"a": [1]}}\nnotify admin.close\n'
        status, events = await script(capsys, monkeypatch, text + "sleep 5\nrequest echo.json\n")
    assert servers.users == [{"name": "ws"}]
    assert status == 1
    assert {"event": "response", "route": "echo.json", "body": {"a": [1]}} in events
    assert {"event": "closed", "reason": "the server closed the connection"} in events
    assert events[-1]["error"] == "not connected (connection closed: the server closed the connection)"


async def test_a_script_watches_and_unwatches_pushes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = """
        request echo.join
        unwatch *
        notify echo.shout {"quiet": 1}
        wait onShout 5
        expect {"quiet": 1}
        watch on*
        notify echo.shout {"loud": 1}
        wait onShout 5
        disconnect
    """
    async with serving() as servers:
        status, events = await script(capsys, monkeypatch, text, "--connect", servers.tcp)
    assert status == 0, events
    assert [event["body"] for event in events if event["event"] == "push"] == [{"loud": 1}]
    assert events[-1] == {"event": "disconnected"}


@pytest.mark.parametrize(
    ("text", "error", "context"),
    [
        ("frobnicate now", "unknown command 'frobnicate' (help lists them)", None),
        ('request echo.json {"a": 1,}', "bad JSON at column 9: Expecting property name enclosed in double quotes",
         '  {"a": 1,}\n          ^'),
        ("request", "usage: request ROUTE [JSON]", None),
        ("expect {}", "expect: no Response or push to compare yet", None),
        ("request echo.json {}\nexpect {\"b\": 2}", 'expected {"b": 2}, got {}', None),
        ("wait onNothing 0.05", "wait onNothing: no push within 0.05 s", None),
        ("sleep soon", "not a number of seconds: 'soon'", None),
        ("connect udp://127.0.0.1:1", "unsupported URL scheme 'udp' in 'udp://127.0.0.1:1': use tcp, tls, ws or wss",
         None),
        ("connect tcp://127.0.0.1:1", "cannot connect to tcp://127.0.0.1:1: all attempts to connect to 127.0.0.1:1 "
         "failed (Connection refused)", None),
        ('connect {tcp} --user {"refuse": true}', "cannot connect to {tcp}: handshake refused with code 501", None),
        ("connect {ws}x", "cannot connect to {ws}x: WebSocket upgrade refused with HTTP status 404", None),
        ("disconnect\nrequest echo.json", "not connected (connect URL)", None),
    ],
)  # fmt: skip
async def test_a_script_stops_at_the_first_failure_and_says_why(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    error: str,
    context: str | None,
) -> None:
    async with serving() as servers:
        for name, url in {"{tcp}": servers.tcp, "{ws}": servers.ws}.items():
            text, error = text.replace(name, url), error.replace(name, url)
        status, events = await script(capsys, monkeypatch, f"{text}\nrequest echo.json\n", "-c", servers.tcp)
    assert status == 1
    failure = events[-1]
    assert failure["event"] == "error"
    assert failure["line"] == text.count("\n") + 1  # the last line of `text`, not the request after it
    assert failure["error"] == error
    assert failure.get("context") == context


async def test_strict_makes_an_error_response_a_failure(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving() as servers:
        status, events = await script(capsys, monkeypatch, "request echo.refuse\n", "-c", servers.tcp, "--strict")
    assert status == 1
    assert events[-1]["error"] == "request echo.refuse: error response with code 403"


async def test_help_lists_every_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    status, events = await script(capsys, monkeypatch, "help\nhelp wait\nquit\nfrobnicate\n")
    assert status == 0  # quit: the rest is not run
    for command in ("connect URL", "request ROUTE", "notify ROUTE", "watch", "unwatch", "routes", "disconnect"):
        assert command in events[0]["text"]
    assert events[1]["text"].startswith("wait PATTERN [SECONDS]")
    with pytest.raises(SystemExit) as exc_info:
        main(["--help"])
    assert exc_info.value.code == 0
    out = capsys.readouterr().out
    for subcommand in ("repl", "run", "request", "routes", "bench"):
        assert subcommand in out


# -- one-shot helpers ------------------------------------------------------------------------


async def test_one_shot_request_over_tcp_and_websocket(capsys: pytest.CaptureFixture[str]) -> None:
    async with serving() as servers:
        answer = await cli(capsys, "request", servers.tcp, "echo.point", '{"x": 3, "y": 4}')
        assert answer == (0, '{"x": 4, "y": 3}\n', "")
        assert await cli(capsys, "request", servers.ws, "echo.json") == (0, "{}\n", "")
        assert await cli(capsys, "request", f"127.0.0.1:{servers.tcp_port}", "echo.refuse", "--strict") == (
            1,
            '{"code": 403, "message": "not allowed"}\n',
            "",
        )


async def test_one_shot_request_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(["request", "tcp://127.0.0.1:1", "echo.json", "{'a': 1}"])
    assert exc_info.value.code == 2
    assert "bad JSON at column 2: Expecting property name" in capsys.readouterr().err
    assert main(["request", "tcp://127.0.0.1", "echo.json"]) == 1
    assert "needs a host and a port" in capsys.readouterr().err


async def test_routes_prints_the_handshake_dictionary(capsys: pytest.CaptureFixture[str]) -> None:
    async with serving() as servers:
        status, out, _ = await cli(capsys, "routes", servers.ws)
    assert status == 0
    assert json.loads(out) == dict(DICTIONARY)


async def test_bench_reports_throughput_and_latency(capsys: pytest.CaptureFixture[str]) -> None:
    async with serving() as servers:
        status, out, _ = await cli(
            capsys, "bench", servers.tcp, "echo.json", '{"a": 1}', "--connections", "2", "--seconds", "1", "--json"
        )
        assert status == 0
        result = json.loads(out)
        assert result["connections"] == 2
        assert result["requests"] > 0
        assert result["rps"] > 0
        assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max"}
        status, out, _ = await cli(capsys, "bench", servers.ws, "echo.json", "-c", "1", "-s", "0.2")
        assert status == 0
        assert "req/s" in out
        assert "latency ms: p50" in out
        status, out, err = await cli(capsys, "bench", servers.tcp, "admin.kick", '{"reason": "no load"}', "-c", "2")
    assert (status, out, err) == (1, "", "trionano: kicked by the server: no load\n")


# -- the REPL on a pseudo-terminal -----------------------------------------------------------


class Terminal:
    """The master side of a pseudo-terminal: what the program printed, searched in order."""

    def __init__(self, fd: int) -> None:
        self.stream = trio.lowlevel.FdStream(fd)
        self.seen = ""
        self.position = 0

    async def send(self, text: str) -> None:
        await self.stream.send_all(text.encode())

    async def expect(self, text: str, timeout: float = 60) -> None:  # noqa: ASYNC109
        """Wait until ``text`` appears after what was expected before."""
        with trio.move_on_after(timeout):
            while (found := self.seen.find(text, self.position)) < 0:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break  # the program ended
                self.seen += data.decode(errors="replace").replace("\r", "")
            else:
                self.position = found + len(text)
                return
        raise AssertionError(f"{text!r} not seen; the terminal shows:\n{self.seen[self.position :]}")


async def open_repl(home: Path, *argv: str) -> tuple[trio.Process, Terminal]:
    """``python -m trionano ARGV`` on a new pseudo-terminal, with ``home`` as its HOME."""
    controller, child = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home), "TERM": "dumb"}
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trionano", *argv], stdin=child, stdout=child, stderr=child, env=env
        )
    finally:
        os.close(child)
    return process, Terminal(controller)


async def test_the_repl_on_a_pseudo_terminal(tmp_path: Path) -> None:
    async with serving() as servers:
        process, terminal = await open_repl(tmp_path, "repl", servers.tcp)
        prompt = f"trionano[127.0.0.1:{servers.tcp_port}]> "
        try:
            await terminal.expect(f"connected to {servers.tcp} (heartbeat 30 s, 5 routes in its dictionary)")
            await terminal.expect(prompt)
            # Tab completes the command, then the route from the handshake's dictionary
            await terminal.send("requ\t")
            await terminal.expect("request ")
            await terminal.send("echo.poi\t")
            await terminal.expect("echo.point ")
            await terminal.send('{"x": 1, "y": 2}\r')
            await terminal.expect('{"x": 2, "y": 1}')
            await terminal.send("request echo.join\r")
            await terminal.expect('{"members": 1}')
            await terminal.expect(prompt)  # idle, waiting for a line
            async with open_client("127.0.0.1", servers.tcp_port) as other:
                await other.request("echo.join", {})
                await other.notify("echo.shout", {"hi": "there"})
                await terminal.expect('push onShout: {"hi": "there"}')
                await terminal.expect(prompt)  # redrawn under the push
            await terminal.send("request echo.json {oops}\r")
            await terminal.expect("error: bad JSON at column 2: Expecting property name enclosed in double quotes")
            await terminal.expect("  {oops}\n   ^")
            await terminal.send("quit\r")
            with trio.fail_after(60):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
            await terminal.stream.aclose()
    history = (tmp_path / ".trionano_history").read_text()
    assert "request echo.join" in history
    assert "quit" in history


async def test_the_repl_without_a_url_connects_later_and_leaves_on_end_of_file(tmp_path: Path) -> None:
    async with serving() as servers:
        process, terminal = await open_repl(tmp_path, "--no-history")  # no subcommand: the REPL
        try:
            await terminal.expect("trionano> ")
            await terminal.send("request echo.json\r")
            await terminal.expect("error: not connected (connect URL)")
            await terminal.send(f"connect {servers.ws}\r")
            await terminal.expect(f"trionano[127.0.0.1:{servers.ws.split(':')[2].split('/')[0]}]> ")
            await terminal.send('notify admin.kick {"reason": "enough"}\r')
            await terminal.expect("kicked by the server: enough")
            await terminal.send("\r")  # the prompt waiting for this line was printed while connected
            await terminal.expect("\ntrionano> ")
            await terminal.send("\x04")  # Ctrl-D
            with trio.fail_after(60):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
            await terminal.stream.aclose()
    assert not (tmp_path / ".trionano_history").exists()
