"""Rotation propagation through the triggers' user functions, against the in-process sandbox."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

import functions._root as root
from functions.key_events import on_key_vault_event
from functions.schedules import reconcile_schedule
from functions.work_items import process_work_item
from sandbox import services
from sandbox.world import World
from shared.cli import main as cli_main
from shared.errors import PermanentError
from shared.model import KeyRef, ServiceType
from shared.targets.cosmos import status_code
from shared.workqueue import MemoryQueue
from tests.app.estate import Estate, EventCapture, grid_event, make_estate, steward


def run_queue(queue: MemoryQueue, world: World) -> int:
    """Plays the Functions host's queue trigger: each message to the user function, delays in sandbox time."""
    n = 0
    while (popped := queue.pop()) is not None:
        item, delay = popped
        world.clock.advance(delay)
        msg = QueueMessage(id=f"m{n}", body=item.to_json().encode(), dequeue_count=1)
        process_work_item(msg)
        n += 1
        assert n < 200, "confirm chain did not end"
    return n


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def estate(world: World) -> Estate:
    return make_estate(world, held=("adxb0021",))


@pytest.fixture
def wired(world: World, estate: Estate):
    app, queue, notifier = steward(world, estate)
    root.install(app)
    capture = EventCapture(world)
    yield app, queue, notifier, capture
    root.install(None)


def rotate_and_deliver(estate: Estate, capture: EventCapture) -> tuple[str, dict]:
    new = estate.keys.rotate_key(estate.key_name)
    estate.world.tick(estate.world.clock.now())
    events = [e for e in capture.of_type("KeyNewVersionCreated") if e["data"]["Version"] == new.properties.version]
    assert len(events) == 1
    return str(new.properties.version), events[0]


def test_rotation_moves_every_pinned_binding_across_two_subscriptions(world, estate, wired):
    app, queue, notifier, capture = wired
    v2, raw = rotate_and_deliver(estate, capture)
    on_key_vault_event(grid_event(raw))
    # bindings span two subscriptions: one work item each, then confirm passes
    assert {i.subscription for i, _ in queue.items} == set(estate.subs)
    run_queue(queue, world)
    versions = estate.pinned_versions()
    assert versions.pop("adxb0021") == estate.v1  # held by tag
    assert set(versions.values()) == {v2}
    updated = {o.subject.rsplit("/", 1)[-1] for o in notifier.outcomes if o.kind == "BindingUpdated"}
    assert updated == set(versions)
    held = [o for o in notifier.outcomes if o.kind == "BindingHeld"]
    assert held and held[0].subject.endswith("adxb0021")


def test_duplicate_event_makes_no_write(world, estate, wired):
    app, queue, notifier, capture = wired
    _, raw = rotate_and_deliver(estate, capture)
    on_key_vault_event(grid_event(raw))
    run_queue(queue, world)
    seq = world.last_seq
    on_key_vault_event(grid_event(raw))
    run_queue(queue, world)
    assert estate.writes(seq) == []


def test_out_of_order_older_event_changes_nothing(world, estate, wired):
    app, queue, notifier, capture = wired
    _, first = rotate_and_deliver(estate, capture)
    v3, second = rotate_and_deliver(estate, capture)
    on_key_vault_event(grid_event(second))
    run_queue(queue, world)
    before = estate.pinned_versions()
    seq = world.last_seq
    on_key_vault_event(grid_event(first))  # the older event arrives late
    run_queue(queue, world)
    assert estate.writes(seq) == []
    assert estate.pinned_versions() == before
    assert before["adxa0010"] == v3


def test_timer_heals_a_binding_whose_event_was_lost(world, estate, wired):
    app, queue, notifier, capture = wired
    v2 = estate.keys.rotate_key(estate.key_name).properties.version  # event never handled
    reconcile_schedule(TimerRequest(past_due=False))
    run_queue(queue, world)
    versions = estate.pinned_versions()
    versions.pop("adxb0021")
    assert set(versions.values()) == {v2}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"enabled": False}, "disabled"),
        ({"not_before_days": 3}, "not valid before"),
    ],
)
def test_unacceptable_new_version_is_not_applied_and_is_reported(world, estate, wired, change, reason):
    app, queue, notifier, capture = wired
    new = estate.keys.rotate_key(estate.key_name)
    kwargs = {}
    if "enabled" in change:
        kwargs["enabled"] = False
    if "not_before_days" in change:
        kwargs["not_before"] = world.clock.now() + timedelta(days=change["not_before_days"])
    estate.keys.update_key_properties(estate.key_name, new.properties.version, **kwargs)
    seq = world.last_seq
    reconcile_schedule(TimerRequest(past_due=False))
    run_queue(queue, world)
    assert not [w for w in estate.writes(seq) if w.method == "PATCH"]
    assert set(estate.pinned_versions().values()) == {estate.v1}
    rejected = [o for o in notifier.outcomes if o.kind == "BindingRejected"]
    assert rejected and all(reason in o.data["reason"] for o in rejected)


def test_too_small_key_for_a_service_is_not_applied(world):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=1, versionless=0)
    app, queue, notifier = steward(world, estate, KEYSTEWARD_KEY_SIZES="kusto=3072,4096")
    root.install(app)
    seq = world.last_seq
    try:
        estate.keys.rotate_key(estate.key_name)
        reconcile_schedule(TimerRequest(past_due=False))
        run_queue(queue, world)
    finally:
        root.install(None)
    rejected = {o.subject.rsplit("/", 1)[-1]: o.data["reason"] for o in notifier.outcomes if o.kind == "BindingRejected"}
    assert set(rejected) == {name for _, name in estate.clusters}
    assert all("RSA 2048 is not accepted by kusto" in r for r in rejected.values())
    assert set(estate.pinned_versions().values()) == {estate.v1}
    # Cosmos DB accounts are never written: they follow the key themselves.
    assert not [w for w in estate.writes(seq) if "Microsoft.DocumentDB" in w.path]



