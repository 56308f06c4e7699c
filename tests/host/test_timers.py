"""Timer triggers driven by an injected clock, schedules, retries, and the sandbox clock source."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import trustme
from azure.functions.timer import TimerRequest

from sandbox.host import (
    DevHost,
    SandboxTimeSource,
    TimerScheduler,
    TimeSourceError,
    WallClock,
    load_functions,
    time_source_from_env,
)
from sandbox.ncrontab import ScheduleError, parse_schedule
from tests.host import fixture_app
from tests.host.conftest import KEYS, START, ManualClock, wait_for


def test_timer_fires_once_per_occurrence_as_the_clock_moves(web_host: DevHost, manual_clock: ManualClock) -> None:
    wait_for(lambda: web_host.timers.next_due()["tick"] is not None)
    assert web_host.timers.next_due()["tick"] == START + timedelta(minutes=15)
    manual_clock.advance(timedelta(minutes=14, seconds=59))
    time.sleep(0.1)
    assert fixture_app.calls("tick") == []

    manual_clock.advance(timedelta(seconds=1))
    wait_for(lambda: len(fixture_app.calls("tick")) == 1)
    time.sleep(0.1)
    (timer,) = fixture_app.calls("tick")
    assert isinstance(timer, func.TimerRequest)  # what the function's annotation promises
    assert isinstance(timer, TimerRequest)  # the concrete class the Python worker builds
    assert timer.past_due is False
    assert timer.schedule_status["Last"] == "2026-01-05T09:15:00Z"
    assert timer.schedule_status["Next"] == "2026-01-05T09:30:00Z"


def test_a_25_hour_jump_fires_once_past_due(web_host: DevHost, manual_clock: ManualClock) -> None:
    wait_for(lambda: web_host.timers.next_due()["tick"] is not None)
    manual_clock.advance(timedelta(hours=25))
    wait_for(lambda: len(fixture_app.calls("tick")) == 1)
    time.sleep(0.2)
    (timer,) = fixture_app.calls("tick")
    assert timer.past_due is True
    assert web_host.timers.next_due()["tick"] == START + timedelta(hours=25, minutes=15)


def _timer_app(
    *, schedule: str, run_on_startup: bool = False, fail: bool = False, retry: bool = False
) -> func.FunctionApp:
    app = func.FunctionApp()

    def body(timer: func.TimerRequest) -> None:
        fixture_app.record("t", timer)
        if fail:
            raise RuntimeError("timer failed")

    decorated: Any = app.timer_trigger(arg_name="timer", schedule=schedule, run_on_startup=run_on_startup)(body)
    if retry:
        decorated = app.retry(strategy="fixed_delay", max_retry_count="2", delay_interval="00:00:00")(decorated)
    app.function_name("t")(decorated)
    return app


def _scheduler(app: func.FunctionApp, clock: ManualClock) -> TimerScheduler:
    return TimerScheduler(load_functions(app, environ={}), clock=clock)


def test_run_on_startup_fires_at_the_first_tick() -> None:
    fixture_app.reset()
    scheduler = _scheduler(_timer_app(schedule="0 0 3 * * *", run_on_startup=True), ManualClock())
    assert scheduler.tick(START) == ["t"]
    wait_for(lambda: len(fixture_app.calls("t")) == 1)
    assert fixture_app.calls("t")[0].past_due is False
    scheduler.stop()


def test_late_single_occurrence_is_past_due_and_backwards_clock_resets() -> None:
    fixture_app.reset()
    scheduler = _scheduler(_timer_app(schedule="0 */15 * * * *"), ManualClock())
    assert scheduler.tick(START) == []
    assert scheduler.tick(START + timedelta(minutes=16)) == ["t"]
    wait_for(lambda: len(fixture_app.calls("t")) == 1)
    assert fixture_app.calls("t")[0].past_due is True  # a minute late: past the tolerance
    wait_for(lambda: not scheduler.busy())
    assert scheduler.tick(START + timedelta(minutes=17)) == []
    assert scheduler.next_due()["t"] == START + timedelta(minutes=30)
    assert scheduler.tick(START) == []  # the clock went back: the schedule restarts from 09:00
    assert scheduler.next_due()["t"] == START + timedelta(minutes=15)
    scheduler.stop()


def test_a_running_timer_is_not_fired_again() -> None:
    fixture_app.reset()
    gate = threading.Event()
    app = func.FunctionApp()

    @app.function_name("slow")
    @app.timer_trigger(arg_name="timer", schedule="* * * * * *")
    def slow(timer: func.TimerRequest) -> None:
        fixture_app.record("slow", timer)
        gate.wait(5)

    scheduler = TimerScheduler(load_functions(app, environ={}), clock=ManualClock())
    scheduler.tick(START)
    assert scheduler.tick(START + timedelta(seconds=1)) == ["slow"]
    assert scheduler.tick(START + timedelta(seconds=2)) == []
    assert scheduler.busy() == ["slow"]
    gate.set()
    scheduler.stop()
    assert len(fixture_app.calls("slow")) == 1


def test_retry_policy_retries_a_failing_timer() -> None:
    fixture_app.reset()
    scheduler = _scheduler(_timer_app(schedule="0 * * * * *", fail=True, retry=True), ManualClock())
    scheduler.tick(START)
    scheduler.tick(START + timedelta(minutes=1))
    wait_for(lambda: len(fixture_app.calls("t")) == 3)
    time.sleep(0.1)
    assert len(fixture_app.calls("t")) == 3  # the first try and two retries
    scheduler.stop()


def test_schedules() -> None:
    every_15 = parse_schedule("0 */15 * * * *")
    assert every_15.next_after(START) == START + timedelta(minutes=15)
    assert every_15.next_after(START + timedelta(seconds=1)) == START + timedelta(minutes=15)
    nightly = parse_schedule("0 0 3 * * *")
    assert nightly.next_after(START) == datetime(2026, 1, 6, 3, 0, tzinfo=UTC)
    weekdays = parse_schedule("0 0 3 * * MON-FRI")
    assert weekdays.next_after(datetime(2026, 1, 9, 4, 0, tzinfo=UTC)) == datetime(2026, 1, 12, 3, 0, tzinfo=UTC)
    span = parse_schedule("00:05:00")
    assert span.next_after(START) == START + timedelta(minutes=5)
    for bad in ("0 */15 * * *", "nonsense", "0 0 99 * * *", "00:00:00"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)


# ---- the sandbox clock over loopback HTTPS ------------------------------------------------------


@pytest.fixture
def fake_sandbox(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A loopback HTTPS server answering GET /sandbox/clock, and its connection file."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    state = {"now": "2026-01-05T09:00:00Z", "mode": "manual"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(state).encode() if self.path == "/sandbox/clock" else b"{}"
            self.send_response(200 if self.path == "/sandbox/clock" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    conn = tmp_path / "sandbox.json"
    port = server.server_address[1]
    conn.write_text(_connection_file(f"https://127.0.0.1:{port}/", ca_file))
    yield conn, state
    server.shutdown()
    server.server_close()


def _connection_file(admin_url: str, ca_file: Path) -> str:
    """A complete connection file (the host reads it with the one parser, which wants every key);
    only ``admin_url`` and ``ca_bundle`` matter to the clock."""
    return json.dumps({"arm_url": "https://127.0.0.1:9", "admin_url": admin_url, "ca_bundle": str(ca_file),
                       "tenant_id": "t", "subscriptions": [], "vaults": {}, "credential_scopes": []})


def test_sandbox_clock_reads_the_sandbox_time(fake_sandbox: tuple[Path, dict[str, str]]) -> None:
    conn, state = fake_sandbox
    clock = time_source_from_env({"KEYSTEWARD_SANDBOX": str(conn)})
    assert isinstance(clock, SandboxTimeSource)
    assert clock.now() == START
    state["now"] = "2026-01-06T10:00:00.5+00:00"
    assert clock.now() == datetime(2026, 1, 6, 10, 0, 0, 500000, tzinfo=UTC)
    clock.close()


def test_sandbox_clock_unreachable_raises_time_source_error(tmp_path: Path) -> None:
    with pytest.raises(TimeSourceError):
        SandboxTimeSource(tmp_path / "missing.json").now()
    conn = tmp_path / "sandbox.json"
    conn.write_text(_connection_file("https://127.0.0.1:9", tmp_path / "ca.pem"))
    with pytest.raises(TimeSourceError):
        SandboxTimeSource(conn, timeout=0.5).now()
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"admin_url": "https://127.0.0.1:9", "ca_bundle": str(tmp_path / "ca.pem")}))
    with pytest.raises(TimeSourceError, match="lacks arm_url"):
        SandboxTimeSource(partial, timeout=0.5).now()


def test_without_the_sandbox_setting_the_wall_clock_is_used() -> None:
    assert isinstance(time_source_from_env({}), WallClock)


def test_host_timers_follow_the_sandbox_clock(fake_sandbox: tuple[Path, dict[str, str]]) -> None:
    conn, state = fake_sandbox
    fixture_app.reset()
    functions = load_functions(_timer_app(schedule="0 */15 * * * *"), environ={})
    host = DevHost(functions, keys=KEYS, clock=SandboxTimeSource(conn), port=0, timer_poll_interval=0.02)
    with host:
        wait_for(lambda: host.timers.next_due()["t"] is not None)
        state["now"] = "2026-01-06T10:00:00Z"  # the sandbox jumps 25 hours
        wait_for(lambda: len(fixture_app.calls("t")) == 1)
        time.sleep(0.2)
        (timer,) = fixture_app.calls("t")
        assert timer.past_due is True
