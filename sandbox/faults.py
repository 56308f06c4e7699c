"""Fault injection and throttling, settable while the sandbox runs.

Fault rules match on method and a path regex (and optionally a host regex) and answer with
a status (optionally with ``Retry-After``), add latency, or drop the connection, a given
number of ``times`` (or forever). Throttling is a token bucket per subscription for ARM reads
and writes (Azure's defaults: writes 200 refilling 10/s, reads 250 refilling 25/s) and per
vault for Key Vault, refilled by the sandbox clock, and a quota per window for Resource Graph.

Throttling answers carry the headers Azure sends (cited where each is built):
``x-ms-ratelimit-remaining-subscription-reads|writes|deletes`` on every ARM response and
``Retry-After`` on a 429 (learn.microsoft.com/azure/azure-resource-manager/management/
request-limits-and-throttling); ``x-ms-user-quota-remaining`` and
``x-ms-user-quota-resets-after`` (``hh:mm:ss``) on every Resource Graph response
(learn.microsoft.com/azure/governance/resource-graph/concepts/guidance-for-throttled-requests).
"""

from __future__ import annotations

import math
import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultRule:
    method: str | None
    path: re.Pattern[str]
    host: re.Pattern[str] | None = None
    status: int | None = None
    retry_after: float | None = None
    times: int | None = None  # None = forever
    latency_ms: float = 0.0
    drop: bool = False
    probability: float = 1.0
    hits: int = 0

    @staticmethod
    def parse(raw: Any) -> FaultRule:
        """Validates one rule from the admin API; raises ValueError with the field at fault."""
        if not isinstance(raw, dict):
            raise ValueError("each rule must be a JSON object")  # noqa: TRY004 - callers map ValueError to 400
        known = {"method", "path", "host", "status", "retry_after", "times", "latency_ms", "drop", "probability"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
        method = raw.get("method")
        if method is not None and not isinstance(method, str):
            raise ValueError("method must be a string")
        try:
            path = re.compile(str(raw.get("path", ".*")))
            host = re.compile(str(raw["host"])) if raw.get("host") is not None else None
        except re.error as err:
            raise ValueError(f"path/host is not a valid regex: {err}") from err
        status = raw.get("status")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError("status must be an HTTP status code")
        times = raw.get("times")
        if times is not None and (not isinstance(times, int) or times < 0):
            raise ValueError("times must be a non-negative integer")
        retry_after = raw.get("retry_after")
        if retry_after is not None and (not isinstance(retry_after, int | float) or retry_after < 0):
            raise ValueError("retry_after must be a non-negative number")
        latency = raw.get("latency_ms", 0)
        if not isinstance(latency, int | float) or latency < 0:
            raise ValueError("latency_ms must be a non-negative number")
        prob = raw.get("probability", 1.0)
        if not isinstance(prob, int | float) or not 0 <= prob <= 1:
            raise ValueError("probability must be between 0 and 1")
        return FaultRule(
            method=method.upper() if method else None,
            path=path,
            host=host,
            status=status,
            retry_after=retry_after,
            times=times,
            latency_ms=float(latency),
            drop=bool(raw.get("drop", False)),
            probability=float(prob),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path.pattern,
            "host": self.host.pattern if self.host else None,
            "status": self.status,
            "retry_after": self.retry_after,
            "times": self.times,
            "latency_ms": self.latency_ms,
            "drop": self.drop,
            "probability": self.probability,
            "hits": self.hits,
        }


@dataclass
class FaultOutcome:
    latency_s: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    drop: bool = False


class FaultSet:
    def __init__(self, *, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []
        self._rng = random.Random(seed)

    def set_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self.rules = rules

    def clear(self) -> None:
        with self._lock:
            self.rules = []

    def match(self, method: str, host: str, path: str) -> FaultOutcome:
        """Latency adds up over every matching rule; the first matching status/drop rule wins."""
        out = FaultOutcome()
        with self._lock:
            for rule in self.rules:
                if rule.method and rule.method != method:
                    continue
                if not rule.path.search(path):
                    continue
                if rule.host and not rule.host.search(host):
                    continue
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                acts = rule.status is not None or rule.drop
                if acts and (out.status is not None or out.drop):
                    continue  # an earlier rule already decided the answer
                rule.hits += 1
                out.latency_s += rule.latency_ms / 1000.0
                if rule.drop:
                    out.drop = True
                elif rule.status is not None:
                    out.status = rule.status
                    out.retry_after = rule.retry_after
        return out


@dataclass
class TokenBucket:
    capacity: float
    refill_per_s: float
    tokens: float = field(default=-1.0)
    last: float = 0.0

    def take(self, now: float) -> tuple[bool, float, int]:
        """Takes a token at ``now`` (sandbox seconds): (granted, retry_after_s, remaining)."""
        if self.tokens < 0:
            self.tokens = self.capacity
            self.last = now
        elapsed = max(0.0, now - self.last)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_s)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, 0.0, int(self.tokens)
        wait = (1.0 - self.tokens) / self.refill_per_s if self.refill_per_s > 0 else 3600.0
        return False, wait, 0


@dataclass
class ThrottleSettings:
    enabled: bool = True
    arm_writes_per_s: float = 10.0
    arm_write_burst: float = 200.0
    arm_reads_per_s: float = 25.0
    arm_read_burst: float = 250.0
    # Key Vault, software keys, RSA 2048: 20 creates and 4,000 other operations per 10 s per vault.
    kv_creates_per_10s: float = 20.0
    kv_ops_per_10s: float = 4000.0
    # Resource Graph: queries per user per window (guidance-for-throttled-requests: 15 per 5 s).
    graph_quota: float = 15.0
    graph_window_s: float = 5.0


class Throttle:
    """Token buckets per (subscription, reads|writes) for ARM and per (vault, create|ops)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.settings = ThrottleSettings()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def configure(self, **values: float | bool) -> None:
        with self._lock:
            for name, value in values.items():
                setattr(self.settings, name, value)
            self._buckets.clear()

    def reset(self) -> None:
        with self._lock:
            self.settings = ThrottleSettings()
            self._buckets.clear()

    def _bucket(self, key: tuple[str, str], capacity: float, refill: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(capacity, refill)
        return bucket

    def arm(self, subscription: str, *, write: bool, now: float) -> tuple[bool, int, dict[str, str]]:
        """(granted, retry_after_s, headers) for one ARM request."""
        s = self.settings
        kind = "writes" if write else "reads"
        if not s.enabled:
            return True, 0, {}
        with self._lock:
            cap, rate = (s.arm_write_burst, s.arm_writes_per_s) if write else (s.arm_read_burst, s.arm_reads_per_s)
            granted, wait, remaining = self._bucket((subscription.lower(), kind), cap, rate).take(now)
        headers = {f"x-ms-ratelimit-remaining-subscription-{kind}": str(remaining)}
        return granted, max(1, math.ceil(wait)) if not granted else 0, headers

    def graph(self, user: str, *, now: float) -> tuple[bool, int, dict[str, str]]:
        """(granted, retry_after_s, headers) for one Resource Graph query by ``user``: a fixed
        window of ``graph_window_s`` holding ``graph_quota`` queries, as Resource Graph meters
        them. The headers are sent on every answer, 429 included; the 429's ``Retry-After`` is
        the window's remaining time (the docs name only the quota headers: a guess)."""
        s = self.settings
        if not s.enabled:
            return True, 0, {}
        with self._lock:
            key = (user.lower(), "graph")
            bucket = self._buckets.get(key)
            if bucket is None or now >= bucket.last + s.graph_window_s or now < bucket.last:
                # A new window starts with this query (``last`` holds the window's start).
                bucket = self._buckets[key] = TokenBucket(s.graph_quota, 0.0, tokens=s.graph_quota, last=now)
            granted = bucket.tokens >= 1.0
            if granted:
                bucket.tokens -= 1.0
            resets = max(0.0, bucket.last + s.graph_window_s - now)
            remaining = int(bucket.tokens)
        whole = math.ceil(resets)
        headers = {"x-ms-user-quota-remaining": str(remaining),
                   "x-ms-user-quota-resets-after": f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"}
        return granted, 0 if granted else max(1, whole), headers

    def vault(self, vault: str, *, create: bool, now: float) -> tuple[bool, int]:
        s = self.settings
        if not s.enabled:
            return True, 0
        with self._lock:
            per10 = s.kv_creates_per_10s if create else s.kv_ops_per_10s
            granted, wait, _ = self._bucket((vault.lower(), "create" if create else "ops"), per10, per10 / 10.0).take(
                now
            )
        return granted, max(1, math.ceil(wait)) if not granted else 0
