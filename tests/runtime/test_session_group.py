"""Sessions and groups: nano's API and errors, the typed store, and nothing left behind."""

from __future__ import annotations

import weakref
from typing import cast

import pytest
import trio

from tests.runtime.apps import Echo, echo_components, wait_until
from trionano import Components, Group, GroupError, Server, Session, SessionError, SessionKey
from trionano._group import PRUNE_SLACK
from trionano.testing import open_test_server

ROOM = SessionKey[str]("room")
LEVEL = SessionKey[int]("level")


async def one_session(running_server: Server) -> Session:
    await wait_until(lambda: len(running_server.sessions) == 1)
    return next(iter(running_server.sessions.values()))


def test_sessions_have_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        Session()  # type: ignore[call-arg]


async def test_session_identity_store_and_getters() -> None:
    async with open_test_server(echo_components()) as running, running.connect():
        session = await one_session(running.server)
        assert session.id == 1
        with pytest.raises(SessionError, match="illegal uid"):
            session.bind(0)
        session.bind(42)
        assert session.uid == 42
        session[ROOM] = "lobby"
        session[LEVEL] = 3
        assert session[ROOM] == "lobby"
        assert session.get(LEVEL) == 3
        assert session.get(SessionKey[int]("missing"), 7) == 7
        assert ROOM in session
        # nano's typed getters: the zero value when missing or of another type, no conversion
        session.set("n", 5)
        session.set("f", 1.5)
        assert (session.get_int("n"), session.get_float("n"), session.get_str("n")) == (5, 0.0, "")
        assert (session.get_float("f"), session.get_int("nope"), session.has_key("f")) == (1.5, 0, True)
        state = session.state()
        state["n"] = 99  # a copy, unlike nano's live map
        assert session.get_int("n") == 5
        session.restore({"room": "hall"})
        assert session[ROOM] == "hall"
        session.clear()
        assert session.uid == 0
        assert ROOM not in session
        assert session.remote_address.startswith("127.0.0.1:")


async def test_response_outside_a_request_is_notify_mode() -> None:
    async with open_test_server(echo_components()) as running, running.connect():
        session = await one_session(running.server)
        with pytest.raises(SessionError, match="current session working on notify mode"):
            session.response({"x": 1})


async def test_closed_sessions_are_dropped_everywhere_and_refuse_pushes() -> None:
    closed: list[int] = []
    server = Server(echo_components())
    server.on_session_closed(lambda session: closed.append(session.id))
    async with open_test_server(server) as running:
        async with running.connect():
            session = await one_session(running.server)
        await wait_until(lambda: closed == [session.id])
        assert dict(running.server.sessions) == {}  # nano leaks it (#118)
        with pytest.raises(trio.BrokenResourceError):
            session.push("onX", {})


async def test_kick_reaches_the_client_with_its_reason() -> None:
    from trionano import Kicked

    async with open_test_server(echo_components()) as running, running.connect() as client:
        session = await one_session(running.server)
        session.kick("go away")
        with pytest.raises(Kicked, match="go away"):
            await client.receive_push("never")
        assert client.error is not None
        assert client.error.reason == "go away"  # type: ignore[attr-defined]


async def test_session_ids_are_unique_per_server() -> None:
    async with open_test_server(echo_components()) as running, running.connect(), running.connect(), running.connect():
        await wait_until(lambda: len(running.server.sessions) == 3)
        assert sorted(running.server.sessions) == [1, 2, 3]


class FakeSession:
    def __init__(self, id: int, uid: int) -> None:
        self.id = id
        self.uid = uid
        self.closed = False
        self.fanout = None


def test_group_api_and_nanos_errors() -> None:
    group = Group("g")
    # groups only read .id, .uid, .closed and .fanout: stand-ins keep this test about the group alone
    a, b = cast(Session, FakeSession(1, 10)), cast(Session, FakeSession(2, 20))
    group.add(a)
    group.add(b)
    with pytest.raises(GroupError, match="session has existed in the current group"):
        group.add(a)
    assert group.count() == len(group) == 2
    assert group.members() == [10, 20]
    assert group.member(20) is b
    assert group.contains(10)
    assert not group.contains(30)
    assert group.find_member(lambda s: s.uid > 15) is b
    with pytest.raises(GroupError, match="member not found in the group"):
        group.member(30)
    with pytest.raises(GroupError, match="member not found in the group"):
        group.find_member(lambda s: False)
    group.leave(a)
    group.leave(a)  # not a member: fine
    assert group.members() == [20]
    group.leave_all()
    assert group.count() == 0
    group.close()
    with pytest.raises(GroupError, match="close closed group"):
        group.close()
    for call in (lambda: group.add(a), lambda: group.leave(a), group.leave_all, lambda: group.broadcast("r", {})):
        with pytest.raises(GroupError, match="group closed"):
            call()
    assert group.count() == 0
    assert group.members() == []


