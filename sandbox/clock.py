"""The sandbox clock: manual (moves only when told) or real (follows the wall clock).

Every time-dependent behaviour of the sandbox (LRO completion, service key use, expiry
events, delivery retries, token-bucket refill) reads this clock, so a test can jump 25 hours
in one call. Listeners run after each move so the world can catch up with the new time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

MANUAL = "manual"
REAL = "real"

# A fixed, recognisable start for manual mode so seeded worlds are reproducible.
DEFAULT_START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)


class SandboxClock:
    """Thread-safe clock. ``now()`` is timezone-aware UTC."""

    def __init__(self, *, start: datetime = DEFAULT_START, mode: str = MANUAL) -> None:
        if mode not in (MANUAL, REAL):
            raise ValueError(f"unknown clock mode {mode!r}")
        self._lock = threading.Lock()
        self._mode = mode
        self._base = start
        self._mono = time.monotonic()
        self._listeners: list[Callable[[datetime], None]] = []

    @property
    def mode(self) -> str:
        return self._mode

    def now(self) -> datetime:
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> datetime:
        if self._mode == REAL:
            return self._base + timedelta(seconds=time.monotonic() - self._mono)
        return self._base

    def timestamp(self) -> float:
        return self.now().timestamp()

    def set_mode(self, mode: str) -> None:
        if mode not in (MANUAL, REAL):
            raise ValueError(f"unknown clock mode {mode!r}; use 'manual' or 'real'")
        with self._lock:
            self._base = self._now_locked()
            self._mono = time.monotonic()
            self._mode = mode

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("the clock does not move backwards")
        with self._lock:
            self._base = self._now_locked() + delta
            self._mono = time.monotonic()
            now = self._base
        self._notify(now)
        return now

    def set(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("the time must carry a timezone")
        with self._lock:
            if when < self._now_locked():
                raise ValueError("the clock does not move backwards")
            self._base = when.astimezone(UTC)
            self._mono = time.monotonic()
            now = self._base
        self._notify(now)
        return now

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of sandbox time: advance in manual mode, really sleep in real mode."""
        if seconds <= 0:
            return
        if self._mode == REAL:
            time.sleep(seconds)
        else:
            self.advance(timedelta(seconds=seconds))

    def on_advance(self, listener: Callable[[datetime], None]) -> None:
        self._listeners.append(listener)

    def _notify(self, now: datetime) -> None:
        for listener in list(self._listeners):
            listener(now)


def parse_iso_duration(text: str) -> timedelta:
    """ISO-8601 duration (``PT25H``, ``P1D``, ``P1DT2H30M``, ``PT0.5S``) to a timedelta."""
    m = re.fullmatch(
        r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
        text.strip().upper(),
    )
    if m is None or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ValueError(f"not an ISO-8601 duration: {text!r}")
    return timedelta(
        weeks=int(m["w"] or 0),
        days=int(m["d"] or 0),
        hours=int(m["h"] or 0),
        minutes=int(m["m"] or 0),
        seconds=float(m["s"] or 0),
    )


def isoformat(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
