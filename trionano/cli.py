"""``trionano``: a command-line client for trionano and nano (pomelo) servers, on :mod:`trionano.client`.

::

    trionano repl tcp://127.0.0.1:3250          an interactive client (also: trionano connect URL, or just trionano)
    trionano run script.txt [--connect URL]      the same commands from a file (- for stdin), JSON lines out
    trionano request URL ROUTE [JSON]            one request, its answer printed
    trionano routes URL                          the route dictionary the server sent in its handshake
    trionano bench URL ROUTE [JSON] -c 10 -s 5   closed-loop load: req/s and latency percentiles

URLs are ``tcp://host:port``, ``tls://host:port``, ``ws://host:port/path`` or ``wss://host:port/path``
(a bare ``host:port`` is TCP). Every subcommand takes ``--user JSON`` (the handshake's user data),
``--timeout SECONDS`` (connecting, handshaking and each request; default 10) and, for TLS,
``--cafile FILE`` or ``--insecure``.

Commands (in the REPL and in scripts; ``help`` lists them)::

    connect URL [--user JSON]   connect (and handshake), leaving any previous connection
    request ROUTE [JSON]        send a Request (body {} by default) and print the Response
    notify ROUTE [JSON]         send a Notify
    watch [PATTERN]             print pushes whose route matches PATTERN (fnmatch; * is the default);
                                without PATTERN, list the patterns
    unwatch [PATTERN]           stop printing pushes matching PATTERN (without PATTERN: all of them)
    wait PATTERN [SECONDS]      wait for a push matching PATTERN (received since connecting and not waited
                                for yet); fails after SECONDS (default: --timeout)
    expect JSON                 fail unless the last Response (or the push ``wait`` took) equals JSON
    sleep SECONDS               pause (pushes keep arriving)
    routes                      the server's route dictionary
    disconnect                  close the connection
    help [COMMAND]              this list
    quit                        leave (also: exit, Ctrl-D)

Lines starting with ``#`` are comments. Pushes print as they arrive, while the REPL waits at its
prompt; a kick prints the server's reason, a closed connection why it closed. The REPL keeps its
history in ``~/.trionano_history`` (``--history FILE``, ``--no-history``) and completes command
names and routes (the handshake's dictionary, and every route seen so far) with Tab, when Python
has readline.

Scripted mode (``run``) prints one JSON object a line: ``{"event": "response", "route": ..., "body":
...}``, ``push``, ``connected``, ``notified``, ``kicked``, ``closed``, ``routes``, and at the first
failure ``{"event": "error", "line": N, "error": ...}``, exiting 1. Failures: a connection that
cannot be made, a command that needs a connection when there is none (a kick or a close
themselves are only reported), a request that times out, a bad command or bad JSON, a failed
``wait`` or ``expect``, and with ``--strict`` an error Response (a JSON object whose ``code`` is
an integer of 400 or more: trionano's, nano's and pomelo's convention). A non-JSON body prints as
``{"$bytes": "text with \\x escapes"}``.

Exit status: 0 success, 1 failure, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import attrs
import trio
import trio_websocket

from . import __version__
from ._errors import HandshakeRejected, Kicked, TrionanoError
from .client import Client, open_stream_client, open_websocket_client

__all__ = ["main"]

_SCHEMES: Final = frozenset({"tcp", "tls", "ws", "wss"})
# with on_any taking every push, nothing is ever queued: receive_push on any route returns
# only by raising, when the connection is over (the way to wait for that)
_NO_ROUTE: Final = "\x00trionano.cli: connection over"
_WAIT_BACKLOG: Final = 10_000
_COMMANDS: Final = {
    "connect": ("connect URL [--user JSON]", "connect and handshake (tcp://, tls://, ws://, wss://)"),
    "request": ("request ROUTE [JSON]", "send a Request (body {} by default) and print the Response"),
    "notify": ("notify ROUTE [JSON]", "send a Notify"),
    "watch": ("watch [PATTERN]", "print pushes whose route matches PATTERN (fnmatch; * by default)"),
    "unwatch": ("unwatch [PATTERN]", "stop printing pushes matching PATTERN (without one: all)"),
    "wait": ("wait PATTERN [SECONDS]", "wait for a push whose route matches PATTERN"),
    "expect": ("expect JSON", "fail unless the last Response (or waited push) equals JSON"),
    "sleep": ("sleep SECONDS", "pause; pushes keep arriving"),
    "routes": ("routes", "the server's route dictionary (sent in the handshake)"),
    "disconnect": ("disconnect", "close the connection"),
    "help": ("help [COMMAND]", "list the commands"),
    "quit": ("quit", "leave (also: exit, Ctrl-D)"),
}
_ROUTE_COMMANDS: Final = frozenset({"request", "notify", "watch", "unwatch", "wait"})


class CommandError(Exception):
    """A command failed; ``str()`` says why, ``context`` (optional) shows where."""

    def __init__(self, message: str, context: str = "") -> None:
        super().__init__(message)
        self.context = context


# errors whose text says it all: anything else is shown with its type's name
_PLAIN_ERRORS: Final = (
    CommandError,
    OSError,
    TrionanoError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
)


# -- values ----------------------------------------------------------------------------------


def parse_json(text: str) -> Any:
    """JSON, or CommandError pointing at the problem."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        pointer = f"  {text}\n  {' ' * exc.pos}^" if "\n" not in text else ""
        raise CommandError(f"bad JSON at column {exc.colno}: {exc.msg}", pointer) from None