def test_a_group_never_broadcast_to_does_not_keep_its_closed_members() -> None:
    """Joins drop the closed members (amortized): 10,000 clients that join and leave, 10 of
    them still open at any time, leave at most 2 * 10 + PRUNE_SLACK sessions in the group."""
    group = Group("lobby")
    alive: list[weakref.ref[FakeSession]] = []
    open_now: list[FakeSession] = []
    for n in range(1, 10_001):
        session = FakeSession(n, n)
        group.add(cast(Session, session))
        alive.append(weakref.ref(session))
        open_now.append(session)
        if len(open_now) > 10:
            open_now.pop(0).closed = True  # its client left; nobody calls leave()
        del session
    held = sum(ref() is not None for ref in alive)
    assert held <= 2 * 10 + PRUNE_SLACK, held
    assert group.count() == 10
    assert sum(ref() is not None for ref in alive) == 10  # count() drops the rest


async def test_broadcast_and_multicast_over_the_wire() -> None:
    echo = Echo()
    components = Components()
    components.register(echo, name="echo")
    async with (
        open_test_server(components) as running,
        running.connect() as a,
        running.connect() as b,
        running.connect() as c,
    ):
        for n, client in enumerate((a, b, c), 1):
            assert await client.request("echo.join", b"") == {"members": n}
        await a.notify("echo.shout", {"from": "a"})
        for client in (a, b, c):
            assert await client.receive_push("onShout") == {"from": "a"}
        before = running.server.statistics().encoded
        queued = echo.group.multicast("onOdd", {"odd": True}, lambda s: s.id % 2 == 1)
        assert queued == 2
        assert running.server.statistics().encoded == before + 1
        assert await a.receive_push("onOdd") == {"odd": True}
        assert await c.receive_push("onOdd") == {"odd": True}
        await b.request("echo.json", {})  # b's pushes so far have arrived
        assert b.pending_pushes("onOdd") == 0


async def test_uid_index_follows_bind_rebind_clear_close_and_kick() -> None:
    """``server.sessions_of(uid)`` is an index kept on bind, clear and close: several sessions
    may share a uid, a rebind moves a session, and after churn the index is back to empty."""
    async with open_test_server(echo_components()) as running:
        server = running.server
        assert server.bound_uids == 0
        for _round in range(3):  # churn: the tables come back to their baseline each time
            async with running.connect(), running.connect(), running.connect():  # closed as the block ends
                await wait_until(lambda: len(server.sessions) == 3)
                sa, sb, sc = sorted(server.sessions.values(), key=lambda s: s.id)
                assert server.sessions_of(7) == []
                sa.bind(7)
                sb.bind(7)  # one user on two devices
                sc.bind(9)
                assert server.sessions_of(7) == [sa, sb]
                assert server.sessions_of(9) == [sc]
                assert server.bound_uids == 2
                sb.bind(9)  # rebind: moved, not listed twice
                assert server.sessions_of(7) == [sa]
                assert server.sessions_of(9) == [sc, sb]
                sb.bind(9)  # the same uid again changes nothing
                assert server.sessions_of(9) == [sc, sb]
                sc.clear()  # unbound: no longer listed
                assert server.sessions_of(9) == [sb]
                sc.uid = 11  # the attribute is the binding too
                assert server.sessions_of(11) == [sc]
                sa.kick("bye")
                kicked = sa.id
                await wait_until(lambda: kicked not in server.sessions)  # noqa: B023 (awaited here)
                assert server.sessions_of(7) == []
                sa.bind(7)  # a closed session is never listed again
                assert server.sessions_of(7) == []
            await wait_until(lambda: not server.sessions)
            assert server.bound_uids == 0
            assert server.sessions_of(9) == []
            assert server.sessions_of(11) == []
