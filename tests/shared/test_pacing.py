"""The adaptive pacer against a token bucket that behaves like ARM's (announces what is left,
answers 429 with Retry-After when empty), on a simulated clock."""

from __future__ import annotations

import math

import pytest

from shared.config import load_settings
from shared.errors import ConfigError
from shared.pacing import (
    GRAPH_REMAINING,
    GRAPH_RESETS_AFTER,
    HEADER_REMAINING,
    Kind,
    Pacer,
    bucket_of,
    caps_from,
    parse_resets_after,
    parse_retry_after,
)


class SimTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)

    def monotonic(self) -> float:
        return self.now


class ArmBucket:
    """ARM's per-subscription bucket: ``capacity`` tokens refilled at ``refill``/s, with another
    client taking ``other_per_s`` of the refill."""

    def __init__(self, time: SimTime, *, capacity: float, refill: float, other_per_s: float = 0.0) -> None:
        self.time, self.capacity, self.refill, self.other = time, capacity, refill, other_per_s
        self.tokens, self.at = capacity, 0.0
        self.throttled = 0
        self.granted = 0
        self.min_tokens = capacity

    def _refill(self) -> None:
        elapsed = self.time.now - self.at
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill)
        self.tokens = max(0.0, self.tokens - elapsed * self.other)
        self.at = self.time.now

    def request(self) -> tuple[int, dict[str, str]]:
        self._refill()
        if self.tokens < 1.0:
            self.throttled += 1
            wait = math.ceil((1.0 - self.tokens) / max(self.refill - self.other, 0.1))
            return 429, {"retry-after": str(wait), HEADER_REMAINING["writes"]: "0"}
        self.tokens -= 1.0
        self.granted += 1
        self.min_tokens = min(self.min_tokens, self.tokens)
        return 200, {HEADER_REMAINING["writes"]: str(int(self.tokens))}


def drive(pacer: Pacer, bucket: ArmBucket, n: int) -> list[tuple[float, int, float | None]]:
    """Sends ``n`` successful writes one after the other (retrying 429s); returns, per request
    sent, (time, requests sent since the last announcement, that announcement)."""
    log: list[tuple[float, int, float | None]] = []
    done = 0
    last_announced: float | None = None
    since = 0
    while done < n:
        ticket = pacer.acquire("sub-a", Kind.WRITES)
        since += 1
        log.append((bucket.time.now, since, last_announced))
        status, headers = bucket.request()
        pacer.observe("sub-a", Kind.WRITES, ticket, status=status, headers=headers)
        last_announced, since = float(headers[HEADER_REMAINING["writes"]]), 0
        if status == 200:
            done += 1
    return log


@pytest.mark.parametrize(("capacity", "refill"), [(200, 10.0), (50, 10.0), (1000, 50.0)])
def test_the_pacer_never_sends_more_than_arm_announced_and_meets_no_429(capacity: int, refill: float) -> None:
    time = SimTime()
    bucket = ArmBucket(time, capacity=capacity, refill=refill)
    pacer = Pacer(sleep=time.sleep, monotonic=time.monotonic)
    log = drive(pacer, bucket, 1000)
    assert bucket.throttled == 0
    # Nothing was ever sent beyond the announced remainder plus what ARM refilled meanwhile.
    for (at, since, announced), (prev_at, _, _) in zip(log[1:], log, strict=False):
        assert announced is not None
        assert since <= announced + refill * (at - prev_at) + 1e-9
    # The reserve (20% of the bucket as ARM reports it) is left to other tools, almost always.
    assert bucket.min_tokens >= 0.2 * capacity - refill - 1
    # And the budget is used: the bound is (N - 80% of the bucket) / refill.
    bound = (1000 - 0.8 * capacity) / refill
    assert time.now <= bound * 1.10 + 1.0


def test_another_client_sharing_the_bucket_slows_the_pacer_to_what_is_left() -> None:
    time = SimTime()
    bucket = ArmBucket(time, capacity=200, refill=10.0, other_per_s=5.0)
    pacer = Pacer(sleep=time.sleep, monotonic=time.monotonic)
    drive(pacer, bucket, 600)
    assert bucket.throttled <= 2  # learnt from the announcements, not from 429s
    bound = (600 - 0.8 * 200) / 5.0
    assert time.now <= bound * 1.15
    assert pacer.snapshot("sub-a", Kind.WRITES)["refill"] == pytest.approx(5.0, rel=0.3)


def test_a_429_blocks_the_bucket_for_its_retry_after() -> None:
    time = SimTime()
    pacer = Pacer(sleep=time.sleep, monotonic=time.monotonic)
    ticket = pacer.acquire("sub-a", Kind.WRITES)
    pacer.observe("sub-a", Kind.WRITES, ticket, status=429, headers={"retry-after": "7"})
    pacer.acquire("sub-a", Kind.WRITES)
    assert time.now >= 7.0
    assert pacer.throttled == 1


