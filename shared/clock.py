"""Time as a dependency: the core never calls ``datetime.now()`` directly.

In Azure the clock is the system clock; with ``KEYSTEWARD_SANDBOX`` set it is the sandbox's
clock (read over its admin API), so a test or a demo can move 25 hours in one call.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Waits ``seconds`` (of this clock's time)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
