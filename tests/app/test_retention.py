"""The retention guard against the sandbox, moving its clock."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.cosmosdb import models as cm

import functions._root as root
from functions.schedules import reconcile_schedule
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World
from shared.cli import main as cli_main
from shared.errors import TransientError
from shared.model import KeyRef
from shared.retention import RetentionRefused, restore_point_note
from shared.tags import REVOKED_BY_TAG
from shared.targets.cosmos import backup_retention
from tests.app.estate import LOCATION, RG, Estate, cosmos, grant, make_estate, make_vault, steward
from tests.app.test_propagation import TimerRequest, run_queue


def arm_put(world: World, path: str, body: dict[str, Any], api_version: str) -> dict[str, Any]:
    client = ARMPipelineClient(
        base_url="https://management.azure.com",
        policies=[BearerTokenCredentialPolicy(StaticTokenCredential(), "https://management.azure.com/.default")],
        transport=SandboxTransport(world),
    )
    with client:
        response = client.send_request(HttpRequest("PUT", f"https://management.azure.com{path}",
                                                   params={"api-version": api_version}, json=body))
        response.read()
        assert response.status_code in (200, 201), response.text()
        return dict(response.json())


def make_postgres(world: World, estate: Estate, name: str, version: str) -> str:
    sub = estate.subs[0]
    uai = f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-{name}"
    ident = arm_put(world, uai, {"location": LOCATION}, "2023-01-31")
    grant(world, sub, estate.vault_name, ident["properties"]["principalId"])
    path = f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/serverGroupsv2/{name}"
    arm_put(world, path, {
        "location": LOCATION,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai: {}}},
        "properties": {"dataEncryption": {"type": "AzureKeyVault", "primaryKeyUri": f"{estate.key_uri}/{version}",
                                          "primaryUserAssignedIdentityId": uai}},
    }, "2023-03-02-preview")  # postgresqlhsc: the only api-version with dataEncryption
    return path


@pytest.fixture
def world() -> World:
    return World()


def versioned(estate: Estate, version: str) -> KeyRef:
    return KeyRef(estate.vault_url, estate.key_name, version)


def test_old_version_refused_before_24h_and_accepted_after_when_unused(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, notifier = steward(world, estate)
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(hours=23))
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(versioned(estate, estate.v1), reason="cleanup", ticket="T-1", caller="alice")
    [blocker] = refused.value.verdict.blockers
    assert blocker.kind == "retention" and blocker.time_left == timedelta(hours=1)
    assert estate.keys.get_key(estate.key_name, estate.v1).properties.enabled
    world.clock.advance(timedelta(hours=1, seconds=1))
    app.retention.disable_version(versioned(estate, estate.v1), reason="cleanup", ticket="T-1", caller="alice")
    props = [p for p in estate.keys.list_properties_of_key_versions(estate.key_name) if p.version == estate.v1][0]
    assert props.enabled is False


def test_retention_setting_raises_never_lowers():
    from shared.config import load_settings
    from shared.errors import ConfigError

    base = {"KEYSTEWARD_SUBSCRIPTIONS": "s", "KEYSTEWARD_VAULTS": "https://v.vault.azure.net"}
    assert load_settings({**base, "KEYSTEWARD_RETENTION_HOURS": "48"}).retention == timedelta(hours=48)
    with pytest.raises(ConfigError):
        load_settings({**base, "KEYSTEWARD_RETENTION_HOURS": "12"})


def test_version_pinned_by_a_cluster_is_refused_at_any_age_naming_the_cluster(world):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(days=400))
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(versioned(estate, estate.v1), reason="r", ticket="t", caller="c")
    pinned = [b for b in refused.value.verdict.blockers if b.kind == "pinned"]
    assert {b.resource_id.rsplit("/", 1)[-1] for b in pinned} == {name for _, name in estate.clusters}
    assert "adxa0010" in str(refused.value)


def test_versionless_account_that_has_not_moved_blocks_the_version(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=1)
    app, _, _ = steward(world, estate)
    world.service_settings.versionless_lag_s = 48 * 3600  # the account follows slowly
    world.clock.advance(timedelta(minutes=10))  # the account reports v1 in use
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(hours=25))
    status = app.retention.key_status(KeyRef(estate.vault_url, estate.key_name))
    v1 = next(v for v in status["versions"] if v["version"] == estate.v1)
    assert not v1["retention"]["mayDisable"]
    assert [b["kind"] for b in v1["retention"]["blockers"]] == ["versionless"]
    assert "still uses" in v1["retention"]["blockers"][0]["message"]
    world.clock.advance(timedelta(hours=24))  # past the lag: the account moved
    status = app.retention.key_status(KeyRef(estate.vault_url, estate.key_name))
    v1 = next(v for v in status["versions"] if v["version"] == estate.v1)
    assert v1["retention"]["mayDisable"], v1["retention"]


def test_postgres_version_is_protected_forever_and_reported(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    make_postgres(world, estate, "pgcluster", estate.v1)
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(days=3650))
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(versioned(estate, estate.v1), reason="r", ticket="t", caller="c")
    assert [b.kind for b in refused.value.verdict.blockers] == ["read-only"]
    status = app.retention.key_status(KeyRef(estate.vault_url, estate.key_name))
    assert [b["resourceId"].rsplit("/", 1)[-1] for b in status["bindings"] if b["stuck"]] == ["pgcluster"]


def test_sweep_retires_exactly_the_eligible_versions_and_tags_them(world):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, queue, _ = steward(world, estate)
    kc = estate.keys
    v2 = kc.rotate_key(estate.key_name).properties.version
    world.clock.advance(timedelta(hours=30))
    v3 = kc.rotate_key(estate.key_name).properties.version
    world.clock.advance(timedelta(hours=1))
    kc.update_key_properties(estate.key_name, v3, tags={"keysteward-retire": "true"})
    # v1: pinned by the clusters (keysteward has not propagated yet) -> kept
    # v2: successor v3 is 1 h old -> kept; v3: current -> kept
    result = app.retention.sweep()
    assert result.retired == []
    # propagate, then 24 h later v1 and v2 are free
    app.reconcile_all()
    root.install(app)
    run_queue(queue, world)
    root.install(None)
    world.clock.advance(timedelta(hours=24))
    seq = world.last_seq
    result = app.retention.sweep()
    assert sorted(result.retired) == sorted(f"{estate.key_uri}/{v}" for v in (estate.v1, v2))
    for v in (estate.v1, v2):
        props = next(p for p in kc.list_properties_of_key_versions(estate.key_name) if p.version == v)
        assert props.enabled is False
        assert props.tags["keysteward-retired-by"] == result.run
        assert "keysteward-retired-at" in props.tags
    assert kc.get_key(estate.key_name).properties.version == v3
    # nothing is ever deleted or purged
    assert not [e for e in world.requests_since(seq) if e.method == "DELETE" or "purge" in e.path.lower()]


def test_version_disabled_by_hand_within_24h_is_re_enabled_and_alerted(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, notifier = steward(world, estate)
    kc = estate.keys
    v2 = kc.rotate_key(estate.key_name).properties.version
    v3 = kc.rotate_key(estate.key_name).properties.version
    world.clock.advance(timedelta(hours=2))
    kc.update_key_properties(estate.key_name, estate.v1, enabled=False)  # by hand, too early
    kc.update_key_properties(estate.key_name, v2, enabled=False, tags={REVOKED_BY_TAG: "run-123"})  # by a revocation
    root.install(app)
    try:
        reconcile_schedule(TimerRequest(past_due=False))
    finally:
        root.install(None)
    states = {p.version: p.enabled for p in kc.list_properties_of_key_versions(estate.key_name)}
    assert states == {estate.v1: True, v2: False, v3: True}
    drift = [o for o in notifier.outcomes if o.kind == "VersionDrift"]
    assert [o.subject for o in drift] == [f"{estate.key_uri}/{estate.v1}"]
    assert drift[0].severity == "incident"


def test_soft_deleted_key_in_use_is_recovered(world):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, notifier = steward(world, estate)
    estate.keys.begin_delete_key(estate.key_name).result()
    seq = world.last_seq
    result = app.retention.sweep()
    assert result.recovered == [estate.key_uri]
    assert estate.keys.get_key(estate.key_name).properties.version == estate.v1
    assert [o.kind for o in notifier.outcomes] == ["KeyRecovered"]
    assert not [e for e in world.requests_since(seq) if e.method == "DELETE"]


def test_purged_key_in_use_is_an_incident_and_a_sweep_error(world):
    # Soft-deleted, then purged when its retention ended: nothing can bring it back, and the
    # cluster still pins it. The sweep says so every pass (an incident, and an error that fails
    # the timer's invocation) instead of skipping the key.
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, notifier = steward(world, estate)
    estate.keys.begin_delete_key(estate.key_name).result()
    world.clock.advance(timedelta(days=91))  # past softDeleteRetentionInDays (90): the vault purges it
    assert app.keys.deleted(KeyRef(estate.vault_url, estate.key_name)) is None
    seq = world.last_seq
    result = app.retention.sweep()
    assert result.purged == [estate.key_uri]
    assert result.recovered == []
    assert len(result.errors) == 1 and estate.key_uri in result.errors[0] and "purged" in result.errors[0]
    [incident] = [o for o in notifier.outcomes if o.kind == "KeyPurgedInUse"]
    assert incident.severity == "incident" and incident.subject == estate.key_uri
    assert incident.data["bindings"] and all("/clusters/" in r for r in incident.data["bindings"])
    assert not [e for e in world.requests_since(seq) if e.method in ("DELETE", "PUT", "PATCH")]
    # ... and the timer's pass reports it (its invocation fails, so the platform records it)
    report = app.timer_pass()
    assert any("purged" in e and estate.key_uri in e for e in report.errors)
    root.install(app)
    try:
        with pytest.raises(TransientError, match="error"):
            reconcile_schedule(TimerRequest(past_due=False))
    finally:
        root.install(None)


def test_the_timer_recovers_a_soft_deleted_key_in_use_although_reconcile_cannot_read_it(world):
    # The reconcile pass cannot read a deleted key; that must not keep the retention sweep, which
    # recovers it, from running in the same timer pass.
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, notifier = steward(world, estate)
    estate.keys.begin_delete_key(estate.key_name).result()
    report = app.timer_pass()
    assert report.sweep is not None and report.sweep.recovered == [estate.key_uri]
    assert [e for e in report.errors if "not found" in e]  # the reconcile of the deleted key, reported
    assert estate.keys.get_key(estate.key_name).properties.version == estate.v1
    assert "KeyRecovered" in [o.kind for o in notifier.outcomes]
    assert app.timer_pass().errors == []  # the next pass finds the key again


def test_check_flags_missing_purge_protection_and_a_key_too_small(world, capsys):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=1, versionless=0)
    weak_url = make_vault(world, estate.subs[0], "kv-weak", purge_protection=False)
    app, _, _ = steward(world, estate, KEYSTEWARD_VAULTS=f"{estate.vault_url},{weak_url}",
                        KEYSTEWARD_KEY_SIZES="cosmos=3072,4096")
    code = cli_main(["check", "--json"], app=app)
    import json

    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and not doc["ok"]
    problems = {(f["check"], f["scope"].rsplit("/", 1)[-1]) for f in doc["findings"] if f["level"] == "violation"}
    assert ("purge-protection", weak_url.rsplit("/", 1)[-1]) in problems
    assert ("key-size", "cosmos-a001-0") in problems
    assert ("purge-protection", estate.vault_url.rsplit("/", 1)[-1]) not in problems


def test_status_cli_lists_versions_users_and_verdicts(world, capsys):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    estate.keys.rotate_key(estate.key_name)
    assert cli_main(["status", "--key", estate.key_uri], app=app) == 0
    out = capsys.readouterr().out
    assert "adxa0010" not in out or "pinned" in out
    row = next(line for line in out.splitlines() if line.split()[:1] == [estate.v1])
    assert row.split()[1:2] == ["enabled"] and row.split()[-3:] == ["2", "no,", "keep"]
    assert "is pinned to" in out


def test_disable_cli_refuses_with_reasons(world, capsys):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    estate.keys.rotate_key(estate.key_name)
    code = cli_main(["disable", "--key", f"{estate.key_uri}/{estate.v1}", "--reason", "r", "--ticket", "t"], app=app)
    assert code == 1
    assert "refused:" in capsys.readouterr().out


# ---- backups keep their key (Cosmos DB backupPolicy) ------------------------------------------------
def make_backed_up_account(world: World, estate: Estate, name: str, policy: dict[str, Any]) -> str:
    """A versionless Cosmos DB account created with ``policy`` as its backupPolicy, through the SDK."""
    client = cosmos(world, estate.subs[0])
    account = client.database_accounts.begin_create_or_update(RG, name, {
        "location": LOCATION, "kind": "GlobalDocumentDB", "identity": {"type": "SystemAssigned"},
        "properties": {"databaseAccountOfferType": "Standard", "backupPolicy": policy,
                       "locations": [{"locationName": LOCATION, "failoverPriority": 0}]},
    }).result()
    grant(world, estate.subs[0], estate.vault_name, str(account.identity.principal_id))
    client.database_accounts.begin_update(RG, name, {"properties": {
        "keyVaultKeyUri": estate.key_uri, "defaultIdentity": "SystemAssignedIdentity"}}).result()
    return str(account.id)


def backup_blockers(app: Any, estate: Estate, version: str) -> list[str]:
    status = app.retention.key_status(KeyRef(estate.vault_url, estate.key_name))
    entry = next(v for v in status["versions"] if v["version"] == version)
    return [b["message"] for b in entry["retention"]["blockers"] if b["kind"] == "backup"]


CONTINUOUS_30 = {"type": "Continuous", "continuousModeProperties": {"tier": "Continuous30Days"}}


def test_continuous_30_day_account_keeps_the_old_version_25_h_after_rotation_and_frees_it_after(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_LAG_ALERT_MINUTES="60")
    make_backed_up_account(world, estate, "cosmos-orders", CONTINUOUS_30)
    world.clock.advance(timedelta(minutes=10))  # the account reports v1 in use
    rotated = estate.keys.rotate_key(estate.key_name).properties.created_on
    world.clock.advance(timedelta(hours=25))  # the account follows v2 within the hour (sandbox lag)
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(versioned(estate, estate.v1), reason="cleanup", ticket="T-18", caller="alice")
    [blocker] = refused.value.verdict.blockers
    stopped = rotated + timedelta(hours=1)  # moved off v1 within the lag limit of v2's creation
    until = stopped + timedelta(days=30)
    assert blocker.kind == "backup"
    assert blocker.message.startswith(
        f"cosmos-orders: continuous 30-day restore points taken until {stopped:%Y-%m-%d} need it until {until:%Y-%m-%d}")
    assert blocker.time_left == until - world.clock.now()
    assert estate.keys.get_key(estate.key_name, estate.v1).properties.enabled
    world.clock.advance(blocker.time_left - timedelta(minutes=1))
    assert backup_blockers(app, estate, estate.v1)  # a minute before the window ends: still kept
    world.clock.advance(timedelta(minutes=2))
    app.retention.disable_version(versioned(estate, estate.v1), reason="cleanup", ticket="T-18", caller="alice")
    props = [p for p in estate.keys.list_properties_of_key_versions(estate.key_name) if p.version == estate.v1][0]
    assert not props.enabled


def test_periodic_48_h_account_blocks_for_48_hours(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_LAG_ALERT_MINUTES="60")
    make_backed_up_account(world, estate, "cosmos-billing", {
        "type": "Periodic", "periodicModeProperties": {"backupIntervalInMinutes": 240,
                                                       "backupRetentionIntervalInHours": 48}})
    world.clock.advance(timedelta(minutes=10))
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(hours=48))  # 24-hour rule long over; the backups still need v1
    [message] = backup_blockers(app, estate, estate.v1)
    assert "cosmos-billing: periodic backups kept 48 h taken until" in message
    world.clock.advance(timedelta(hours=1, minutes=1))  # 48 h after the account moved off v1
    assert backup_blockers(app, estate, estate.v1) == []
    app.retention.disable_version(versioned(estate, estate.v1), reason="cleanup", ticket="T-18", caller="alice")


def test_backup_window_setting_is_a_floor_under_the_policy(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_LAG_ALERT_MINUTES="60", KEYSTEWARD_BACKUP_WINDOW_HOURS="100")
    make_backed_up_account(world, estate, "cosmos-short", {"type": "Periodic"})  # Azure's default: 8 h
    world.clock.advance(timedelta(minutes=10))
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(hours=90))
    [message] = backup_blockers(app, estate, estate.v1)
    assert "periodic backups kept 8 h (floor 100.0 h)" in message
    world.clock.advance(timedelta(hours=12))
    assert backup_blockers(app, estate, estate.v1) == []


def test_unreadable_backup_policy_blocks_with_its_reason(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    rid = make_backed_up_account(world, estate, "cosmos-odd", CONTINUOUS_30)
    # Stands in for a policy keysteward cannot interpret (a type newer than the spec it reads):
    # Azure would have to answer it, so the sandbox's state is set directly.
    world.resources[rid.lower()].properties["backupPolicy"] = {"type": "Hourly"}
    world.clock.advance(timedelta(minutes=10))
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(days=400))
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(versioned(estate, estate.v1), reason="cleanup", ticket="T-18", caller="alice")
    [blocker] = refused.value.verdict.blockers
    assert blocker.kind == "backup"
    assert "cosmos-odd: backup policy cannot be read (backup policy type 'Hourly' is not known)" in blocker.message


def test_status_shows_the_backup_reason(world, capsys):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    make_backed_up_account(world, estate, "cosmos-orders", CONTINUOUS_30)
    world.clock.advance(timedelta(minutes=10))
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(hours=25))
    assert cli_main(["status", "--key", estate.key_uri], app=app) == 0
    out = capsys.readouterr().out
    assert re.search(rf"{estate.v1}\s+enabled\s.*\s0\s+no, keep", out), out
    assert "cosmos-orders: continuous 30-day restore points taken until" in out
    assert re.search(r"cosmos-orders\s.*continuous 30-day restore points", out), out


def test_revoke_note_says_restore_points_stay_unusable(world):
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    make_backed_up_account(world, estate, "cosmos-orders", CONTINUOUS_30)
    notes = restore_point_note(app.all_bindings())
    assert notes == ["cosmos-orders: continuous 30-day restore points taken with this key cannot be restored while it "
                     "is revoked; they become usable again only after a restore of the key, and only while they are "
                     "still retained"]


@pytest.mark.parametrize(("policy", "hours", "words"), [
    (cm.PeriodicModeBackupPolicy(periodic_mode_properties=cm.PeriodicModeProperties(
        backup_retention_interval_in_hours=720)), 720, "periodic backups kept 720 h"),
    (cm.ContinuousModeBackupPolicy(continuous_mode_properties=cm.ContinuousModeProperties(tier="Continuous7Days")),
     7 * 24, "continuous 7-day restore points"),
    # A continuous policy that does not say its tier: the longer one, conservatively.
    (cm.ContinuousModeBackupPolicy(), 30 * 24, "tier not reported, 30-day assumed"),
    # Mid-migration from periodic to continuous both kinds of restore points exist: the longer window.
    (cm.PeriodicModeBackupPolicy(
        periodic_mode_properties=cm.PeriodicModeProperties(backup_retention_interval_in_hours=8),
        migration_state=cm.BackupPolicyMigrationState(status="InProgress", target_type="Continuous")),
     30 * 24, "migrating to continuous"),
    (None, None, "the account reports no backupPolicy"),
    (cm.PeriodicModeBackupPolicy(), None, "without a usable backupRetentionIntervalInHours"),
    (cm.ContinuousModeBackupPolicy(continuous_mode_properties=cm.ContinuousModeProperties(tier="Continuous90Days")),
     None, "tier 'Continuous90Days' is not known"),
])
def test_backup_policy_is_read_as_the_spec_defines_it(policy, hours, words):
    result = backup_retention(policy)
    assert (int(result.window.total_seconds() // 3600) if result.window else None) == hours
    assert words in (result.description if result.readable else str(result.reason))
