"""Time sources, guarded invocation with retries, and timer triggers of the development host."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import requests
from azure.functions.timer import TimerRequest

from sandbox.host.loading import FunctionSpec, TimerTriggerSpec, call_user_function
from sandbox.host.settings import SANDBOX_SETTING
from shared.config import SandboxConnection
from shared.errors import ConfigError

LOG = logging.getLogger("sandbox.host")  # one logger for the whole host (the same object as settings.LOG)

# ---------------------------------------------------------------------------------------------
# Time sources
# ---------------------------------------------------------------------------------------------


class TimeSource(Protocol):
    """Where timers read the time. ``now()`` is timezone-aware; raises ``TimeSourceError``."""

    def now(self) -> datetime: ...


class TimeSourceError(Exception):
    """The time source cannot tell the time right now (for example the sandbox is down)."""


class WallClock:
    """The machine's clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def describe(self) -> str:
        return "wall clock"


class SandboxTimeSource:
    """The sandbox's clock as the host's time source, read over loopback HTTPS from
    ``{admin_url}/sandbox/clock`` (not :class:`sandbox.clock.SandboxClock`, the clock the
    sandbox itself keeps).

    The connection file is (re)read when the sandbox cannot be reached, so a sandbox that
    starts after the host, or restarts on another port, is picked up.
    """

    def __init__(self, connection_file: Path, *, timeout: float = 2.0) -> None:
        self.connection_file = connection_file
        self._timeout = timeout
        self._session: requests.Session | None = None
        self._url: str | None = None
        self._ca_bundle: str | bool = True
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"sandbox clock ({self.connection_file})"

    def _connect(self) -> tuple[requests.Session, str]:
        try:
            conn = SandboxConnection.load(self.connection_file)
        except ConfigError as err:
            raise TimeSourceError(f"cannot read the sandbox connection file {self.connection_file}: {err}") from err
        admin_url, ca_bundle = conn.admin_url, conn.ca_bundle
        session = requests.Session()
        # Passed per request too: requests lets REQUESTS_CA_BUNDLE override a session-level verify.
        session.verify = ca_bundle
        self._ca_bundle = ca_bundle
        self._session, self._url = session, f"{admin_url}/sandbox/clock"
        return session, self._url

    def now(self) -> datetime:
        with self._lock:
            if self._session is None or self._url is None:
                session, url = self._connect()
            else:
                session, url = self._session, self._url
            try:
                response = session.get(url, timeout=self._timeout, verify=self._ca_bundle)
                response.raise_for_status()
                return parse_datetime(str(response.json()["now"]))
            except (requests.RequestException, OSError, ValueError, KeyError, TypeError) as err:
                self._session = None
                session.close()
                raise TimeSourceError(f"cannot read the sandbox clock at {url}: {err}") from err

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


def time_source_from_env(environ: Mapping[str, str]) -> TimeSource:
    """The sandbox clock when ``KEYSTEWARD_SANDBOX`` names a connection file, else the wall clock."""
    path = environ.get(SANDBOX_SETTING, "").strip()
    return SandboxTimeSource(Path(path)) if path else WallClock()


