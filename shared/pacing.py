"""Adaptive pacing of ARM and Resource Graph requests: as fast as Azure allows, no faster.

ARM throttles each subscription with token buckets (reads, writes, deletes) and announces what
is left on every response; Resource Graph throttles each user with a quota per window. Neither
bucket is known in advance (it differs between subscriptions and is shared with every other
tool running there), so the :class:`Pacer` learns it from the responses:

* ``x-ms-ratelimit-remaining-subscription-reads`` / ``-writes`` / ``-deletes`` on every ARM
  response: the tokens left in that bucket (Azure Resource Manager, "Understand how Azure
  Resource Manager throttles requests", learn.microsoft.com/azure/azure-resource-manager/
  management/request-limits-and-throttling: per subscription, buckets of 250 reads refilled
  25/s and 200 writes / 200 deletes refilled 10/s; 429 with ``Retry-After`` when empty);
* ``x-ms-user-quota-remaining`` and ``x-ms-user-quota-resets-after`` (``hh:mm:ss``) on every
  Resource Graph response (learn.microsoft.com/azure/governance/resource-graph/concepts/
  guidance-for-throttled-requests: by default 15 queries per 5-second window per user);
* ``Retry-After`` (seconds) on every 429: nothing goes out on that bucket before it passes.

Policy per bucket: with nothing known, one request at a time until a response announces the
budget (a cautious start); afterwards a request goes out only while the announced remainder,
minus what was sent since, plus what the bucket has refilled at the *measured* net refill rate,
stays above a reserve kept for the other tools in the subscription (default 20% of the largest
remainder seen, i.e. of the bucket as ARM reports it). The net refill rate is measured from
consecutive announcements, so other clients' use of the same bucket is accounted for. The old
static settings (``KEYSTEWARD_ARM_WRITE_BURST`` / ``_WRITES_PER_S``) remain as optional caps.

The pacer is time-agnostic: ``sleep`` and ``monotonic`` are passed in (real time in Azure; the
sandbox's clock in tests and benchmarks, where the sandbox's buckets refill on that clock).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

# ARM's announcement headers (request-limits-and-throttling, "Remaining requests").
HEADER_REMAINING = {
    "reads": "x-ms-ratelimit-remaining-subscription-reads",
    "writes": "x-ms-ratelimit-remaining-subscription-writes",
    "deletes": "x-ms-ratelimit-remaining-subscription-deletes",
}
# Resource Graph's (guidance-for-throttled-requests, "Understand throttling headers").
GRAPH_REMAINING = "x-ms-user-quota-remaining"
GRAPH_RESETS_AFTER = "x-ms-user-quota-resets-after"

DEFAULT_RESERVE = 0.2
ARM_WRITE_REFILL_PER_S = 10.0  # request-limits-and-throttling: subscription writes refill 10/s
# Before the first measurement of a bucket's refill, assume this net rate (tokens/s): low on
# purpose (ARM's own refills are 10-25/s), so a wrong guess costs one short wait, not 429s.
INITIAL_REFILL_PER_S = 1.0
# A waiting request re-checks at least this often (seconds), so it notices an announcement
# that another thread received meanwhile.
MAX_SINGLE_WAIT_S = 1.0
# Token counts are floats: a remainder this close to a whole token counts as one.
EPSILON = 1e-6
MIN_WAIT_S = 1e-3
# While the first request on a bucket is out, the others look again this often (seconds).
CAUTIOUS_POLL_S = 0.05
# The refill estimate is an exponentially weighted average; this is the weight of a new sample.
REFILL_SMOOTHING = 0.5
# Two announcements closer together than this (seconds) are too close to measure a rate.
MIN_MEASURE_S = 0.2
# With nothing in flight and no fresh announcement for this long, one probe request may go
# out to learn the current remainder (buckets refill even when the estimate says otherwise).
PROBE_AFTER_S = 5.0


class Kind(StrEnum):
    READS = "reads"
    WRITES = "writes"
    DELETES = "deletes"
    GRAPH = "graph"


def kind_of(method: str) -> Kind:
    """ARM's operation type for an HTTP method (request-limits-and-throttling)."""
    upper = method.upper()
    if upper in ("GET", "HEAD"):
        return Kind.READS
    if upper == "DELETE":
        return Kind.DELETES
    return Kind.WRITES


_SUBSCRIPTION = re.compile(r"/subscriptions/([^/?#]+)", re.IGNORECASE)
_GRAPH_PATH = re.compile(r"/providers/microsoft\.resourcegraph/resources\b", re.IGNORECASE)


