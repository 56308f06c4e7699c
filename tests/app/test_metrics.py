"""Metrics read through the OpenTelemetry SDK's in-memory reader while the sandbox's world
changes: rotation, convergence, revoke, restore. Nothing is mocked: the triggers' user
functions and the core run against the in-process sandbox, and the SDK collects what
shared/metrics.py records."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import functions._root as root
from functions.key_events import on_key_vault_event
from functions.schedules import reconcile_schedule
from sandbox.faults import FaultRule
from sandbox.world import World
from shared import metrics
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, Principal
from shared.keyuri import parse_key_uri
from shared.reconcile import WriteBudget
from shared.runbooks import RestoreRequest, RevokeRequest
from tests.app.estate import Estate, EventCapture, grid_event, make_estate, steward
from tests.app.test_propagation import run_queue
from tests.memory_journal import MemoryJournal

ROOT = Path(__file__).resolve().parents[2]
ONCALL = Principal("11111111-aaaa-4000-8000-000000000001", "On-call", frozenset({ROLE_READ, ROLE_REVOKE, ROLE_RESTORE}))
LONG = timedelta(hours=2)


class Reader:
    """The SDK's in-memory reader, with lookups by metric name and attributes."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        out.extend(m.data.data_points)
        return out

    def value(self, name: str, **attrs: Any) -> float | None:
        """The sum (counters, gauges) or count (histograms) over points whose attributes match."""
        want = {k.replace("__", "."): v for k, v in attrs.items()}
        found = [p for p in self.points(name) if all(p.attributes.get(k) == v for k, v in want.items())]
        if not found:
            return None
        return sum(getattr(p, "value", None) if hasattr(p, "value") else p.count for p in found)


@pytest.fixture
def reader() -> Iterator[Reader]:
    r = Reader()
    metrics.install(r.provider)
    yield r
    metrics.install(None)
    r.provider.shutdown()


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def estate(world: World) -> Estate:
    world.service_settings.cosmos_recovery_s = 600.0  # Cosmos recovers within the verify deadline
    return make_estate(world, clusters_per_sub=2, accounts_per_sub=1, versionless=1)


@pytest.fixture
def wired(world: World, estate: Estate) -> Iterator[tuple[Any, Any, Any, EventCapture]]:
    app, queue, notifier = steward(world, estate, journal=MemoryJournal(world.clock))
    root.install(app)
    capture = EventCapture(world)
    yield app, queue, notifier, capture
    root.install(None)


def timer_pass() -> None:
    reconcile_schedule(TimerRequest(past_due=False))


def state_count(reader: Reader, state: str) -> float:
    return reader.value(metrics.BINDINGS, **{"keysteward.binding.state": state}) or 0


def test_without_a_connection_string_there_is_no_exporter_and_no_error() -> None:
    assert metrics.configure_exporter({}) is False
    assert metrics.configure_exporter({metrics.CONNECTION_SETTING: "  "}) is False
    # Recording on the API's default provider is a no-op, not an error.
    metrics.current().event_handled("Microsoft.KeyVault.KeyNewVersionCreated", "reconciled", "e-1")


