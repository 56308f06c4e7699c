"""Fixtures for the development host's tests: a manual clock and in-process hosts on free ports."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.host import DevHost, HostConfig, HostKeys, load_functions
from tests.host import fixture_app

FUNCTION_KEY = "function-key-for-tests"
MASTER_KEY = "master-key-for-tests"
EVENTGRID_KEY = "eventgrid-key-for-tests"
KEYS = HostKeys(function=FUNCTION_KEY, master=MASTER_KEY, eventgrid=EVENTGRID_KEY)
START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)


class ManualClock:
    """A time source that moves only when told (the shape of the sandbox's manual clock)."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Polls ``predicate`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met within the timeout")


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fixture_env() -> dict[str, str]:
    return {"FIXTURE_SCHEDULE": "0 */15 * * * *"}


@pytest.fixture
def web_host(manual_clock: ManualClock, fixture_env: dict[str, str]) -> Iterator[DevHost]:
    """The fixture app without its queue trigger, served on a free port with the manual clock."""
    fixture_app.reset()
    functions = load_functions(fixture_app.build_app(with_queue=False), environ=fixture_env)
    host = DevHost(functions, keys=KEYS, config=HostConfig(), clock=manual_clock, port=0, timer_poll_interval=0.01)
    with host:
        yield host
    fixture_app.reset()