def _bytes_as_json(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).decode("utf-8", "backslashreplace")}
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=_bytes_as_json)


def is_error_response(answer: object) -> bool:
    """A JSON object whose ``code`` is an integer of 400 or more."""
    if not isinstance(answer, dict):
        return False
    code = answer.get("code")
    return isinstance(code, int) and not isinstance(code, bool) and code >= 400


def describe(exc: BaseException) -> str:
    """One line for an error out of the client, trio or the OS."""
    exc = _unwrap(exc)
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, HandshakeRejected):
        return f"handshake refused with code {exc.code}"
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return f"WebSocket upgrade refused with HTTP status {exc.status_code}"
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, _PLAIN_ERRORS):
        text = f"{type(exc).__name__}: {text}"
    if isinstance(exc, OSError) and exc.strerror is None:
        # trio's "all attempts to connect to H:P failed": the reasons are in its cause
        causes = exc.__cause__.exceptions if isinstance(exc.__cause__, BaseExceptionGroup) else ()
        reasons = sorted(
            {os.strerror(cause.errno) for cause in causes if isinstance(cause, OSError) and cause.errno is not None}
        )
        if reasons:
            text += f" ({', '.join(reasons)})"
    return text


@attrs.frozen
class Target:
    """Where to connect: ``scheme`` is tcp, tls, ws or wss."""

    scheme: str
    host: str
    port: int
    url: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(text: str) -> Target:
    """``tcp://host:port``, ``tls://host:port``, ``ws[s]://host[:port][/path]``, or ``host:port``
    (TCP). Raises CommandError."""
    url = text if "://" in text else f"tcp://{text}"
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise CommandError(f"unsupported URL scheme {parts.scheme!r} in {text!r}: use tcp, tls, ws or wss")
    try:
        port = parts.port
    except ValueError:
        raise CommandError(f"bad port in {text!r}") from None
    if port is None and parts.scheme in ("ws", "wss"):
        port = 443 if parts.scheme == "wss" else 80
    if not parts.hostname or port is None:
        raise CommandError(f"{text!r} needs a host and a port (tcp://host:port)")
    return Target(parts.scheme, parts.hostname, port, url)


@attrs.frozen(kw_only=True)
class Options:
    """What every connection of a run shares."""

    user: object = None
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = None