def test_the_distro_is_imported_only_with_a_connection_string() -> None:
    """In a process of its own: configuring the exporter sets process-wide providers."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from shared import metrics\n"
        "assert metrics.configure_exporter({}) is False\n"
        "assert 'azure.monitor.opentelemetry' not in sys.modules, 'imported without a connection string'\n"
        "conn = 'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/'\n"
        "assert metrics.configure_exporter({metrics.CONNECTION_SETTING: conn}) is True\n"
        "assert 'azure.monitor.opentelemetry' in sys.modules\n"
        "metrics.current().event_handled('Microsoft.KeyVault.KeyExpired', 'rotated', 'e-1')\n"
        "print('exporting')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exporting" in done.stdout


def test_every_instrument_is_named_in_metric_names(reader: Reader) -> None:
    m = metrics.current()
    m.event_handled("Microsoft.KeyVault.KeyNewVersionCreated", "reconciled", "e-1")
    m.event_handled("Microsoft.KeyVault.KeyNewVersionCreated", "reconciled", "e-1")
    m.arm_call("sub", "PATCH", 429)
    m.pacing_wait("sub", 0.5)
    m.run_finished("revoke", "succeeded", 12.0)
    m.outcomes_published([])
    m.observe_estate(metrics.EstateSnapshot(
        bindings=[metrics.BindingGauge("k", "r", "kusto", "in-sync", 0, 0.0)],
        awaiting_retirement={("k", "retention"): 1}, expires_in={("k", False): 10.0},
        revocations={("k", "run"): 5.0}, unfinished_runs={("revoke", "running"): 3.0}))
    m.outcomes_published([type("O", (), {"kind": "KeyRevoked", "severity": "incident", "data": {"status": "x"}})()])
    data = reader.reader.get_metrics_data()
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert names == set(metrics.METRIC_NAMES)
    assert reader.value(metrics.DUPLICATES) == 1
    m.event_handled("<anything a malformed event says>", "dropped", None)  # attacker text never becomes an attribute
    assert reader.value(metrics.EVENTS, cloudevents__event__type="other") == 1
    m.event_handled("Microsoft.KeyVault.KeyExpired", "dropped", {"not": "a string"})  # found by the trigger fuzzer
    assert reader.value(metrics.DUPLICATES) == 1
    assert reader.value(metrics.ARM_THROTTLED, cloud__account__id="sub") == 1


def test_subscription_of_reads_the_arm_path() -> None:
    url = "https://management.azure.com/subscriptions/ABC-1/resourceGroups/rg/providers/x?api-version=1"
    assert metrics.subscription_of(url) == "abc-1"
    assert metrics.subscription_of("https://management.azure.com/providers/Microsoft.ResourceGraph/resources") == "none"


def test_metrics_follow_rotation_convergence_revoke_and_restore(world: World, estate: Estate, wired, reader: Reader):
    app, queue, _notifier, capture = wired
    key = parse_key_uri(estate.key_uri, allowed_vaults=None)
    pinned = len(estate.clusters)  # Cosmos DB accounts are versionless: they follow the key themselves
    accounts = len(estate.accounts) + len(estate.versionless_accounts)

    # 1. A quiet estate: every binding in sync, nothing behind.
    timer_pass()
    assert state_count(reader, "in-sync") == pinned + accounts
    assert reader.value(metrics.VERSIONS_BEHIND) == 0
    assert reader.value(metrics.AWAITING_RETIREMENT) is None
    calls_before = reader.value(metrics.ARM_CALLS) or 0
    assert calls_before > 0  # the inventory reads went through ARM, counted per subscription
    for sub in estate.subs:
        assert (reader.value(metrics.ARM_CALLS, cloud__account__id=sub.lower(), http__request__method="GET") or 0) > 0

    # 2. Rotation: pinned bindings are one version behind until the event is handled; the lag grows.
    new = estate.keys.rotate_key(estate.key_name)
    world.tick(world.clock.now())
    event = next(e for e in capture.of_type("KeyNewVersionCreated") if e["data"]["Version"] == new.properties.version)
    world.clock.advance(timedelta(minutes=5))

    app.estate.measure()
    # Pinned bindings and the versionless accounts (they report the version they still use) trail by one.
    total = pinned + accounts
    assert reader.value(metrics.VERSIONS_BEHIND) == total
    assert state_count(reader, "updating") == total
    lag = reader.value(metrics.BINDING_LAG)
    assert lag is not None and lag >= total * 300

    # ARM throttles the first update: the 429 is counted for its subscription, and the retry succeeds.
    world.faults.set_rules([FaultRule.parse({"method": "PATCH", "path": ".*/Microsoft.Kusto/clusters/.*", "status": 429,
                                             "retry_after": 1, "times": 1})])
    assert reader.value(metrics.ARM_THROTTLED) is None
    on_key_vault_event(grid_event(event))
    run_queue(queue, world)
    assert reader.value(metrics.ARM_THROTTLED) == 1
    assert reader.value(metrics.ARM_CALLS, http__response__status_code=429) == 1
    type_attr = {"cloudevents.event.type": "Microsoft.KeyVault.KeyNewVersionCreated"}
    assert reader.value(metrics.EVENTS, **type_attr) == 1
    assert reader.value(metrics.DUPLICATES) is None
    on_key_vault_event(grid_event(event))  # Event Grid delivers at least once
    run_queue(queue, world)
    assert reader.value(metrics.EVENTS, **type_attr) == 2
    assert reader.value(metrics.DUPLICATES, **type_attr) == 1
    writes = sum(reader.value(metrics.ARM_CALLS, cloud__account__id=s.lower(), http__request__method="PATCH") or 0
                 for s in estate.subs)
    assert writes >= pinned

    # 3. Convergence (the sandbox's versionless account follows an hour after rotation): nothing
    # behind; v1 waits for its retention period.
    world.clock.advance(timedelta(minutes=70))
    world.tick(world.clock.now())
    timer_pass()
    assert reader.value(metrics.VERSIONS_BEHIND) == 0
    assert state_count(reader, "updating") == 0
    assert reader.value(metrics.BINDING_LAG) == 0
    assert reader.value(metrics.AWAITING_RETIREMENT, keysteward__retention__reason="retention") == 1
    assert (reader.value(metrics.OUTCOMES, keysteward__outcome__kind="BindingUpdated") or 0) >= pinned

    # 4. Revoke: the run is counted when it ends, with its duration; the revocation's age is reported.
    books = app.runbooks
    view = books.revoke(RevokeRequest(key=key, mode="disable", reason="drill", ticket="T-1"), ONCALL)
    assert reader.value(metrics.RUNS) is None  # not finished: verification continues on the timer
    world.clock.advance(timedelta(minutes=2))
    app.estate.measure()
    assert reader.value(metrics.REVOCATION_AGE, keysteward__run__id=view.run.run_id) >= 120
    assert reader.value(metrics.UNFINISHED_RUN_AGE, keysteward__run__kind="revoke") >= 120
    for _ in range(20):
        world.clock.advance(timedelta(minutes=1))
        timer_pass()
        if books.get(view.run.run_id).run.finished:
            break
    status = books.get(view.run.run_id).run.status
    assert status == "succeeded"
    assert reader.value(metrics.RUNS, keysteward__run__kind="revoke", keysteward__run__outcome="succeeded") == 1
    assert reader.value(metrics.RUN_DURATION, keysteward__run__kind="revoke") == 1  # one duration recorded
    durations = list(reader.points(metrics.RUN_DURATION))
    assert durations[0].sum >= 120
    assert reader.value(metrics.UNFINISHED_RUN_AGE) is None

    # 5. Restore: the revocation gauge goes away and the restore run is counted.
    restore = books.restore(RestoreRequest(run_id=view.run.run_id, reason="drill over", ticket="T-1"), ONCALL)
    for _ in range(20):
        world.clock.advance(timedelta(minutes=1))
        timer_pass()
        if books.get(restore.run.run_id).run.finished:
            break
    assert books.get(restore.run.run_id).run.status == "succeeded"
    assert reader.value(metrics.REVOCATION_AGE) is None
    assert reader.value(metrics.RUNS, keysteward__run__kind="restore", keysteward__run__outcome="succeeded") == 1
    assert reader.value(metrics.RUN_DURATION, keysteward__run__kind="restore") == 1


def test_a_held_binding_and_a_pacing_wait_are_reported(world: World, reader: Reader) -> None:
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0, held=(f"adx{world.subscriptions[0][-4:]}0",))
    app, queue, _notifier = steward(world, estate, KEYSTEWARD_ARM_WRITE_BURST="1", KEYSTEWARD_ARM_WRITES_PER_S="1000")
    root.install(app)
    try:
        estate.keys.rotate_key(estate.key_name)
        app.reconcile_all()

        app.estate.measure()
        assert state_count(reader, "held") == 1
        assert state_count(reader, "updating") + state_count(reader, "in-sync") == 1  # the other one moved
        # The second write of a one-token bucket waits for its token (on a time source that moves
        # only when the bucket sleeps).
        now = [0.0]
        budget = WriteBudget(rate_per_s=10, burst=1, sleep=lambda s: now.__setitem__(0, now[0] + s),
                             monotonic=lambda: now[0])
        budget.acquire(estate.subs[0])
        assert reader.value(metrics.PACING_WAIT) is None
        budget.acquire(estate.subs[0])
        assert reader.value(metrics.PACING_WAIT, cloud__account__id=estate.subs[0]) == 1
        assert reader.points(metrics.PACING_WAIT)[0].sum == pytest.approx(0.1)
    finally:
        root.install(None)