# ---- Cosmos DB: versionless accounts follow the key; keysteward watches -----------------------------
def cosmos_bindings(app, estate: Estate) -> dict[str, object]:
    key = KeyRef(estate.vault_url, estate.key_name)
    return {b.name: b for b in app.reconciler.bindings_for(key) if b.service is ServiceType.COSMOS}


def test_cosmos_accounts_are_never_written_and_follow_the_key_themselves(world):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=1, versionless=1)
    app, queue, notifier = steward(world, estate)
    world.clock.advance(timedelta(minutes=10))
    bindings = cosmos_bindings(app, estate)
    assert {b.pinned_version for b in bindings.values()} == {None}
    assert {b.in_use_version for b in bindings.values()} == {estate.v1}  # keyVaultKeyUriVersion
    seq = world.last_seq
    root.install(app)
    try:
        v2 = estate.keys.rotate_key(estate.key_name).properties.version
        reconcile_schedule(TimerRequest(past_due=False))
        run_queue(queue, world)
        # Asked directly, the adapter refuses to write a versioned key URI and sends nothing.
        with pytest.raises(PermanentError):
            app.targets[ServiceType.COSMOS].start_update(next(iter(bindings.values())), v2)
    finally:
        root.install(None)
    assert not [w for w in estate.writes(seq) if "microsoft.documentdb" in w.path.lower()]
    world.clock.advance(timedelta(hours=1, minutes=10))  # the sandbox's accounts follow within the hour
    assert {b.in_use_version for b in cosmos_bindings(app, estate).values()} == {v2}
    for sub, name in estate.accounts + estate.versionless_accounts:
        assert estate.account(sub, name).key_vault_key_uri == estate.key_uri  # still versionless


def test_lagging_cosmos_account_is_reported_and_keeps_its_version(world, capsys):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=1)
    app, queue, notifier = steward(world, estate, KEYSTEWARD_LAG_ALERT_MINUTES="120")
    world.service_settings.versionless_lag_s = 10 * 3600  # this account is slow to follow
    world.clock.advance(timedelta(minutes=10))
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(hours=3))
    root.install(app)
    try:
        reconcile_schedule(TimerRequest(past_due=False))
        run_queue(queue, world)
    finally:
        root.install(None)
    lagging = [o for o in notifier.outcomes if o.kind == "BindingLagging"]
    assert [o.subject.rsplit("/", 1)[-1] for o in lagging] == ["cosmos-vl-0"]
    assert lagging[0].data["fromVersion"] == estate.v1
    assert cli_main(["status", "--key", estate.key_uri], app=app) == 0
    out = capsys.readouterr().out
    assert re.search(rf"cosmos-vl-0\s+versionless\s+{estate.v1} \(lagging\)", out), out
    assert "versionless cosmos cosmos-vl-0 still uses" in out


def quiet_services(world: World) -> None:
    """One last key use now, then none for 90 sandbox days."""
    world.service_settings.usage_interval_s = 90 * 86400
    services.settings_changed(world)
    world.tick(world.clock.now())


def test_cosmos_account_not_reporting_its_version_is_unknown_and_conservative(world, capsys):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=1)
    app, _, _ = steward(world, estate)
    quiet_services(world)  # no key use (and no report) during the test
    sub, name = estate.versionless_accounts[0]
    rid = str(estate.account(sub, name).id).lower()
    # Some api-versions do not return keyVaultKeyUriVersion: the account reports no version.
    world.resources[rid].properties.pop("keyVaultKeyUriVersion")
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(days=40))
    [binding] = cosmos_bindings(app, estate).values()
    assert binding.in_use_version is None
    assert cli_main(["status", "--key", estate.key_uri], app=app) == 0
    out = capsys.readouterr().out
    assert "version in use unknown (not reported)" in out
    assert re.search(rf"{estate.v1}\s+enabled\s.*\s0\s+no, keep", out), out


DOCUMENTED_CONFIRMED = "Access to the configured customer managed key confirmed."
DOCUMENTED_REVOKED_4003 = (
    "Access to your account is currently revoked because the correspondent key is not found on the specified Key "
    "Vault; for more details about this error and how to restore access to your account please visit "
    "https://learn.microsoft.com/en-us/azure/cosmos-db/cmk-troubleshooting-guide#azure-key-vault-resource-not-found "
    "(4003)."
)


@pytest.mark.parametrize(("status", "health", "revoked"), [
    (DOCUMENTED_CONFIRMED, "ok", False),
    (DOCUMENTED_REVOKED_4003, "revoked", True),
    # The enum's revoked text without a cause or a code.
    ("Access to your account is currently revoked; for more details about this error and how to restore access to "
     "your account please visit https://learn.microsoft.com/en-us/azure/cosmos-db/cmk-troubleshooting-guide",
     "revoked", True),
    # Undocumented texts: neither confirmed nor revoked by the documented structure.
    ("Key access revoked status pending re-evaluation", "unknown", False),
    ("", "unknown", False),
])
def test_cosmos_health_follows_the_documented_status_structure(world, status, health, revoked):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=1)
    app, _, _ = steward(world, estate)
    quiet_services(world)  # the service does not overwrite the text
    sub, name = estate.versionless_accounts[0]
    world.resources[str(estate.account(sub, name).id).lower()].properties["customerManagedKeyStatus"] = status
    [binding] = cosmos_bindings(app, estate).values()
    assert app.targets[ServiceType.COSMOS].health(binding) == health
    assert binding.access_revoked is revoked
    if revoked and status.endswith(")."):
        assert status_code(binding.health) == 4003
