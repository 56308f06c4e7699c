"""A revocation holds until it is restored: the durable record, every path standing down, the
level-triggered hold (outside rotations, rotation policy), the two-person rule judged by its
effect, runbooks refusing without storage. Against the in-process sandbox; each test fails on
the code before the revocation record existed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy

import functions._root as root
from functions.key_events import on_key_vault_event
from functions.schedules import reconcile_schedule
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World
from shared.app import build
from shared.auth import ROLE_REVOKE, AuthError, Principal
from shared.cli import main
from shared.config import load_settings
from shared.errors import ConfigError, PermanentError
from shared.notify import RecordingNotifier
from shared.reconcile import ActionKind
from shared.runbooks import REVOKED_BY_TAG, RestoreRequest, RevokeRequest, resume_unfinished
from shared.workqueue import MemoryQueue
from tests.app.estate import EventCapture, grid_event
from tests.app.test_runbooks import ALICE, BOB, LONG, Rig, rig_for
from tests.memory_journal import MemoryJournal

CAROL = Principal("33333333-cccc-4000-8000-000000000003", "Carol", frozenset({ROLE_REVOKE}))


@pytest.fixture
def rig() -> Iterator[Rig]:
    world = World()
    made = rig_for(world, MemoryJournal(world.clock))
    root.install(made.app)
    try:
        yield made
    finally:
        root.install(None)


def revoke_whole_key(rig: Rig, mode: str = "disable") -> str:
    view = rig.app.runbooks.revoke(RevokeRequest(rig.key, mode, "key exposed", "INC-11"), ALICE, budget=LONG)
    assert view.run.status in ("succeeded", "partially-succeeded"), view.as_dict()
    return view.run.run_id


def enabled(rig: Rig) -> list[str]:
    return [v for v, p in rig.versions().items() if p.enabled]


# ---- rotation by every path ----------------------------------------------------------------------
def test_cli_rotate_is_refused_while_revoked_and_creates_no_version(rig: Rig) -> None:
    run_id = revoke_whole_key(rig)
    before = set(rig.versions())
    out = io.StringIO()
    code = main(["rotate", "--key", rig.estate.key_uri], app=rig.app, stdout=out)
    assert code == 1 and run_id in out.getvalue()
    assert set(rig.versions()) == before and enabled(rig) == []


def test_rotation_timer_near_expiry_and_expired_are_refused_while_revoked() -> None:
    world = World()
    estate_rig = rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_MANAGED_KEYS="")
    key_uri = estate_rig.estate.key_uri
    # Managed, and its current version expires in ten days (Key Vault sends NearExpiry 30 days before).
    estate_rig.estate.keys.update_key_properties(
        estate_rig.estate.key_name, tags={"keysteward-rotate": "P1D"}, expires_on=world.clock.now() + timedelta(days=10))
    capture = EventCapture(world)
    root.install(estate_rig.app)
    try:
        run_id = revoke_whole_key(estate_rig)
        before = set(estate_rig.versions())
        world.clock.advance(timedelta(days=2))  # older than its maximum age: the timer would rotate
        results = estate_rig.app.rotation_sweep()
        assert [r.rotated for r in results] == [False] and run_id in results[0].reason
        world.tick(world.clock.now())
        near = [e for e in capture.of_type("KeyNearExpiry") if e["data"]["Id"].startswith(key_uri)]
        assert near, "the sandbox sends KeyNearExpiry"
        for raw in near:
            on_key_vault_event(grid_event(raw))
        world.clock.advance(timedelta(days=9))
        world.tick(world.clock.now())
        expired = [e for e in capture.of_type("KeyExpired") if e["data"]["Id"].startswith(key_uri)]
        assert expired, "the sandbox sends KeyExpired"
        for raw in expired:
            on_key_vault_event(grid_event(raw))
        assert set(estate_rig.versions()) == before
        assert enabled(estate_rig) == []
    finally:
        root.install(None)


# ---- the hold: outside rotations, by event and by timer -------------------------------------------
def test_a_version_rotated_outside_during_a_revocation_is_disabled_by_the_event(rig: Rig) -> None:
    capture = EventCapture(rig.world)
    pinned = rig.estate.pinned_versions()
    run_id = revoke_whole_key(rig)
    new = rig.estate.keys.rotate_key(rig.estate.key_name)
    assert new.properties.enabled
    rig.world.tick(rig.world.clock.now())
    events = [e for e in capture.of_type("KeyNewVersionCreated") if e["data"]["Version"] == new.properties.version]
    assert events
    on_key_vault_event(grid_event(events[0]))
    assert enabled(rig) == []
    assert rig.versions()[new.properties.version].tags[REVOKED_BY_TAG] == run_id
    assert rig.estate.pinned_versions() == pinned  # no binding moved to it
    holds = [s for s in rig.journal.steps(run_id) if s.name == "hold"]
    assert holds and new.properties.version in holds[0].result["disabled"]  # the run shows the act


def test_with_event_delivery_off_the_next_timer_pass_disables_it(rig: Rig) -> None:
    pinned = rig.estate.pinned_versions()
    run_id = revoke_whole_key(rig)
    new = rig.estate.keys.rotate_key(rig.estate.key_name)  # no event is delivered
    rig.world.clock.advance(timedelta(minutes=10))
    reconcile_schedule(TimerRequest(past_due=False))
    assert enabled(rig) == []
    assert rig.estate.pinned_versions() == pinned
    assert {a.kind for r in rig.app.reconcile_all() for a in r.actions} & {ActionKind.UPDATE} == set()
    # Restore brings back what the revocation took, and says what it did with the newcomer.
    view = rig.app.runbooks.restore(RestoreRequest(run_id, "all clear", "INC-11"), BOB, budget=LONG)
    act = next(s for s in view.steps if s.name == "act").result
    assert new.properties.version in act["heldVersions"] and new.properties.version in act["done"]
    assert sorted(enabled(rig)) == sorted(rig.versions())
    assert rig.journal.revocations(rig.key.uri) == []  # the record ends with a successful restore


def test_remove_access_re_added_outside_is_removed_again_on_the_next_pass(rig: Rig) -> None:
    run_id = revoke_whole_key(rig, "remove-access")
    before = rig.policies()
    targeted = {b["principalId"].lower() for s in rig.journal.steps(run_id) if s.name == "resolve"
                for b in s.result["bindings"] if b["principalId"]}
    assert targeted and not targeted & {k.lower() for k in before}
    from tests.app.estate import RG, kv_mgmt
    one = sorted(targeted)[0]
    kv_mgmt(rig.world, rig.estate.subs[0]).vaults.update_access_policy(RG, rig.estate.vault_name, "add", {
        "properties": {"accessPolicies": [{"tenantId": rig.world.tenant_id, "objectId": one,
                                           "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]}}]}})
    assert one in {k.lower() for k in rig.policies()}
    reconcile_schedule(TimerRequest(past_due=False))
    assert one not in {k.lower() for k in rig.policies()}
    assert any(s.name == "hold" for s in rig.journal.steps(run_id))


def test_the_rotation_policy_is_taken_out_of_play_and_restored_exactly(rig: Rig) -> None:
    kc = rig.estate.keys
    kc.update_key_rotation_policy(rig.estate.key_name, KeyRotationPolicy(
        lifetime_actions=[KeyRotationLifetimeAction("Rotate", time_after_create="P30D"),
                          KeyRotationLifetimeAction("Notify", time_before_expiry="P20D")],
        expires_in="P90D"))

    def policy() -> Any:
        p = kc.get_key_rotation_policy(rig.estate.key_name)
        return sorted((str(getattr(a.action, "value", a.action)), a.time_after_create, a.time_before_expiry)
                      for a in p.lifetime_actions), p.expires_in

    original = policy()
    run_id = revoke_whole_key(rig)
    assert all(a[0].lower() != "rotate" for a in policy()[0])
    versions = set(rig.versions())
    rig.world.clock.advance(timedelta(days=40))  # the old policy would have rotated by now
    rig.world.tick(rig.world.clock.now())
    reconcile_schedule(TimerRequest(past_due=False))
    assert enabled(rig) == [] and set(rig.versions()) == versions
    resume_unfinished(rig.app.runbooks, budget=LONG)
    rig.app.runbooks.restore(RestoreRequest(run_id, "all clear", "INC-11"), BOB, budget=LONG)
    assert policy() == original


# ---- no window: junk runs do not hide a revocation --------------------------------------------------
def test_twenty_five_junk_runs_do_not_hide_a_revocation() -> None:
    world = World()
    rig = rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_TWO_PERSON_RULE="true")
    books = rig.app.runbooks
    pinned = rig.estate.pinned_versions()
    view = books.revoke(RevokeRequest(rig.key, "disable", "key exposed", "INC-11", emergency=True), ALICE,
                        budget=LONG)
    run_id = view.run.run_id
    for n in range(25):  # waiting for approval forever
        junk = books.revoke(RevokeRequest(rig.key, "disable", f"junk {n}", "JUNK"), CAROL)
        assert junk.run.status == "pending-approval"
    rig.estate.keys.rotate_key(rig.estate.key_name)
    world.clock.advance(timedelta(minutes=5))
    assert rig.app.revocation_in_force(rig.key) == run_id
    results = rig.app.reconcile_all()
    assert rig.estate.pinned_versions() == pinned
    kinds = {a.kind for r in results for a in r.actions}
    assert ActionKind.UPDATE not in kinds and ActionKind.REVOKED in kinds


# ---- the two-person rule judges the effect -----------------------------------------------------------
def test_per_version_revokes_that_would_disable_every_version_wait_for_approval() -> None:
    world = World()
    rig = rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_TWO_PERSON_RULE="true")
    books = rig.app.runbooks
    first, second = sorted(rig.versions(), key=lambda v: rig.versions()[v].created_on)
    one = books.revoke(RevokeRequest(rig.key.with_version(first), "disable", "v1 exposed", "INC-11"), ALICE,
                       budget=LONG)
    assert one.run.status != "pending-approval"
    last = books.revoke(RevokeRequest(rig.key.with_version(second), "disable", "v2 too", "INC-11"), ALICE,
                        budget=LONG)
    assert last.run.status == "pending-approval"
    assert enabled(rig) == [second]
    assert books.plan(rig.key.with_version(second), "disable")["needsApproval"] is True


def test_an_approver_writing_the_requesters_oid_in_braces_is_the_same_person() -> None:
    world = World()
    rig = rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_TWO_PERSON_RULE="true")
    books = rig.app.runbooks
    view = books.revoke(RevokeRequest(rig.key, "disable", "key exposed", "INC-11"), ALICE)
    braced = Principal("{" + ALICE.object_id.upper() + "}", "Alice again", frozenset({ROLE_REVOKE}))
    with pytest.raises(AuthError) as err:
        books.approve(view.run.run_id, braced)
    assert err.value.status == 403
    assert enabled(rig)


# ---- other paths stand down, naming the run ------------------------------------------------------------
def test_restore_of_another_run_retire_and_the_sweep_stand_down(rig: Rig) -> None:
    books = rig.app.runbooks
    older = books.revoke(RevokeRequest(rig.key.with_version(next(iter(rig.versions()))), "disable", "v1", "INC"),
                         ALICE, budget=LONG).run.run_id
    whole = revoke_whole_key(rig)
    with pytest.raises(PermanentError) as err:
        books.restore(RestoreRequest(older, "undo v1", "INC"), BOB)
    assert err.value.status == 409 and whole in str(err.value)
    with pytest.raises(PermanentError) as err:
        rig.app.retention.disable_version(rig.key.with_version(next(iter(rig.versions()))), reason="r", ticket="t",
                        caller="c")
    assert err.value.status == 409 and whole in str(err.value)
    sweep = rig.app.retention.sweep()
    assert sweep.revoked == {rig.key.uri: whole} and sweep.repaired == []


# ---- runbooks need durable storage ------------------------------------------------------------------------
def test_cli_runbooks_without_storage_exit_2_and_write_nothing() -> None:
    world = World()
    rig = rig_for(world, MemoryJournal(world.clock))
    settings = load_settings({"KEYSTEWARD_SUBSCRIPTIONS": ",".join(rig.estate.subs),
                              "KEYSTEWARD_VAULTS": rig.estate.vault_url})
    assert settings.storage_connection is None and settings.storage_table_uri is None
    app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                credential=StaticTokenCredential(), notifier=RecordingNotifier(), queue=MemoryQueue(),
                polling_interval=0)
    seq = world.last_seq
    for argv in (["revoke", "--key", rig.estate.key_uri, "--mode", "disable", "--reason", "r", "--ticket", "t"],
                 ["restore", "--run", "20260101T000000000Z-abcdef0123", "--reason", "r", "--ticket", "t"],
                 ["resume"]):
        out = io.StringIO()
        assert main(argv, app=app, stdout=out) == 2, argv
        assert "AzureWebJobsStorage" in out.getvalue()
    assert world.requests_since(seq) == []  # nothing reached Azure, not even a read
    with pytest.raises(ConfigError):
        _ = app.journal


# ---- settings -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["KEYSTEWARD_RETENTION_HOURS", "KEYSTEWARD_MAX_CONCURRENCY",
                                  "KEYSTEWARD_ARM_WRITES_PER_S", "KEYSTEWARD_ARM_WRITE_BURST",
                                  "KEYSTEWARD_LAG_ALERT_MINUTES", "KEYSTEWARD_EXPIRY_MARGIN_DAYS",
                                  "KEYSTEWARD_ROTATION_MAX_AGE_DAYS", "KEYSTEWARD_CONFIRM_DELAY_SECONDS",
                                  "KEYSTEWARD_BACKUP_WINDOW_HOURS", "KEYSTEWARD_VERIFY_DEADLINE_MINUTES"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e308", "-1"])
def test_every_numeric_setting_refuses_nan_infinity_and_out_of_range(name: str, value: str) -> None:
    env = {"KEYSTEWARD_SUBSCRIPTIONS": "00000000-0000-0000-0000-000000000001",
           "KEYSTEWARD_VAULTS": "https://kv.vault.azure.net", name: value}
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert name in str(err.value)