def bucket_of(method: str, url: str) -> tuple[str, Kind]:
    """(scope, kind) of a management-plane request: the subscription (lower-cased) and ARM's
    operation type, ``("tenant", kind)`` for a tenant-level request, or ``("graph", GRAPH)``
    for a Resource Graph query (a POST that Resource Graph meters as a query per user)."""
    if _GRAPH_PATH.search(url):
        return "graph", Kind.GRAPH
    m = _SUBSCRIPTION.search(url)
    return (m.group(1).lower() if m else "tenant"), kind_of(method)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds); ``None`` when absent or not a
    non-negative finite number (an HTTP date is not used by ARM's throttling answers)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_resets_after(value: str | None) -> float | None:
    """Seconds from ``x-ms-user-quota-resets-after`` (``hh:mm:ss``); ``None`` when unreadable."""
    if not value:
        return None
    parts = value.strip().split(":")
    if len(parts) != 3:
        return None
    try:
        h, m, s = (float(p) for p in parts)
    except ValueError:
        return None
    total = h * 3600 + m * 60 + s
    return total if math.isfinite(total) and total >= 0 else None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


@dataclass
class _Bucket:
    """What is known of one (scope, kind) bucket."""

    announced: float | None = None  # the remainder last announced
    announced_at: float = 0.0
    announced_seq: int = 0  # how many requests had been sent when the announced one went out
    sent: int = 0  # requests sent on this bucket so far
    in_flight: int = 0
    refill: float = INITIAL_REFILL_PER_S  # measured net refill (tokens/s), after other clients
    measured: bool = False
    capacity: float = 0.0  # the largest remainder seen (+1 for the request that announced it)
    blocked_until: float = 0.0  # Retry-After / quota reset
    no_header: bool = False  # responses came back without any announcement: do not pace
    window_resets_at: float | None = None  # Resource Graph: when the quota window resets
    cap_tokens: float | None = None  # optional static cap (token bucket)
    cap_at: float = 0.0


@dataclass(frozen=True)
class Cap:
    """An optional static cap on one kind: a token bucket of ``burst`` refilled at ``rate``/s."""

    burst: float
    rate: float


class Pacer:
    """Per-(scope, kind) adaptive pacing; thread-safe; one per process (the client factory's).

    :meth:`acquire` blocks until a request may go out and returns a ticket; :meth:`observe`
    reads the response's headers with that ticket. Both are called by :class:`PacingPolicy`
    around every management-plane request, so nothing else in keysteward paces ARM.
    """

    def __init__(
        self,
        *,
        reserve: float = DEFAULT_RESERVE,
        caps: Mapping[Kind, Cap] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(reserve) and 0.0 <= reserve < 1.0):
            raise ValueError(f"reserve must be a fraction in [0, 1), not {reserve!r}")
        self.reserve = reserve
        self._caps = dict(caps or {})
        self._sleep = sleep
        self._monotonic = monotonic
        self._cond = threading.Lock()
        self._buckets: dict[tuple[str, Kind], _Bucket] = {}
        self.waited_s = 0.0  # total time requests spent waiting here (for reports)
        self.throttled = 0  # 429s seen

    def _bucket(self, scope: str, kind: Kind) -> _Bucket:
        key = (scope, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        return bucket

    def snapshot(self, scope: str, kind: Kind) -> dict[str, float | bool | None]:
        """What is known of one bucket (for logs, tests and benchmarks)."""
        with self._cond:
            b = self._bucket(scope, kind)
            return {"announced": b.announced, "refill": b.refill, "measured": b.measured,
                    "capacity": b.capacity, "sent": b.sent, "in_flight": b.in_flight}

    # ---- decisions -----------------------------------------------------------------------------
    def _wait_for(self, b: _Bucket, kind: Kind, now: float) -> float:
        """0 when a request may go out now, else how long to wait (seconds) before re-checking."""
        if now < b.blocked_until:
            return b.blocked_until - now
        cap = self._caps.get(kind)
        if cap is not None:
            tokens = cap.burst if b.cap_tokens is None else min(
                cap.burst, b.cap_tokens + max(0.0, now - b.cap_at) * cap.rate)
            if tokens < 1.0 - EPSILON:
                return max(MIN_WAIT_S, (1.0 - tokens) / cap.rate)
        if b.no_header:
            return 0.0
        if b.announced is None:
            # Cautious start: one request at a time until a response announces the budget.
            return 0.0 if b.in_flight == 0 else CAUTIOUS_POLL_S
        if kind is Kind.GRAPH:
            return self._graph_wait(b, now)
        since = b.sent - b.announced_seq  # sent after the announcing request went out
        refilled = b.refill * max(0.0, now - b.announced_at)
        available = b.announced + refilled - since - self.reserve * b.capacity
        if available >= 1.0 - EPSILON:
            return 0.0
        if b.in_flight == 0 and now - b.announced_at >= PROBE_AFTER_S:
            return 0.0  # learn the current remainder rather than trust a stale estimate
        rate = max(b.refill, 1e-3)
        # Never a vanishing wait: on a large clock value it would not move time at all.
        return min(MAX_SINGLE_WAIT_S, max(MIN_WAIT_S, (1.0 - available) / rate))

    def _graph_wait(self, b: _Bucket, now: float) -> float:
        if b.window_resets_at is not None and now >= b.window_resets_at:
            return 0.0  # a new window: its quota is whole again
        since = b.sent - b.announced_seq
        assert b.announced is not None  # noqa: S101 - checked by the caller
        available = b.announced - since - self.reserve * b.capacity
        if available >= 1.0 - EPSILON:
            return 0.0
        if b.window_resets_at is None:
            return 0.0 if b.in_flight == 0 else CAUTIOUS_POLL_S
        return max(MIN_WAIT_S, b.window_resets_at - now)

    def acquire(self, scope: str, kind: Kind) -> int:
        """Blocks until a request on (scope, kind) may go out; returns its ticket (sequence)."""
        scope = scope.lower()
        while True:
            with self._cond:
                b = self._bucket(scope, kind)
                now = self._monotonic()
                wait = self._wait_for(b, kind, now)
                if wait <= 0.0:
                    cap = self._caps.get(kind)
                    if cap is not None:
                        tokens = cap.burst if b.cap_tokens is None else min(
                            cap.burst, b.cap_tokens + max(0.0, now - b.cap_at) * cap.rate)
                        b.cap_tokens, b.cap_at = tokens - 1.0, now
                    b.sent += 1
                    b.in_flight += 1
                    return b.sent
            self.waited_s += wait
            self._sleep(wait)

    def release(self, scope: str, kind: Kind) -> None:
        """A request that got no response (connection error): no longer in flight."""
        with self._cond:
            b = self._bucket(scope.lower(), kind)
            b.in_flight = max(0, b.in_flight - 1)

    def observe(self, scope: str, kind: Kind, ticket: int, *, status: int,
                headers: Mapping[str, str]) -> None:
        """Learns from the response to the request holding ``ticket``. ``headers`` must be
        case-insensitive or lower-cased."""
        scope = scope.lower()
        now = self._monotonic()
        with self._cond:
            b = self._bucket(scope, kind)
            b.in_flight = max(0, b.in_flight - 1)
            if status == 429:
                self.throttled += 1
                retry = parse_retry_after(headers.get("retry-after"))
                b.blocked_until = max(b.blocked_until, now + (retry if retry is not None else MAX_SINGLE_WAIT_S))
                b.announced, b.announced_at, b.announced_seq = 0.0, now, max(b.announced_seq, ticket)
                b.no_header = False
                if kind is Kind.GRAPH:
                    b.window_resets_at = b.blocked_until
                return
            if kind is Kind.GRAPH:
                self._observe_graph(b, ticket, now, headers)
                return
            remaining = _int_header(headers, HEADER_REMAINING[kind.value])
            if remaining is None:
                if b.announced is None:
                    b.no_header = True  # this endpoint does not announce: rely on 429s only
                return
            b.no_header = False
            b.capacity = max(b.capacity, remaining + 1.0)
            if ticket < b.announced_seq:
                return  # an older answer than the one already known
            if b.announced is not None and now - b.announced_at >= MIN_MEASURE_S:
                # Net refill between two announcements: what came back plus what we spent.
                spent = ticket - b.announced_seq
                sample = (remaining - b.announced + spent) / (now - b.announced_at)
                if sample > 0:
                    b.refill = sample if not b.measured else (
                        REFILL_SMOOTHING * sample + (1 - REFILL_SMOOTHING) * b.refill)
                    b.measured = True
            b.announced, b.announced_at, b.announced_seq = float(remaining), now, ticket

    def _observe_graph(self, b: _Bucket, ticket: int, now: float, headers: Mapping[str, str]) -> None:
        remaining = _int_header(headers, GRAPH_REMAINING)
        resets = parse_resets_after(headers.get(GRAPH_RESETS_AFTER))
        if remaining is None:
            if b.announced is None:
                b.no_header = True
            return
        b.no_header = False
        b.capacity = max(b.capacity, remaining + 1.0)
        if ticket < b.announced_seq:
            return
        b.announced, b.announced_at, b.announced_seq = float(remaining), now, ticket
        b.window_resets_at = now + resets if resets is not None else None


def caps_from(*, write_burst: int | None, writes_per_s: float | None) -> dict[Kind, Cap]:
    """The optional static write cap from the old settings (both or either may be set)."""
    if write_burst is None and writes_per_s is None:
        return {}
    # Only a rate: a burst of one second's worth; only a burst: refilled at ARM's documented 10/s.
    rate = writes_per_s if writes_per_s is not None else ARM_WRITE_REFILL_PER_S
    burst = float(write_burst) if write_burst is not None else max(1.0, rate)
    return {Kind.WRITES: Cap(burst=max(1.0, burst), rate=rate), Kind.DELETES: Cap(burst=max(1.0, burst), rate=rate)}