def parse_datetime(text: str) -> datetime:
    """ISO-8601 with ``Z`` and up to 7 fractional digits (as Azure writes them); naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when is not None else None


# ---------------------------------------------------------------------------------------------
# Invocation with retries (timers)
# ---------------------------------------------------------------------------------------------


def invoke_guarded(spec: FunctionSpec, make_value: Callable[[], object], *, stop: threading.Event) -> bool:
    """Runs one invocation (plus its retry policy's retries); True when it succeeded.

    A failure is logged with its traceback; it never propagates, because the caller (a
    trigger listener) decides what a failure means: 500, redelivery, poison queue.
    """
    attempt = 0
    while True:
        invocation = uuid.uuid4()
        started = time.monotonic()
        try:
            result = call_user_function(spec, make_value())
        except Exception:
            LOG.exception("function %s failed (invocation %s)", spec.name, invocation)
        else:
            if result is not None and spec.trigger_type != "httpTrigger":
                LOG.warning("function %s returned a value but has no output binding; ignored", spec.name)
            LOG.info(
                "function %s succeeded (invocation %s, %.0f ms)",
                spec.name,
                invocation,
                (time.monotonic() - started) * 1000,
            )
            return True
        policy = spec.retry if spec.trigger_type == "timerTrigger" else None
        attempt += 1
        if policy is None or (0 <= policy.max_retry_count < attempt):
            return False
        wait = policy.delay_before(attempt).total_seconds()
        LOG.info("function %s: retry %d in %.1f s", spec.name, attempt, wait)
        if stop.wait(wait):
            return False


# ---------------------------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------------------------


@dataclass
class _TimerState:
    spec: FunctionSpec
    trigger: TimerTriggerSpec
    next_due: datetime | None = None
    last_seen: datetime | None = None
    last_run: datetime | None = None
    started: bool = False
    running: bool = False


class TimerScheduler:
    """Fires timer functions as the time source's clock passes their schedules.

    Each ``tick`` reads the clock once. A timer fires when the clock has reached its next
    occurrence; however many occurrences were skipped (a 25-hour sandbox jump, a host that
    was paused) it fires ONCE, with ``past_due=True`` when it is more than ``tolerance``
    late or later occurrences were also missed, like the real host's schedule monitor. A
    timer whose previous invocation still runs is not fired again until it finishes. A clock
    that moves backwards resets the schedule from the new time.
    """

    def __init__(
        self,
        timers: Sequence[FunctionSpec],
        *,
        clock: TimeSource,
        poll_interval: float = 0.2,
        tolerance: timedelta = timedelta(seconds=2),
        stop: threading.Event | None = None,
    ) -> None:
        self._states = [_TimerState(spec=t, trigger=_timer(t)) for t in timers]
        self._clock = clock
        self._poll = poll_interval
        self._tolerance = tolerance
        self._stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._clock_down = False

    def next_due(self) -> dict[str, datetime | None]:
        """The next occurrence of each timer, by function name (None before the first tick)."""
        with self._lock:
            return {s.spec.name: s.next_due for s in self._states}

    def busy(self) -> list[str]:
        """The timers whose invocation is still running (they are not fired again meanwhile)."""
        with self._lock:
            return [s.spec.name for s in self._states if s.running]

    def start(self) -> None:
        if not self._states:
            return
        self._thread = threading.Thread(target=self._run, name="devhost-timers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for worker in list(self._workers):
            worker.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = self._clock.now()
            except TimeSourceError as err:
                if not self._clock_down:
                    LOG.warning("timers paused: %s", err)
                self._clock_down = True
            else:
                if self._clock_down:
                    LOG.info("timers resumed: the clock answers again")
                self._clock_down = False
                self.tick(now)
            self._stop.wait(self._poll)

    def tick(self, now: datetime) -> list[str]:
        """Fires what is due at ``now``; returns the names of the functions started."""
        fired: list[str] = []
        with self._lock:
            for state in self._states:
                if state.running:
                    continue
                schedule = state.trigger.schedule
                if not state.started:
                    state.started = True
                    state.last_seen = now
                    state.next_due = schedule.next_after(now)
                    if state.trigger.run_on_startup:
                        self._fire(state, now, past_due=False, scheduled=now)
                        fired.append(state.spec.name)
                    continue
                if state.last_seen is not None and now < state.last_seen:
                    LOG.warning("timer %s: the clock moved backwards; schedule reset", state.spec.name)
                    state.next_due = schedule.next_after(now)
                state.last_seen = now
                due = state.next_due
                if due is None or now < due:
                    continue
                missed_more = schedule.next_after(due) <= now
                past_due = missed_more or (now - due) > self._tolerance
                state.next_due = schedule.next_after(now)
                self._fire(state, now, past_due=past_due, scheduled=due)
                fired.append(state.spec.name)
        return fired

    def _fire(self, state: _TimerState, now: datetime, *, past_due: bool, scheduled: datetime) -> None:
        status = {"Last": _iso(scheduled), "Next": _iso(state.next_due), "LastUpdated": _iso(now)}
        state.last_run = scheduled
        state.running = True
        LOG.info("timer %s fires (scheduled %s, past_due=%s)", state.spec.name, _iso(scheduled), past_due)

        def make() -> TimerRequest:
            return TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})

        def work() -> None:
            try:
                invoke_guarded(state.spec, make, stop=self._stop)
            finally:
                with self._lock:
                    state.running = False

        worker = threading.Thread(target=work, name=f"devhost-timer-{state.spec.name}", daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()]
        self._workers.append(worker)
        worker.start()


def _timer(spec: FunctionSpec) -> TimerTriggerSpec:
    if not isinstance(spec.trigger, TimerTriggerSpec):
        raise TypeError(f"function {spec.name} is not a timer")
    return spec.trigger
