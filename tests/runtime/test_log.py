"""Logs a peer cannot abuse: client_text escapes and bounds peer text, RateLimitedLog bounds records per kind."""

from __future__ import annotations

import ast
import logging
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trionano._log import AREAS, LOGGER_NAMES, MIN_LIMIT, RateLimitedLog, client_text, logger

FORGED = "\n2099-01-01 00:00:00 trionano ERROR admin login from 6.6.6.6"
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on

limits = st.integers(min_value=MIN_LIMIT, max_value=400)
# st.text() leaves out surrogates: `hostile` is made of every category that must be escaped, and the backslash
hostile = st.text(st.characters(categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"], include_characters="\\"))
values = st.one_of(st.text(), st.binary(), hostile, st.text(min_size=150, max_size=2000), st.binary(min_size=150))


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- client_text --------------------------------------------------------------------------------------------------


def is_whole(rendering: str) -> bool:
    return rendering.endswith(("'", '"'))


@given(values, limits)
@example(FORGED, 200)
@example("\u202egnp.exe", 200)
@example("\x1b]0;pwned\x07\x1b[2J" * 40, 200)
@example("\ud800\udfff\x85\u2028\u2029\u00ad\ufeff\U000e0001", 40)
@example(b"\r\n\x1b" * 100, 40)
def test_rendering_is_one_bounded_line_of_printable_characters(value: str | bytes, limit: int) -> None:
    rendering = client_text(value, limit)
    assert len(rendering) <= limit
    bad = [c for c in rendering if unicodedata.category(c).startswith("C") or c in "\u2028\u2029"]
    assert bad == []
    assert not any(c in LINE_BREAKS for c in rendering)
    assert len(rendering.splitlines()) == 1


@given(values, limits)
@example("a\\" * 100, 40)
@example("\U0010ffff" * 30, 50)
def test_rendering_is_the_repr_or_a_prefix_of_it_cut_between_escapes(value: str | bytes, limit: int) -> None:
    """Whole renderings evaluate back to the value (so distinct values render differently); cut ones evaluate,
    once closed, to a prefix of it, and say the value's length."""
    rendering = client_text(value, limit)
    if is_whole(rendering):
        assert ast.literal_eval(rendering) == value
        assert type(ast.literal_eval(rendering)) is type(value)
        return
    unit = "chars" if isinstance(value, str) else "bytes"
    head, _, tail = rendering.rpartition("... (")
    assert tail == f"{len(value)} {unit})"
    quote = head[1] if isinstance(value, bytes) else head[0]
    prefix = ast.literal_eval(head + quote)
    assert type(prefix) is type(value)
    assert value.startswith(prefix)  # type: ignore[arg-type]  # same type, checked above


@given(st.one_of(st.text(), st.binary(), hostile), st.one_of(st.text(), st.binary(), hostile), limits)
@example("a", b"a", 40)
@example("x" * 38, "x" * 38 + "y", 40)
def test_values_whose_repr_fits_stay_distinguishable(a: str | bytes, b: str | bytes, limit: int) -> None:
    ra, rb = client_text(a, limit), client_text(b, limit)
    if len(repr(a)) <= limit and len(repr(b)) <= limit and (a != b or type(a) is not type(b)):
        assert ra != rb
    if is_whole(ra) != is_whole(rb):  # a cut rendering never looks like a whole one
        assert ra != rb


@given(
    st.text(st.characters(categories=["L", "M", "N", "P", "S"], exclude_characters="\\'\""), max_size=200 - 2),
    st.text(max_size=(200 - 2) // 10 - 1),
)
def test_short_values_are_rendered_whole(printable: str, anything: str) -> None:
    assert ast.literal_eval(client_text(printable)) == printable
    assert ast.literal_eval(client_text(anything)) == anything  # under (200 - 2) // 10 characters


def test_forged_log_line_is_escaped() -> None:
    rendering = client_text(FORGED)
    assert rendering == repr(FORGED)
    assert "\n" not in rendering
    assert rendering.startswith("'\\n2099-01-01")


def test_a_huge_value_is_cut_with_its_length() -> None:
    assert client_text("é" * 10_000_000) == "'" + "é" * 179 + "... (10000000 chars)"
    assert client_text(b"\x00" * 1000, limit=MIN_LIMIT) == "b'\\x00\\x00\\x00\\x00\\x00... (1000 bytes)"


def test_subclasses_cannot_choose_their_rendering() -> None:
    class Sneaky(str):
        def __repr__(self) -> str:
            return FORGED

        def __getitem__(self, key: object) -> str:
            return FORGED

    class SneakyBytes(bytes):
        def __repr__(self) -> str:
            return FORGED

    assert client_text(Sneaky("ok")) == "'ok'"
    assert client_text(SneakyBytes(b"ok\n")) == "b'ok\\n'"
    assert client_text(Sneaky("x" * 300)).startswith("'xxx")


def test_client_text_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="limit"):
        client_text("x", MIN_LIMIT - 1)
    with pytest.raises(TypeError, match="str or bytes"):
        client_text(bytearray(b"x"))  # type: ignore[arg-type]


# --- logger -------------------------------------------------------------------------------------------------------


def test_one_logger_per_area() -> None:
    assert sorted(LOGGER_NAMES) == sorted(
        f"trionano.{area}"
        for area in ["server", "agent", "router", "session", "group", "scheduler", "websocket", "cluster", "client"]
    )
    assert {logger(area).name for area in AREAS} == LOGGER_NAMES  # type: ignore[arg-type]
    assert logger("agent") is logging.getLogger("trionano.agent")
    with pytest.raises(ValueError, match="unknown logging area"):
        logger("trionano.agent")  # type: ignore[arg-type]


# --- RateLimitedLog -----------------------------------------------------------------------------------------------

NAME = "trionano.server"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(clock: Clock, caplog: pytest.LogCaptureFixture) -> RateLimitedLog:
    caplog.set_level(logging.DEBUG, logger=NAME)
    return RateLimitedLog(logging.getLogger(NAME), clock=clock)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_a_flood_of_one_kind_is_bounded_and_the_suppressed_count_is_exact(
    log: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(100_000):
        log.warning("unknown route", "unknown route %s", client_text(f"r{i}"))
    assert messages(caplog) == [f"unknown route 'r{i}'" for i in range(10)]
    assert log.pending("unknown route") == 99_990
    assert log.suppressed_total == 99_990

    clock.now = 1009.9  # still the same window
    assert not log.warning("unknown route", "unknown route %s", "'late'")
    clock.now = 1010.0
    assert log.warning("unknown route", "unknown route %s", "'next'")
    assert caplog.records[-1].getMessage() == (
        "unknown route 'next' (99991 similar messages suppressed in the last 10.0 s)"
    )
    assert caplog.records[-1].levelno == logging.WARNING
    assert log.pending("unknown route") == 0
    # the new window lets 10 through again, the next one reports nothing if nothing was dropped
    for _ in range(20):
        log.warning("unknown route", "unknown route %s", "'again'")
    assert len(caplog.records) == 10 + 10
    clock.now = 1070.0
    log.warning("unknown route", "unknown route %s", "'later'")
    assert (
        caplog.records[-1].getMessage() == "unknown route 'later' (11 similar messages suppressed in the last 60.0 s)"
    )


def test_every_record_is_emitted_or_counted(
    log: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """12,637 warnings over 8 s (the stray load generator): at most 10 records per 10 s, and nothing lost."""
    for i in range(12_637):
        clock.now = 1000.0 + i * 8.0 / 12_637
        log.warning("slow consumer", "session %d is a slow consumer: kicked", i)
    clock.now += 30.0
    log.warning("slow consumer", "session %d is a slow consumer: kicked", -1)
    assert len(caplog.records) == 11
    assert caplog.records[-1].args == (-1, 12_627, pytest.approx(38.0, abs=0.01))
    assert log.flush() == 0


def test_kinds_are_independent(log: RateLimitedLog, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(50):
        log.warning("unknown route", "unknown route")
    assert log.warning("protocol error", "protocol error from %s", "1.2.3.4")
    assert log.error("handler failed", "handler failed")
    assert [r.getMessage() for r in caplog.records[-2:]] == ["protocol error from 1.2.3.4", "handler failed"]
    assert (log.pending("unknown route"), log.pending("protocol error"), log.pending("never")) == (40, 0, 0)


def test_logs_are_independent(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=NAME)
    one, two = (
        RateLimitedLog(logging.getLogger(NAME), clock=clock),
        RateLimitedLog(logging.getLogger(NAME), clock=clock),
    )
    for _ in range(20):
        one.warning("kind", "x")
    assert two.warning("kind", "y")
    assert two.suppressed_total == 0
    assert one.suppressed_total == 10


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_suppressed_records_are_not_formatted(clock: Clock) -> None:
    handler = ListHandler()
    quiet = logging.getLogger(f"{NAME}.test-no-format")  # only our handler formats
    quiet.propagate = False
    quiet.setLevel(logging.INFO)
    quiet.addHandler(handler)
    log = RateLimitedLog(quiet, clock=clock)
    formatted = 0

    class Costly:
        def __str__(self) -> str:
            nonlocal formatted
            formatted += 1
            return "costly"

    try:
        for _ in range(1000):
            log.info("kind", "%s", Costly())
    finally:
        quiet.removeHandler(handler)
    assert formatted == 0
    assert [record.getMessage() for record in handler.records] == ["costly"] * 10
    assert formatted == 10


def test_records_under_the_level_are_neither_logged_nor_counted(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=NAME)
    log = RateLimitedLog(logging.getLogger(NAME), clock=clock, per_window=1)
    assert not log.debug("kind", "quiet")
    assert not log.info("kind", "quiet")
    assert log.warning("kind", "loud")
    assert not log.warning("kind", "loud")
    assert log.pending("kind") == 1
    assert messages(caplog) == ["loud"]


def test_flush_reports_what_is_pending_at_its_highest_level(
    log: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    assert log.flush() == 0
    for _ in range(15):
        log.info("unknown route", "unknown route")
    log.error("unknown route", "unknown route")
    for _ in range(12):
        log.warning("slow consumer", "slow")
    caplog.clear()
    clock.now += 2.5
    assert log.flush() == 6 + 2
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "6 similar messages suppressed in the last 2.5 s (unknown route)"),
        (logging.WARNING, "2 similar messages suppressed in the last 2.5 s (slow consumer)"),
    ]
    assert log.flush() == 0
    assert not log.warning("slow consumer", "slow")  # the window goes on
    assert log.pending("slow consumer") == 1


def test_the_forged_line_stays_on_one_line(log: RateLimitedLog, caplog: pytest.LogCaptureFixture) -> None:
    log.warning("unknown route", "nano/handler: %s not found(forgot registered?), session=%d", client_text(FORGED), 7)
    formatted = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s").format(caplog.records[0])
    assert "\n" not in formatted
    assert len(formatted.splitlines()) == 1


def test_a_literal_percent_survives_the_suppression_report(
    log: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(11):
        log.warning("full", "outbox 100% full")
    clock.now += 10.0
    log.warning("full", "outbox 100% full")
    assert caplog.records[-1].getMessage() == "outbox 100% full (1 similar messages suppressed in the last 10.0 s)"


def test_records_name_the_caller_and_carry_exceptions(log: RateLimitedLog, caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("handler failed", "handler failed")
    log.log(logging.INFO, "other", "other")
    first, second = caplog.records
    assert first.exc_info is not None
    assert first.exc_info[0] is RuntimeError
    assert first.levelno == logging.ERROR
    assert {first.funcName, second.funcName} == {"test_records_name_the_caller_and_carry_exceptions"}
    assert first.pathname == __file__


def test_kinds_beyond_the_maximum_share_one_limit(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=NAME)
    log = RateLimitedLog(logging.getLogger(NAME), clock=clock, per_window=2, max_kinds=2)
    log.warning("a", "a")
    log.warning("b", "b")
    for i in range(10_000):  # a bug: kinds made of peer text
        log.warning(f"route {i}\n", "unknown route")
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert records[:2] == [("WARNING", "a"), ("WARNING", "b")]
    assert records[2][0] == "ERROR"
    assert "kinds must be constant strings; this one is 'route 0\\n'" in records[2][1]
    assert records[3:] == [("WARNING", "unknown route")] * 2
    assert log.suppressed_total == 10_000 - 2
    assert log.flush() == 10_000 - 2
    assert (
        caplog.records[-1].getMessage() == "9998 similar messages suppressed in the last 0.0 s (kinds beyond max_kinds)"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"per_window": 0}, "per_window"),
        ({"window": 0.0}, "window"),
        ({"window": float("inf")}, "window"),
        ({"window": float("nan")}, "window"),
        ({"max_kinds": 0}, "max_kinds"),
    ],
)
def test_rate_limited_log_arguments_are_checked(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RateLimitedLog(logging.getLogger(NAME), **kwargs)  # type: ignore[arg-type]


def test_what_a_window_suppressed_is_reported_when_it_ends_by_any_later_record(
    log: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(25):
        log.warning("unknown route", "unknown route")
    caplog.clear()
    clock.now += 9.9
    log.warning("slow consumer", "slow")  # the window of "unknown route" goes on: nothing reported
    assert messages(caplog) == ["slow"]
    clock.now += 0.1
    log.info("slow consumer", "slow again")  # "unknown route" has no record of its own any more
    assert [(r.levelno, r.getMessage()) for r in caplog.records[1:]] == [
        (logging.WARNING, "15 similar messages suppressed in the last 10.0 s (unknown route)"),
        (logging.INFO, "slow again"),
    ]
    assert log.pending("unknown route") == 0
    clock.now += 100
    log.warning("slow consumer", "slow")  # reported once only
    assert len(caplog.records) == 4


def test_flush_due_reports_the_windows_that_ended_and_only_those(
    log: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(12):
        log.warning("unknown route", "unknown route")
    clock.now += 5
    for _ in range(13):
        log.warning("slow consumer", "slow")
    caplog.clear()
    assert log.flush_due() == 0  # neither window has ended
    clock.now += 5
    assert log.flush_due() == 2
    assert messages(caplog) == ["2 similar messages suppressed in the last 10.0 s (unknown route)"]
    clock.now += 5
    assert log.flush_due() == 3
    assert log.flush_due() == 0
    assert len(caplog.records) == 2