@asynccontextmanager
async def open_target(target: Target, options: Options, user: object = None) -> AsyncIterator[Client]:
    """A handshaken :class:`~trionano.client.Client` for ``target`` (``user`` overrides the
    options' handshake data)."""
    user = options.user if user is None else user
    context = options.ssl_context or ssl.create_default_context()
    if target.scheme in ("ws", "wss"):
        async with open_websocket_client(
            target.url,
            user=user,
            ssl_context=context if target.scheme == "wss" else None,
            handshake_timeout=options.timeout,
        ) as client:
            yield client
        return
    with trio.fail_after(options.timeout):
        if target.scheme == "tls":
            stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(target.host, target.port, ssl_context=context)
        else:
            stream = await trio.open_tcp_stream(target.host, target.port)
    async with open_stream_client(stream, user=user, handshake_timeout=options.timeout) as client:
        yield client


# -- output ----------------------------------------------------------------------------------


class Output:
    """Where events go: JSON lines (scripted mode), or text for people (the REPL). While the
    REPL waits at its prompt, an event clears the line, prints, and redraws prompt and input."""

    def __init__(self, *, json_lines: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.json_lines = json_lines
        self.stdout = stdout
        self.stderr = stderr
        self.prompt: str | None = None  # set while the REPL waits for a line
        self.line_buffer: Callable[[], str] = str

    def emit(self, event: str, **fields: Any) -> None:
        if self.json_lines:
            self.stdout.write(dumps({"event": event, **fields}) + "\n")
            self.stdout.flush()
            return
        text = render(event, fields)
        if text is None:
            return
        if self.prompt is not None:
            if self.stdout.isatty():
                self.stdout.write(f"\r\x1b[K{text}\n{self.prompt}{self.line_buffer()}")
            else:
                self.stdout.write(f"\n{text}\n")
            self.stdout.flush()
            return
        stream = self.stderr if event == "error" else self.stdout
        stream.write(text + "\n")
        stream.flush()


def render(event: str, fields: dict[str, Any]) -> str | None:
    """The REPL's text for an event (None: nothing to print)."""
    if event == "response":
        return dumps(fields["body"])
    if event == "push":
        return f"push {fields['route']}: {dumps(fields['body'])}"
    if event == "connected":
        count = f", {fields['routes']} routes in its dictionary" if fields["routes"] else ""
        return f"connected to {fields['url']} (heartbeat {fields['heartbeat']:g} s{count})"
    if event == "kicked":
        return f"kicked by the server: {fields['reason']}" if fields["reason"] else "kicked by the server"
    if event == "closed":
        return f"connection closed: {fields['reason']}"
    if event == "disconnected":
        return "disconnected"
    if event == "routes":
        routes: dict[str, int] = fields["routes"]
        if not routes:
            return "the server sent no route dictionary"
        return "\n".join(f"{code:>5}  {route}" for route, code in sorted(routes.items(), key=lambda item: item[1]))
    if event == "error":
        return f"error: {fields['error']}" + (f"\n{fields['context']}" if fields.get("context") else "")
    if event in ("info", "help"):
        return str(fields["text"])
    return None  # notified: nothing to say


# -- the shell -------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Connection:
    target: Target
    client: Client
    scope: trio.CancelScope
    done: trio.Event = attrs.field(factory=trio.Event)


class Shell:
    """The commands' interpreter, for the REPL and scripts. Resource handling: connections are
    tasks in ``nursery``, which the caller owns; cancelling it closes them. Error handling:
    :meth:`execute` raises CommandError for anything the user should hear about."""

    def __init__(self, nursery: trio.Nursery, output: Output, options: Options, *, strict: bool = False) -> None:
        self.nursery = nursery
        self.output = output
        self.options = options
        self.strict = strict
        self.connection: _Connection | None = None
        self.lost: str = ""  # why the last connection ended, when it was not our doing
        self.watching: list[str] = ["*"]
        self.seen_routes: set[str] = set()
        self.last: Any = None
        self._has_last = False
        self._pushes: deque[tuple[str, Any]] = deque(maxlen=_WAIT_BACKLOG)
        self._news = trio.Event()

    # -- completion -----------------------------------------------------------------------

    def routes(self) -> dict[str, int]:
        connection = self.connection
        handshake = connection.client.handshake if connection is not None else None
        return dict(handshake.dictionary) if handshake is not None and handshake.dictionary is not None else {}

    def completions(self, before: str, text: str) -> list[str]:
        """Completions of the word ``text``, with ``before`` the line up to that word."""
        words = before.split()
        if not words:
            return [f"{name} " for name in (*_COMMANDS, "exit") if name.startswith(text)]
        if words[0] == "help" and len(words) == 1:
            return [name for name in _COMMANDS if name.startswith(text)]
        if words[0] in _ROUTE_COMMANDS and len(words) == 1:
            routes = self.seen_routes | set(self.routes())
            return [f"{route} " for route in sorted(routes) if route.startswith(text)]
        return []

    @property
    def prompt(self) -> str:
        connection = self.connection
        return f"trionano[{connection.target.address}]> " if connection is not None else "trionano> "

    # -- commands -------------------------------------------------------------------------

    async def execute(self, line: str) -> bool:
        """Run one command line; False when it asks to quit. Raises CommandError."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("quit", "exit"):
            return False
        handler = getattr(self, f"_do_{name}", None) if name in _COMMANDS else None
        if handler is None:
            raise CommandError(f"unknown command {name!r} (help lists them)")
        await handler(rest)
        return True

    def _usage(self, name: str) -> CommandError:
        return CommandError(f"usage: {_COMMANDS[name][0]}")

    async def _do_help(self, rest: str) -> None:
        if rest:
            if rest not in _COMMANDS:
                raise CommandError(f"unknown command {rest!r} (help lists them)")
            usage, text = _COMMANDS[rest]
            self.output.emit("help", text=f"{usage}\n    {text}")
            return
        width = max(len(usage) for usage, _ in _COMMANDS.values())
        lines = [f"{usage:<{width}}  {text}" for usage, text in _COMMANDS.values()]
        self.output.emit("help", text="\n".join(lines))

    async def _do_connect(self, rest: str) -> None:
        url, _, extra = rest.partition(" ")
        extra = extra.strip()
        user: object = None
        if extra:
            if not extra.startswith("--user"):
                raise self._usage("connect")
            user = parse_json(extra.removeprefix("--user").strip() or "null")
        if not url:
            raise self._usage("connect")
        await self.connect(parse_url(url), user)

    async def connect(self, target: Target, user: object = None) -> None:
        if self.connection is not None:
            await self.disconnect()
        self._pushes.clear()
        try:
            connection: _Connection = await self.nursery.start(self._hold, target, user)
        except Exception as exc:
            raise CommandError(f"cannot connect to {target.url}: {describe(exc)}") from None
        self.connection = connection
        self.lost = ""
        handshake = connection.client.handshake
        assert handshake is not None
        routes = len(handshake.dictionary) if handshake.dictionary is not None else 0
        self.output.emit("connected", url=target.url, heartbeat=handshake.heartbeat, routes=routes)

    async def _hold(self, target: Target, user: object, task_status: trio.TaskStatus[_Connection]) -> None:
        """Own one connection: open it, hand it over, report how it ends."""
        connection: _Connection | None = None
        reason: BaseException | None = None
        try:
            with trio.CancelScope() as scope:
                async with open_target(target, self.options, user) as client:
                    client.on_any(self._on_push)
                    connection = _Connection(target, client, scope)
                    task_status.started(connection)
                    try:
                        await client.receive_push(_NO_ROUTE)
                    except (Kicked, trio.BrokenResourceError) as exc:
                        reason = exc
        except Exception as exc:
            if connection is None:
                raise
            reason = reason or exc
        finally:
            if connection is not None:
                connection.done.set()
                if self.connection is connection:
                    self.connection = None
                    self._ended(reason)

    def _ended(self, reason: BaseException | None) -> None:
        if reason is None:
            return
        if isinstance(reason, Kicked):
            self.lost = str(reason)
            self.output.emit("kicked", reason=reason.reason)
        else:
            self.lost = f"connection closed: {describe(reason)}"
            self.output.emit("closed", reason=describe(reason))
        self._news.set()
        self._news = trio.Event()

    def _on_push(self, route: str, body: Any) -> None:
        self.seen_routes.add(route)
        self._pushes.append((route, body))
        self._news.set()
        self._news = trio.Event()
        if any(fnmatchcase(route, pattern) for pattern in self.watching):
            self.output.emit("push", route=route, body=body)

    def _client(self) -> Client:
        if self.connection is None:
            raise CommandError(f"not connected ({self.lost})" if self.lost else "not connected (connect URL)")
        return self.connection.client

    def _route_and_body(self, name: str, rest: str) -> tuple[str, Any]:
        route, _, text = rest.partition(" ")
        if not route:
            raise self._usage(name)
        text = text.strip()
        return route, (parse_json(text) if text else {})

    async def _do_request(self, rest: str) -> None:
        route, body = self._route_and_body("request", rest)
        client = self._client()
        self.seen_routes.add(route)
        try:
            answer = await client.request(route, body, timeout=self.options.timeout)
        except (Kicked, trio.BrokenResourceError, trio.ClosedResourceError, TimeoutError) as exc:
            raise CommandError(f"request {route}: {describe(exc)}") from None
        self._remember(answer)
        self.output.emit("response", route=route, body=answer)
        if self.strict and is_error_response(answer):
            raise CommandError(f"request {route}: error response with code {answer['code']}")

    async def _do_notify(self, rest: str) -> None:
        route, body = self._route_and_body("notify", rest)
        client = self._client()
        self.seen_routes.add(route)
        try:
            await client.notify(route, body)
        except (Kicked, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise CommandError(f"notify {route}: {describe(exc)}") from None
        self.output.emit("notified", route=route)

    async def _do_watch(self, rest: str) -> None:
        for pattern in rest.split():
            if pattern not in self.watching:
                self.watching.append(pattern)
        self.output.emit("info", text="watching: " + (" ".join(self.watching) or "nothing"))

    async def _do_unwatch(self, rest: str) -> None:
        patterns = rest.split()
        missing = [pattern for pattern in patterns if pattern not in self.watching]
        if missing:
            raise CommandError(f"not watching {' '.join(missing)} (watching: {' '.join(self.watching) or 'nothing'})")
        self.watching = [pattern for pattern in self.watching if patterns and pattern not in patterns]
        self.output.emit("info", text="watching: " + (" ".join(self.watching) or "nothing"))

    async def _do_wait(self, rest: str) -> None:
        words = rest.split()
        if not 1 <= len(words) <= 2:
            raise self._usage("wait")
        pattern = words[0]
        seconds = self._seconds(words[1]) if len(words) == 2 else self.options.timeout
        with trio.move_on_after(seconds):
            while True:
                for index, (route, body) in enumerate(self._pushes):
                    if fnmatchcase(route, pattern):
                        del self._pushes[index]
                        self._remember(body)
                        return
                if self.connection is None:
                    raise CommandError(f"wait {pattern}: not connected" + (f" ({self.lost})" if self.lost else ""))
                await self._news.wait()
        raise CommandError(f"wait {pattern}: no push within {seconds:g} s")

    async def _do_expect(self, rest: str) -> None:
        if not rest:
            raise self._usage("expect")
        expected = parse_json(rest)
        if not self._has_last:
            raise CommandError("expect: no Response or push to compare yet")
        if self.last != expected:
            raise CommandError(f"expected {dumps(expected)}, got {dumps(self.last)}")

    async def _do_sleep(self, rest: str) -> None:
        await trio.sleep(self._seconds(rest))

    async def _do_routes(self, rest: str) -> None:
        self._client()
        self.output.emit("routes", routes=self.routes())

    async def _do_disconnect(self, rest: str) -> None:
        self._client()
        await self.disconnect()
        self.output.emit("disconnected")

    async def disconnect(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.scope.cancel()
            await connection.done.wait()

    def _remember(self, value: Any) -> None:
        self.last, self._has_last = value, True

    @staticmethod
    def _seconds(text: str) -> float:
        try:
            seconds = float(text)
        except ValueError:
            raise CommandError(f"not a number of seconds: {text!r}") from None
        if not 0 <= seconds < math.inf:
            raise CommandError(f"not a number of seconds: {text!r}")
        return seconds


# -- the REPL --------------------------------------------------------------------------------


class _LineEditor:
    """readline's history and completion, when Python has readline and stdin is a terminal."""

    def __init__(self, history: Path | None) -> None:
        self.history = history
        self.readline: Any = None
        self.shell: Shell | None = None
        self._matches: list[str] = []

    def __enter__(self) -> _LineEditor:
        if not sys.stdin.isatty():
            return self
        try:
            import readline
        except ImportError:  # e.g. Windows without pyreadline
            return self
        self.readline = readline
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        readline.set_completer_delims(" \t\n")
        readline.set_completer(self._complete)
        if self.history is not None:
            readline.set_history_length(1000)
            try:
                readline.read_history_file(self.history)
            except OSError:
                pass
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.readline is None:
            return
        self.readline.set_completer(None)
        if self.history is not None:
            try:
                self.readline.write_history_file(self.history)
            except OSError as exc:
                print(f"trionano: could not save the history in {self.history}: {exc}", file=sys.stderr)

    def line_buffer(self) -> str:
        return str(self.readline.get_line_buffer()) if self.readline is not None else ""

    def _complete(self, text: str, state: int) -> str | None:
        # called by readline, in the thread waiting for input
        if state == 0:
            shell = self.shell
            before = self.readline.get_line_buffer()[: self.readline.get_begidx()]
            self._matches = shell.completions(before, text) if shell is not None else []
        return self._matches[state] if state < len(self._matches) else None


async def _repl(url: str | None, options: Options, editor: _LineEditor) -> int:
    output = Output(json_lines=False, stdout=sys.stdout, stderr=sys.stderr)
    output.line_buffer = editor.line_buffer
    async with trio.open_nursery() as nursery:
        shell = Shell(nursery, output, options)
        editor.shell = shell
        if url is not None:
            await _repl_execute(shell, f"connect {url}")
        while True:
            prompt = shell.prompt
            output.prompt = prompt
            try:
                line = await trio.to_thread.run_sync(input, prompt, abandon_on_cancel=True)
            except EOFError:
                sys.stdout.write("\n")
                break
            finally:
                output.prompt = None
            if not await _repl_execute(shell, line):
                break
        await shell.disconnect()
        nursery.cancel_scope.cancel()
    return 0


async def _repl_execute(shell: Shell, line: str) -> bool:
    try:
        return await shell.execute(line)
    except CommandError as exc:
        shell.output.emit("error", error=str(exc), context=exc.context)
        return True


def _run_repl(args: argparse.Namespace, options: Options) -> int:
    history = None if args.no_history else Path(args.history).expanduser()
    saved = _terminal_state()
    try:
        with _LineEditor(history) as editor:
            return trio.run(_repl, args.url, options, editor)
    finally:
        # input() may be abandoned mid-line (Ctrl-C): readline would leave the terminal raw
        _restore_terminal(saved)


def _terminal_state() -> object:
    try:
        import termios

        return termios.tcgetattr(sys.stdin.fileno()) if sys.stdin.isatty() else None
    except (ImportError, OSError, ValueError):
        return None


def _restore_terminal(saved: object) -> None:
    if saved is None:
        return
    import termios

    try:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)  # type: ignore[arg-type]
    except OSError:
        pass


