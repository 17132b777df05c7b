"""Small components the runtime tests serve."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import betterproto

from trionano import Component, Components, Group, HandlerError, Session

if TYPE_CHECKING:
    import trio


@attrs.frozen
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Note:
    text: str


@dataclasses.dataclass(eq=False, repr=False)
class Ping(betterproto.Message):
    content: str = betterproto.string_field(1)


@dataclasses.dataclass(eq=False, repr=False)
class Pong(betterproto.Message):
    content: str = betterproto.string_field(2)


class Echo(Component):
    """Answers in every decoding the annotations allow."""

    def __init__(self) -> None:
        self.group = Group("all")
        self.notified: list[Any] = []

    def json(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return msg

    def raw(self, session: Session, msg: bytes) -> bytes:
        return msg[::-1]

    def point(self, session: Session, msg: Point) -> Point:
        return Point(msg.y, msg.x)

    def note(self, session: Session, msg: Note) -> Note:
        return Note(msg.text.upper())

    def ping(self, session: Session, msg: Ping) -> Pong:
        return Pong(content=msg.content + " pong")

    async def slow(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        import trio

        await trio.sleep(msg.get("seconds", 0))
        return {"slept": msg.get("seconds", 0)}

    def fail(self, session: Session, msg: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    def refuse(self, session: Session, msg: dict[str, Any]) -> None:
        raise HandlerError("not allowed", code=403)

    def later(self, session: Session, msg: dict[str, Any]) -> None:
        mid = session.last_mid
        self.server.scheduler.after(msg.get("after", 0.01), lambda: session.response({"late": True}, mid=mid))

    def respond_twice(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        session.response({"first": True})
        return {"second": True}  # already answered: dropped

    def join(self, session: Session, msg: bytes) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}

    def shout(self, session: Session, msg: dict[str, Any]) -> None:
        self.group.broadcast("onShout", msg)

    def tell(self, session: Session, msg: dict[str, Any]) -> None:
        self.notified.append(msg)
        session.push("onTold", msg)

    def helper(self, x: int) -> int:  # not (session, msg): not a handler
        return x


class S(Component):
    """The issues' small test component (routes ``s.*``)."""

    def __init__(self) -> None:
        self.group = Group("s")
        self.deferred: list[Any] = []

    def echo(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return msg

    def big(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"b": "x" * 70_000}  # over the 64 KiB packet limit

    def unserializable(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"t": {1, 2}}

    def silent(self, session: Session, msg: dict[str, Any]) -> None:
        return None  # neither answers nor defers

    def later(self, session: Session, msg: dict[str, Any]) -> None:
        answer = session.defer()
        self.server.scheduler.after(0.01, lambda: answer.respond({"later": True}))

    def held(self, session: Session, msg: dict[str, Any]) -> None:
        """Deferred until the test answers it (``S.deferred``)."""
        self.deferred.append(session.defer())

    def pushes(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        for i in range(msg.get("n", 200)):
            session.push("onPush", {"i": i})
        return {"pushed": msg.get("n", 200)}

    def sized(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"pad": "x" * int(msg.get("size", 8000))}

    def pads(self, session: Session, msg: dict[str, Any]) -> None:
        for i in range(msg.get("n", 6)):
            session.push("onPad", {"i": i, "pad": "x" * 60_000})  # each one legal

    def padded(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        """Pushes ``n`` 60 KB Pushes, then answers how many it queued."""
        queued = sum(session.push("onPad", {"i": i, "pad": "x" * 60_000}) for i in range(msg.get("n", 6)))
        return {"queued": queued}

    def say(self, session: Session, msg: dict[str, Any]) -> None:
        self.group.broadcast("onSay", msg)

    def join(self, session: Session, msg: dict[str, Any]) -> dict[str, int]:
        self.group.add(session)
        return {"members": self.group.count()}


class SlowJoin(Component):
    """A handler on a named lane that joins a group after the client may have left."""

    def __init__(self) -> None:
        self.group = Group("late")
        self.release: Any = None  # a trio.Event: wait for it instead of 0.3 s
        self.started = 0  # handlers called
        self.finished = 0  # handlers that have ended, however

    async def join(self, session: Session, msg: dict[str, Any]) -> dict[str, bool]:
        import trio

        self.started += 1
        try:
            if self.release is None:
                await trio.sleep(0.3)
            else:
                await self.release.wait()
            session.bind(7)
            self.group.add(session)
            return {"joined": True}
        finally:
            self.finished += 1


def s_components() -> tuple[Components, S, SlowJoin]:
    s, slow = S(), SlowJoin()
    components = Components()
    components.register(s, name="s")
    components.register(slow, name="slow", lane="slow")
    return components, s, slow


def echo_components() -> Components:
    components = Components()
    components.register(Echo(), name="echo")
    return components


async def wait_until(predicate: Callable[[], bool], timeout: float = 30) -> None:  # noqa: ASYNC109
    """Poll ``predicate`` (server state with no event to wait on) until it holds; fail after
    ``timeout`` seconds of trio's clock."""
    import trio

    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling state the server exposes no event for
            await trio.sleep(0.005)


class Lines:
    """The lines of a process's output, one at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def receive_line(self) -> str:
        """The next line, without its newline. Raises EOFError at the end of the output."""
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some()
            if not data:
                raise EOFError("the process ended its output")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 from a throwaway CA, and a client
    context trusting that CA."""
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context
