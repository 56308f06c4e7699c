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


class RemoteSandboxClock:
    """The sandbox's clock, read over its admin API (``GET /sandbox/clock``).

    Waiting is real waiting: the service never moves the sandbox's time itself.
    """

    def __init__(self, admin_url: str, *, ca_bundle: str) -> None:
        import requests  # noqa: PLC0415 - only the sandbox mode needs it

        self._url = admin_url.rstrip("/") + "/sandbox/clock"
        self._session = requests.Session()
        # Per request: a session-level verify loses to REQUESTS_CA_BUNDLE in the environment.
        self._ca = ca_bundle

    def now(self) -> datetime:
        import requests  # noqa: PLC0415

        from shared.errors import TransientError  # noqa: PLC0415

        try:
            response = self._session.get(self._url, timeout=10, verify=self._ca)
            response.raise_for_status()
            return datetime.fromisoformat(str(response.json()["now"]).replace("Z", "+00:00"))
        except (requests.RequestException, ValueError, KeyError) as err:
            raise TransientError(f"the sandbox clock at {self._url} cannot be read: {type(err).__name__}") from err

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