# -- scripted mode ---------------------------------------------------------------------------


async def _run_script(lines: Iterable[str], connect: str | None, options: Options, strict: bool) -> int:
    output = Output(json_lines=True, stdout=sys.stdout, stderr=sys.stderr)
    async with trio.open_nursery() as nursery:
        shell = Shell(nursery, output, options, strict=strict)
        commands = [(0, f"connect {connect}")] if connect is not None else []
        commands += [(number, line) for number, line in enumerate(lines, 1)]
        status = 0
        for number, line in commands:
            try:
                if not await shell.execute(line):
                    break
            except CommandError as exc:
                fields: dict[str, Any] = {"line": number, "command": line.strip(), "error": str(exc)}
                if exc.context:
                    fields["context"] = exc.context
                output.emit("error", **fields)
                status = 1
                break
        await shell.disconnect()
        nursery.cancel_scope.cancel()
    return status


def _read_script(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    return Path(path).read_text(encoding="utf-8").splitlines()


# -- one-shot helpers ------------------------------------------------------------------------


async def _request(target: Target, route: str, body: Any, options: Options, strict: bool) -> int:
    async with open_target(target, options) as client:
        answer = await client.request(route, body, timeout=options.timeout)
    print(dumps(answer), flush=True)
    return 1 if strict and is_error_response(answer) else 0


async def _routes(target: Target, options: Options) -> int:
    async with open_target(target, options) as client:
        handshake = client.handshake
    dictionary = handshake.dictionary if handshake is not None else None
    if not dictionary:
        print("the server sent no route dictionary", file=sys.stderr)
    print(json.dumps(dict(dictionary or {}), indent=2), flush=True)
    return 0


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of a sorted, non-empty list."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


async def bench(
    target: Target, route: str, body: Any, options: Options, *, connections: int, seconds: float
) -> dict[str, Any]:
    """Closed loop: each of ``connections`` clients sends a Request and waits for its answer,
    again and again for ``seconds``. Raises what connecting or a request raised first (the
    other connections are then closed)."""
    latencies: list[float] = []
    error_responses = 0
    go = trio.Event()
    deadline = math.inf
    failure: Exception | None = None

    async def client_loop(nursery: trio.Nursery, task_status: trio.TaskStatus[None]) -> None:
        nonlocal error_responses, failure
        started = False
        try:
            async with open_target(target, options) as client:
                task_status.started()
                started = True
                await go.wait()
                while time.perf_counter() < deadline:
                    sent = time.perf_counter()
                    answer = await client.request(route, body, timeout=options.timeout)
                    latencies.append(time.perf_counter() - sent)
                    error_responses += is_error_response(answer)
        except Exception as exc:
            if not started:
                raise  # to nursery.start
            failure = failure or exc
            nursery.cancel_scope.cancel()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        try:
            for _ in range(connections):
                await nursery.start(client_loop, nursery)
        except Exception as exc:
            failure = exc
            nursery.cancel_scope.cancel()
        start = time.perf_counter()
        deadline = start + seconds
        go.set()
    if failure is not None:
        raise failure
    elapsed = time.perf_counter() - start
    latencies.sort()
    result: dict[str, Any] = {
        "url": target.url,
        "route": route,
        "connections": connections,
        "seconds": round(elapsed, 3),
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "error_responses": error_responses,
    }
    if latencies:
        result["latency_ms"] = {
            name: round(percentile(latencies, fraction) * 1000, 3)
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        }
    return result


def _print_bench(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(dumps(result), flush=True)
        return
    print(f"{result['route']} at {result['url']}: {result['connections']} connections, {result['seconds']:g} s")
    print(f"  {result['requests']} requests, {result['rps']:g} req/s, {result['error_responses']} error responses")
    if "latency_ms" in result:
        print("  latency ms: " + "  ".join(f"{name} {value:g}" for name, value in result["latency_ms"].items()))
    sys.stdout.flush()


# -- arguments -------------------------------------------------------------------------------


def _json_argument(text: str) -> Any:
    try:
        return parse_json(text)
    except CommandError as exc:
        raise argparse.ArgumentTypeError(f"{exc}\n{exc.context}") from None


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--user", type=_json_argument, metavar="JSON", help="user data for the handshake")
    common.add_argument(
        "--timeout",
        type=_positive(float),
        default=10.0,
        metavar="SECONDS",
        help="for connecting, the handshake and each request (default: %(default)s)",
    )
    common.add_argument("--cafile", metavar="FILE", help="trust this CA for tls:// and wss://")
    common.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")

    parser = argparse.ArgumentParser(
        prog="trionano",
        description="A client for trionano and nano (pomelo) servers. Without a subcommand: the REPL.",
        epilog="URL: tcp://host:port, tls://host:port, ws://host:port/path, wss://host:port/path. "
        "In the REPL, 'help' lists the commands. Exit status: 0 success, 1 failure, 2 usage, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"trionano {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    repl = sub.add_parser(
        "repl",
        aliases=["connect"],
        parents=[common],
        help="interactive client",
        description="An interactive client: commands at a prompt, pushes printed as they arrive. "
        "Commands: " + "; ".join(usage for usage, _ in _COMMANDS.values()) + ".",
    )
    repl.add_argument("url", nargs="?", metavar="URL", help="connect to URL first")
    repl.add_argument(
        "--history", default="~/.trionano_history", metavar="FILE", help="history file (default: %(default)s)"
    )
    repl.add_argument("--no-history", action="store_true", help="neither read nor write a history file")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run commands from a file, JSON lines out",
        description="Run the REPL's commands from FILE (- for stdin), one a line; print one JSON object "
        "a line; stop with status 1 at the first failure.",
    )
    run.add_argument("file", metavar="FILE", help="the script, - for stdin")
    run.add_argument("--connect", "-c", metavar="URL", help="connect to URL before the first line")
    run.add_argument("--strict", action="store_true", help="an error Response (code >= 400) is a failure")

    request = sub.add_parser(
        "request", parents=[common], help="one request", description="Send one Request and print its Response."
    )
    request.add_argument("url", metavar="URL")
    request.add_argument("route", metavar="ROUTE")
    request.add_argument("body", nargs="?", type=_json_argument, default={}, metavar="JSON", help="default: {}")
    request.add_argument("--strict", action="store_true", help="exit 1 on an error Response (code >= 400)")

    routes = sub.add_parser(
        "routes",
        parents=[common],
        help="the server's route dictionary",
        description="Print the route dictionary the server sends in its handshake (route: code), as JSON.",
    )
    routes.add_argument("url", metavar="URL")

    bench_parser = sub.add_parser(
        "bench",
        parents=[common],
        help="closed-loop load",
        description="Closed-loop load: each connection sends ROUTE and waits for the answer, again and "
        "again; prints requests per second and latency percentiles.",
    )
    bench_parser.add_argument("url", metavar="URL")
    bench_parser.add_argument("route", metavar="ROUTE")
    bench_parser.add_argument("body", nargs="?", type=_json_argument, default={}, metavar="JSON", help="default: {}")
    bench_parser.add_argument("-c", "--connections", type=_positive(int), default=10, metavar="N")
    bench_parser.add_argument("-s", "--seconds", type=_positive(float), default=5.0, metavar="S")
    bench_parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return parser


def _options(args: argparse.Namespace) -> Options:
    context = None
    if args.cafile or args.insecure:
        context = ssl.create_default_context(cafile=args.cafile)
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return Options(user=args.user, timeout=args.timeout, ssl_context=context)


def main(argv: list[str] | None = None) -> int:
    """The ``trionano`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["repl", *argv]  # no subcommand: the REPL
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BaseException as exc:
        error = _unwrap(exc)
        if isinstance(error, KeyboardInterrupt):
            print(file=sys.stderr)
            return 130
        if isinstance(error, (trio.TooSlowError, *_PLAIN_ERRORS)):
            print(f"trionano: {describe(error)}", file=sys.stderr)
            return 1
        raise  # a bug: its traceback


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _dispatch(args: argparse.Namespace) -> int:
    options = _options(args)
    if args.command in ("repl", "connect"):
        return _run_repl(args, options)
    if args.command == "run":
        lines = _read_script(args.file)
        return trio.run(_run_script, lines, args.connect, options, args.strict)
    target = parse_url(args.url)
    if args.command == "request":
        return trio.run(_request, target, args.route, args.body, options, args.strict)
    if args.command == "routes":
        return trio.run(_routes, target, options)
    result = trio.run(
        lambda: bench(target, args.route, args.body, options, connections=args.connections, seconds=args.seconds)
    )
    _print_bench(result, args.json)
    return 0 if result["requests"] else 1
