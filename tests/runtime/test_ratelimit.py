"""TokenBucket and RateLimiter: the bucket's invariants, and the kick policy against floods and login bursts."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trionano._ratelimit import (
    DEFAULT_BURST,
    DEFAULT_KICK_AFTER,
    DEFAULT_RATE,
    PeerBudgets,
    RateLimiter,
    TokenBucket,
    Verdict,
)

rates = st.floats(min_value=0.01, max_value=1e6)
bursts = st.floats(min_value=1.0, max_value=1e5)
# a run: increments of time between calls, and how many tokens each call asks for
gaps = st.floats(min_value=0.0, max_value=10.0)
steps = st.lists(st.tuples(gaps, st.sampled_from([0.5, 1.0, 1.0, 1.0, 2.0, 7.0])), max_size=300)


def stream(rate: float, seconds: float, start: float = 0.0) -> list[float]:
    """Arrival times of ``rate`` messages per second, evenly spaced, over ``seconds``."""
    return [start + i / rate for i in range(round(rate * seconds))]


def verdicts(limiter: RateLimiter, times: list[float]) -> list[Verdict]:
    return [limiter.check(t) for t in times]


# --- TokenBucket --------------------------------------------------------------------------------------------------


@given(rates, bursts, steps)
def test_tokens_stay_within_zero_and_burst(rate: float, burst: float, run: list[tuple[float, float]]) -> None:
    bucket = TokenBucket(rate, burst)
    now = 0.0
    for gap, n in run:
        now += gap
        bucket.take(now, n)
        assert 0.0 <= bucket.tokens(now) <= burst


@given(rates, bursts, steps)
@example(200.0, 1000.0, [(0.0, 1.0)] * 300 + [(0.001, 1.0)] * 100)
def test_accepted_never_exceeds_burst_plus_refill(rate: float, burst: float, run: list[tuple[float, float]]) -> None:
    bucket = TokenBucket(rate, burst)
    now = start = 0.0
    accepted = 0.0
    takes = 0
    for gap, n in run:
        now += gap
        if bucket.take(now, n):
            accepted += n
            takes += 1
        bound = burst + rate * (now - start)
        assert accepted <= bound + 1e-6 * takes + 1e-12 * bound  # the slack forgiven per take, float rounding


@given(rates, bursts, st.floats(min_value=0.01, max_value=1.0), st.integers(min_value=1, max_value=2000))
def test_steady_stream_under_the_rate_is_never_refused(rate: float, burst: float, fraction: float, count: int) -> None:
    bucket = TokenBucket(rate, burst)
    interval = 1.0 / (rate * fraction)  # `fraction` of the rate
    assert all(bucket.take(i * interval) for i in range(count))


def test_refusal_takes_nothing_and_the_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.tokens(100.0) == 0.0
    assert not bucket.take(100.05)  # half a token
    assert bucket.tokens(100.05) == pytest.approx(0.5)
    assert bucket.take(100.1)
    assert not bucket.take(100.1, 0.5)
    assert bucket.take(1000.0, 3.0)  # refilled, capped at burst
    assert not bucket.take(1000.0, 3.5)  # more than burst: never
    assert bucket.tokens(1000.0) == 0.0


def test_starts_full_whatever_the_clock_origin() -> None:
    for origin in (-1e9, 0.0, 12345.678):
        bucket = TokenBucket(rate=1.0, burst=5.0)
        assert bucket.tokens(origin) == 5.0
        assert sum(bucket.take(origin) for _ in range(10)) == 5


def test_a_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=2.0)
    assert bucket.take(10.0, 2.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)  # still half a token short: the step back was no time at all
    assert bucket.take(11.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, -math.inf, math.nan])
def test_bucket_arguments_are_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(bad, 1.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1.0, bad)


# --- RateLimiter --------------------------------------------------------------------------------------------------


def test_defaults() -> None:
    limiter = RateLimiter()
    assert (limiter.rate, limiter.burst, limiter.kick_after) == (DEFAULT_RATE, DEFAULT_BURST, DEFAULT_KICK_AFTER)
    assert (DEFAULT_RATE, DEFAULT_BURST, DEFAULT_KICK_AFTER) == (500.0, 2000.0, 2000.0)
    from trionano import RateLimit

    assert (RateLimit().rate, RateLimit().burst, RateLimit().kick_after) == (500.0, 2000.0, 2000.0)


@pytest.mark.parametrize("size", [200, 1000])
def test_login_burst_in_one_write_is_accepted_in_full(size: int) -> None:
    limiter = RateLimiter()
    assert verdicts(limiter, [5.0] * size) == [Verdict.OK] * size
    assert limiter.refused == 0
    # and the client carries on at a normal pace afterwards
    assert set(verdicts(limiter, stream(20.0, 60.0, start=5.1))) == {Verdict.OK}


def test_a_burst_over_the_bucket_is_refused_in_part_but_not_kicked() -> None:
    limiter = RateLimiter()
    burst, patience = int(DEFAULT_BURST), int(DEFAULT_KICK_AFTER)
    result = verdicts(limiter, [0.0] * (burst + patience))
    assert result == [Verdict.OK] * burst + [Verdict.REFUSE] * patience
    assert limiter.refused == patience
    assert limiter.check(0.0) is Verdict.KICK  # one more, all at once: patience is spent
    # patience refills: after a pause the client is welcome again
    assert verdicts(limiter, stream(20.0, 10.0, start=10.0)) == [Verdict.OK] * 200


def test_flood_of_20k_per_second_is_refused_then_kicked_within_a_second() -> None:
    limiter = RateLimiter()
    result = verdicts(limiter, stream(20_000.0, 2.0))
    kicked_at = result.index(Verdict.KICK) / 20_000.0
    assert kicked_at < 0.3
    first_refusal = result.index(Verdict.REFUSE)
    assert set(result[:first_refusal]) == {Verdict.OK}
    assert first_refusal >= DEFAULT_BURST


@pytest.mark.parametrize(("flood", "within"), [(2_000.0, 6.0), (5_000.0, 2.0), (100_000.0, 0.1)])
def test_any_persistent_flood_over_twice_the_rate_is_kicked(flood: float, within: float) -> None:
    limiter = RateLimiter()
    result = verdicts(limiter, stream(flood, within))
    assert Verdict.KICK in result
    expected = DEFAULT_BURST / (flood - DEFAULT_RATE) + DEFAULT_KICK_AFTER / (flood - 2 * DEFAULT_RATE)
    assert result.index(Verdict.KICK) / flood == pytest.approx(expected, rel=0.05)


def test_between_the_rate_and_twice_the_rate_is_refused_but_never_kicked() -> None:
    limiter = RateLimiter()
    result = verdicts(limiter, stream(1.9 * DEFAULT_RATE, 120.0))
    assert Verdict.KICK not in result
    assert Verdict.REFUSE in result
    accepted = result.count(Verdict.OK)
    assert accepted <= DEFAULT_BURST + DEFAULT_RATE * 120.0
    assert limiter.refused == result.count(Verdict.REFUSE)


@given(
    st.floats(min_value=1.0, max_value=1e4),
    st.floats(min_value=1.0, max_value=1e4),
    st.floats(min_value=1.0, max_value=1e4),
    st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=500),
)
def test_limiter_invariants(rate: float, burst: float, kick_after: float, gaps_: list[float]) -> None:
    """OK never exceeds the bucket's bound; every non-OK is counted; KICK only after more than `kick_after`
    refusals (net of forgiveness, which is at most `rate` per second)."""
    limiter = RateLimiter(rate, burst, kick_after)
    now = 0.0
    ok = refused = 0
    for gap in gaps_:
        now += gap
        verdict = limiter.check(now)
        if verdict is Verdict.OK:
            ok += 1
        else:
            refused += 1
        if verdict is Verdict.KICK:
            assert refused > kick_after - 1e-6 * refused
        bound = burst + rate * now
        assert ok <= bound + 1e-6 * ok + 1e-12 * bound
    assert limiter.refused == refused


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, 10.0, 10.0), "rate"),
        ((10.0, math.nan, 10.0), "burst"),
        ((10.0, 0.5, 10.0), "burst"),
        ((10.0, 10.0, 0.0), "kick_after"),
        ((10.0, 10.0, math.inf), "kick_after"),
    ],
)
def test_limiter_arguments_are_validated(args: tuple[float, float, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RateLimiter(*args)


@pytest.mark.parametrize("origin", [0.0, 1e6, 1e8])  # clocks far from zero have coarser floats
@pytest.mark.parametrize("rate", [7.0, 200.0, DEFAULT_RATE, 30_000.0])
def test_a_stream_at_exactly_the_rate_survives_float_rounding(origin: float, rate: float) -> None:
    """With a burst of 2 or more, rounding never refuses a stream at exactly the rate. With a burst of 1 the slack
    alone must absorb it: enough for 30,000/s at an uptime of 11 days (now = 1e6 s), or for 200/s at 3 years."""
    times = stream(rate, 100_000 / rate, start=origin)
    bucket = TokenBucket(rate, burst=2.0)
    assert all(bucket.take(t) for t in times)
    if origin <= 1e6 or rate <= 200.0:
        bucket = TokenBucket(rate, burst=1.0)
        assert all(bucket.take(t) for t in times)


# --- PeerBudgets: what a server remembers across reconnects -----------------------------------------------------


def exhaust(limiter: RateLimiter, now: float) -> None:
    while limiter.check(now) is not Verdict.KICK:
        pass


def test_a_peer_that_went_over_its_limit_goes_on_from_where_it_left() -> None:
    budgets = PeerBudgets(rate=10, burst=100, kick_after=50)
    first = budgets.opened("1.2.3.4", 0.0)
    exhaust(first, 0.0)
    budgets.closed("1.2.3.4", first, 0.0)
    again = budgets.opened("1.2.3.4", 0.5)  # 5 tokens refilled, and 5 of patience
    assert [again.check(0.5) for _ in range(5)] == [Verdict.OK] * 5
    assert [again.check(0.5) for _ in range(6)] == [Verdict.REFUSE] * 5 + [Verdict.KICK]
    assert budgets.opened("5.6.7.8", 0.5).tokens(0.5) == 100  # another peer: its own
    assert budgets.opened(None, 0.5).tokens(0.5) == 100  # an unknown one: fresh


def test_a_peer_within_its_limit_leaves_nothing_and_entries_expire() -> None:
    budgets = PeerBudgets(rate=10, burst=100, kick_after=50)
    polite = budgets.opened("1.2.3.4", 0.0)
    assert all(polite.check(0.0) is Verdict.OK for _ in range(90))
    budgets.closed("1.2.3.4", polite, 0.0)
    assert len(budgets) == 0  # a login burst within the limit: nothing remembered
    assert budgets.opened("1.2.3.4", 0.0).tokens(0.0) == 100
    flooder = budgets.opened("1.2.3.4", 0.0)
    exhaust(flooder, 0.0)
    budgets.closed("1.2.3.4", flooder, 0.0)
    assert len(budgets) == 1
    assert budgets.opened("1.2.3.4", 10.0).tokens(10.0) == 100  # refilled after burst / rate = 10 s
    budgets.opened("9.9.9.9", 10.0)
    assert len(budgets) == 0  # and forgotten


def test_peer_memory_is_bounded_oldest_first() -> None:
    budgets = PeerBudgets(rate=10, burst=100, kick_after=50, max_peers=3)
    for i in range(10):
        limiter = budgets.opened(f"10.0.0.{i}", 0.0)
        exhaust(limiter, 0.0)
        budgets.closed(f"10.0.0.{i}", limiter, 0.0)
        assert len(budgets) <= 3
    assert budgets.opened("10.0.0.9", 0.0).tokens(0.0) < 1  # the newest are remembered
    assert budgets.opened("10.0.0.0", 0.0).tokens(0.0) == 100  # the oldest forgotten
    assert len(PeerBudgets(10, 100, 50, max_peers=0)) == 0
    with pytest.raises(ValueError, match="max_peers"):
        PeerBudgets(10, 100, 50, max_peers=-1)