def test_nothing_known_means_one_request_at_a_time() -> None:
    time = SimTime()
    pacer = Pacer(sleep=lambda s: time.sleep(s), monotonic=time.monotonic)  # noqa: PLW0108 - late-bound: the test swaps it
    first = pacer.acquire("sub-b", Kind.READS)
    assert time.slept == []
    # A second request would wait for the first answer; answer it from "another thread" when
    # the second one starts waiting.
    original = time.sleep

    def answer_then_sleep(seconds: float) -> None:
        pacer.observe("sub-b", Kind.READS, first, status=200, headers={HEADER_REMAINING["reads"]: "249"})
        original(seconds)

    time.sleep = answer_then_sleep  # type: ignore[method-assign]  # the simulated clock's own hook
    pacer.acquire("sub-b", Kind.READS)
    assert len(time.slept) == 1


def test_subscriptions_are_paced_separately_and_unannounced_endpoints_are_not_paced() -> None:
    time = SimTime()
    pacer = Pacer(sleep=time.sleep, monotonic=time.monotonic)
    for sub in ("s1", "s2"):
        ticket = pacer.acquire(sub, Kind.WRITES)
        pacer.observe(sub, Kind.WRITES, ticket, status=200, headers={HEADER_REMAINING["writes"]: "0"})
    ticket = pacer.acquire("s3", Kind.WRITES)
    pacer.observe("s3", Kind.WRITES, ticket, status=200, headers={})
    for _ in range(50):
        pacer.acquire("s3", Kind.WRITES)
    assert time.now == 0.0


def test_resource_graph_quota_is_honoured() -> None:
    time = SimTime()
    pacer = Pacer(sleep=time.sleep, monotonic=time.monotonic)
    window_start, used, throttled = 0.0, 0, 0
    for _ in range(60):
        ticket = pacer.acquire("graph", Kind.GRAPH)
        if time.now >= window_start + 5.0:
            window_start, used = time.now, 0
        if used >= 15:
            throttled += 1
        used += 1
        resets = max(0, math.ceil(window_start + 5.0 - time.now))
        pacer.observe("graph", Kind.GRAPH, ticket, status=200, headers={
            GRAPH_REMAINING: str(max(0, 15 - used)), GRAPH_RESETS_AFTER: f"00:00:{resets:02d}"})
    assert throttled == 0
    assert time.now > 0


def test_static_caps_from_the_old_settings_still_limit() -> None:
    time = SimTime()
    pacer = Pacer(caps=caps_from(write_burst=5, writes_per_s=1.0), sleep=time.sleep, monotonic=time.monotonic)
    for _ in range(10):
        ticket = pacer.acquire("s", Kind.WRITES)
        pacer.observe("s", Kind.WRITES, ticket, status=200, headers={HEADER_REMAINING["writes"]: "199"})
    assert time.now == pytest.approx(5.0)


def test_header_parsing_and_buckets() -> None:
    assert bucket_of("PATCH", "https://m/subscriptions/ABC/resourceGroups/r?x=1") == ("abc", Kind.WRITES)
    assert bucket_of("GET", "https://m/subscriptions/abc/providers/x") == ("abc", Kind.READS)
    assert bucket_of("DELETE", "https://m/subscriptions/abc/x") == ("abc", Kind.DELETES)
    assert bucket_of("POST", "https://m/providers/Microsoft.ResourceGraph/resources?api-version=1") == (
        "graph", Kind.GRAPH)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("nan") is None
    assert parse_retry_after("-1") is None
    assert parse_resets_after("00:01:05") == 65.0
    assert parse_resets_after("bad") is None
    with pytest.raises(ValueError, match="reserve"):
        Pacer(reserve=float("nan"))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "95", "-1"])
def test_the_reserve_setting_refuses_non_finite_and_out_of_range_values(value: str) -> None:
    with pytest.raises(ConfigError, match="KEYSTEWARD_ARM_RESERVE_PERCENT"):
        load_settings({"KEYSTEWARD_SUBSCRIPTIONS": "s", "KEYSTEWARD_VAULTS": "https://v.vault.azure.net",
                       "KEYSTEWARD_ARM_RESERVE_PERCENT": value})


def test_old_budget_settings_are_optional_caps() -> None:
    base = {"KEYSTEWARD_SUBSCRIPTIONS": "s", "KEYSTEWARD_VAULTS": "https://v.vault.azure.net"}
    settings = load_settings(base)
    assert settings.arm_write_burst is None
    assert settings.arm_writes_per_s is None
    assert settings.arm_reserve == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="KEYSTEWARD_ARM_WRITES_PER_S"):
        load_settings({**base, "KEYSTEWARD_ARM_WRITES_PER_S": "nan"})
    capped = load_settings({**base, "KEYSTEWARD_ARM_WRITE_BURST": "50", "KEYSTEWARD_ARM_RESERVE_PERCENT": "10"})
    assert capped.arm_write_burst == 50
    assert capped.arm_reserve == pytest.approx(0.1)
