"""Revoke and restore runbooks against the in-process sandbox, journaled in memory and in
Azure Table storage (Azurite): blast radius, both modes, verification, restore, resumption
after a kill at every step, serialisation per key, the two-person rule."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from sandbox import seeds
from sandbox.faults import FaultRule
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World
from shared.app import Keysteward, build
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, AuthError, Principal
from shared.config import load_settings
from shared.errors import PermanentError
from shared.journal import JSON_MAX_CHARS, Journal, TableJournal
from shared.keyuri import parse_key_uri
from shared.model import KeyRef
from shared.notify import RecordingNotifier
from shared.runbooks import (
    REVOKED_AT_TAG,
    REVOKED_BY_TAG,
    SAMPLE_MAX,
    STEP_STALE_AFTER,
    STEPS,
    RestoreRequest,
    RevokeRequest,
    Runbooks,
    resume_unfinished,
)
from shared.workqueue import MemoryQueue
from tests.app.estate import RG, Estate, kv_mgmt, make_estate
from tests.azurite import Azurite
from tests.memory_journal import MemoryJournal

ALICE = Principal("11111111-aaaa-4000-8000-000000000001", "Alice On-call", frozenset({ROLE_READ, ROLE_REVOKE}))
BOB = Principal("22222222-bbbb-4000-8000-000000000002", "Bob Second", frozenset({ROLE_REVOKE, ROLE_RESTORE}))
UNRELATED = "99999999-0000-4000-8000-0000000000ff"  # an admin's entry, no service of the key
LONG = timedelta(hours=2)


class Killed(BaseException):
    """Plays the process dying: nothing in the runbook catches it."""


@dataclass
class Rig:
    world: World
    estate: Estate
    app: Keysteward
    notifier: RecordingNotifier
    journal: Journal

    @property
    def key(self) -> KeyRef:
        return parse_key_uri(self.estate.key_uri, allowed_vaults=None)

    def books(self, **kwargs: Any) -> Runbooks:
        return Runbooks(self.app.runbooks.deps, **kwargs)

    def versions(self) -> dict[str, Any]:
        return {p.version: p for p in self.estate.keys.list_properties_of_key_versions(self.estate.key_name)}

    def policies(self) -> dict[str, frozenset[str]]:
        vault = kv_mgmt(self.world, self.estate.subs[0]).vaults.get(RG, self.estate.vault_name)
        return {e.object_id: frozenset(str(getattr(p, "value", p)).lower() for p in e.permissions.keys_property or [])
                for e in vault.properties.access_policies}

    def health(self) -> dict[str, str]:
        out = {}
        for sub, name in self.estate.clusters:
            state = self.estate.cluster(sub, name).state
            out[name] = str(getattr(state, "value", state))
        for sub, name in self.estate.accounts + self.estate.versionless_accounts:
            out[name] = str(self.estate.account(sub, name).customer_managed_key_status)
        return out

    def key_writes(self, since: int) -> list[Any]:
        return [e for e in self.writes(since) if e.service == "vault"]

    def writes(self, since: int) -> list[Any]:
        """Write requests the services acted on. A 401 is Key Vault's challenge handshake, which
        the SDK skips once it has cached the challenge for a vault URL (process-wide), so whether
        one shows depends on which test ran first in this process."""
        return [e for e in self.world.requests_since(since)
                if e.method in ("PATCH", "PUT", "POST", "DELETE") and e.status != 401]


def make_app(world: World, estate: Estate, journal: Journal, **env: str) -> tuple[Keysteward, RecordingNotifier]:
    settings = load_settings({
        "KEYSTEWARD_SUBSCRIPTIONS": ",".join(estate.subs),
        "KEYSTEWARD_VAULTS": estate.vault_url,
        "KEYSTEWARD_VERIFY_DEADLINE_MINUTES": "60",
        **env,
    })
    notifier = RecordingNotifier()
    app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                credential=StaticTokenCredential(), notifier=notifier, queue=MemoryQueue(), polling_interval=0,
                journal=journal)
    return app, notifier


def rig_for(world: World, journal: Journal, **env: str) -> Rig:
    world.service_settings.cosmos_recovery_s = 600.0  # Cosmos recovers within the verify deadline
    estate = make_estate(world)
    estate.keys.rotate_key(estate.key_name)  # a second version: "every version" means two here
    kv_mgmt(world, estate.subs[0]).vaults.update_access_policy(RG, estate.vault_name, "add", {"properties": {
        "accessPolicies": [{"tenantId": world.tenant_id, "objectId": UNRELATED, "permissions": {"keys": ["get"]}}]}})
    app, notifier = make_app(world, estate, journal, **env)
    return Rig(world, estate, app, notifier, journal)


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.azurite)])
def journal_factory(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Makes the journal for a world: in memory, or tables of their own in Azurite."""
    services: list[TableServiceClient] = []

    def make(world: World) -> Journal:
        if request.param == "memory":
            return MemoryJournal(world.clock)
        azurite: Azurite = request.getfixturevalue("azurite")
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        services.append(service)
        return TableJournal(service, clock=world.clock, table_prefix=f"rb{uuid.uuid4().hex[:12]}")

    yield make
    for service in services:
        service.close()


@pytest.fixture
def rig(journal_factory: Any) -> Rig:
    world = World()
    return rig_for(world, journal_factory(world))


def revoke(rig: Rig, mode: str = "disable", *, key: KeyRef | None = None, budget: timedelta = LONG,
           books: Runbooks | None = None, caller: Principal = ALICE, emergency: bool = False) -> Any:
    request = RevokeRequest(key=key or rig.key, mode=mode, reason="key exposed", ticket="INC-7", emergency=emergency)
    return (books or rig.books()).revoke(request, caller, budget=budget)


def restore(rig: Rig, run_id: str, *, budget: timedelta = LONG, books: Runbooks | None = None) -> Any:
    return (books or rig.books()).restore(RestoreRequest(run_id, "all clear", "INC-7"), BOB, budget=budget)


# ---- dry run -------------------------------------------------------------------------------


def test_dry_run_lists_every_binding_and_changes_nothing(rig: Rig) -> None:
    seq = rig.world.last_seq
    plan = rig.books().plan(rig.key, "disable")
    assert {e.method for e in rig.world.requests_since(seq)} == {"GET"}
    names = {b["name"] for b in plan["bindings"]}
    assert names == {n for _, n in rig.estate.clusters + rig.estate.accounts + rig.estate.versionless_accounts}
    assert all(b["affected"] == "yes" for b in plan["bindings"])
    summary = plan["summary"]
    assert summary["affected"] == 7
    assert summary["byService"] == {"kusto": 4, "cosmos": 3}
    assert summary["bySubscription"] == {rig.estate.subs[0]: 4, rig.estate.subs[1]: 3}
    assert summary["byVersion"] == {rig.estate.v1: 7}  # the versionless account still uses v1 (lag)
    assert sorted(plan["changes"]["disable"]) == sorted(rig.versions())
    assert plan["dryRun"] is True
    assert rig.journal.list_runs() == []


def test_dry_run_of_remove_access_lists_the_entries_it_would_remove(rig: Rig) -> None:
    seq = rig.world.last_seq
    plan = rig.books().plan(rig.key, "remove-access")
    assert {e.method for e in rig.world.requests_since(seq)} == {"GET"}
    principals = {b["principalId"] for b in plan["bindings"]}
    assert {e["objectId"] for e in plan["changes"]["removeAccess"]} == principals
    assert UNRELATED not in principals


def test_dry_run_of_one_version_marks_who_it_reaches(rig: Rig) -> None:
    v2 = next(v for v in rig.versions() if v != rig.estate.v1)
    plan = rig.books().plan(rig.key.with_version(v2), "disable")
    assert plan["changes"]["disable"] == [v2]
    affected = {b["name"]: b["affected"] for b in plan["bindings"]}
    assert set(affected.values()) == {"no"}  # nobody uses v2 yet


# ---- revoke ---------------------------------------------------------------------------------


def test_revoke_disable_disables_every_version_and_services_confirm(rig: Rig) -> None:
    seq = rig.world.last_seq
    view = revoke(rig)
    run_id = view.run.run_id
    assert view.run.status == "succeeded", view.as_dict()
    assert [s.name for s in view.steps] == list(STEPS)
    assert all(s.status == "succeeded" and s.finished is not None for s in view.steps)
    versions = rig.versions()
    assert all(not p.enabled for p in versions.values())
    assert all((p.tags or {})[REVOKED_BY_TAG] == run_id and (p.tags or {})[REVOKED_AT_TAG] for p in versions.values())
    assert len(rig.key_writes(seq)) == len(versions)  # one write per version
    verify = view.steps[3].result
    assert len(verify["confirmed"]) == 7 and not verify["unconfirmed"]
    assert all(h == "Stopped" or "revoked" in h for h in rig.health().values())
    [outcome] = [o for o in rig.notifier.outcomes if o.kind == "KeyRevoked"]
    assert outcome.data["run"] == run_id and outcome.severity == "incident"
    assert rig.books().runs(rig.key)[0].run_id == run_id


def test_revoke_one_version_leaves_the_others_enabled(rig: Rig) -> None:
    view = revoke(rig, key=rig.key.with_version(rig.estate.v1))
    assert view.run.status == "succeeded", view.as_dict()
    versions = rig.versions()
    assert not versions[rig.estate.v1].enabled
    assert all(p.enabled for v, p in versions.items() if v != rig.estate.v1)
    # listed under the versionless key as well
    assert rig.books().runs(rig.key)[0].run_id == view.run.run_id


def test_remove_access_removes_exactly_the_bound_identities(rig: Rig) -> None:
    before = rig.policies()
    plan = rig.books().plan(rig.key, "remove-access")
    bound = {b["principalId"] for b in plan["bindings"]}
    view = revoke(rig, "remove-access")
    assert view.run.status == "succeeded", view.as_dict()
    after = rig.policies()
    assert set(after) == set(before) - bound
    assert after[UNRELATED] == before[UNRELATED]
    assert all(p.enabled for p in rig.versions().values())  # the key itself is untouched
    assert all(h == "Stopped" or "revoked" in h for h in rig.health().values())


# ---- restore --------------------------------------------------------------------------------


def test_restore_reenables_exactly_what_was_disabled_and_services_recover(rig: Rig) -> None:
    v2 = next(v for v in rig.versions() if v != rig.estate.v1)
    rig.estate.keys.update_key_properties(rig.estate.key_name, v2, enabled=False)  # disabled beforehand
    view = revoke(rig)
    assert view.steps[2].result["done"] == [rig.estate.v1]
    back = restore(rig, view.run.run_id)
    assert back.run.status == "succeeded", back.as_dict()
    versions = rig.versions()
    assert versions[rig.estate.v1].enabled and REVOKED_BY_TAG not in (versions[rig.estate.v1].tags or {})
    assert not versions[v2].enabled  # it was not this revocation's to re-enable
    assert set(rig.health().values()) <= {"Running", "Access to the configured customer managed key confirmed."}
    assert [o.kind for o in rig.notifier.outcomes if o.kind.startswith("Key")] == ["KeyRevoked", "KeyRestored"]


def test_restore_of_remove_access_returns_the_vault_to_its_snapshot(rig: Rig) -> None:
    before = rig.policies()
    view = revoke(rig, "remove-access")
    back = restore(rig, view.run.run_id)
    assert back.run.status == "succeeded", back.as_dict()
    assert rig.policies() == before
    assert set(rig.health().values()) <= {"Running", "Access to the configured customer managed key confirmed."}


def test_a_second_restore_does_nothing(rig: Rig) -> None:
    view = revoke(rig)
    first = restore(rig, view.run.run_id)
    seq = rig.world.last_seq
    runs_before = len(rig.journal.list_runs())
    second = restore(rig, view.run.run_id)
    assert second.duplicate and second.run.run_id == first.run.run_id
    assert rig.writes(seq) == []
    assert len(rig.journal.list_runs()) == runs_before


def test_restore_refuses_what_is_not_a_finished_revocation(rig: Rig) -> None:
    view = revoke(rig)
    back = restore(rig, view.run.run_id)
    with pytest.raises(PermanentError) as err:
        restore(rig, back.run.run_id)
    assert err.value.code == "NotARevocation"
    running = revoke(rig, key=rig.key.with_version(rig.estate.v1), budget=timedelta(0))
    assert running.run.status == "running" and running.waiting == "verify"
    with pytest.raises(PermanentError) as err:
        restore(rig, running.run.run_id)
    assert err.value.code == "RevocationNotFinished"


# ---- time: bounded invocations ------------------------------------------------------------------


def test_without_budget_the_key_is_revoked_at_once_and_verification_continues_on_resume(rig: Rig) -> None:
    view = revoke(rig, budget=timedelta(0))
    assert view.run.status == "running" and view.waiting == "verify"
    assert all(not p.enabled for p in rig.versions().values())  # revoked before any wait
    assert [s.status for s in view.steps] == ["succeeded", "succeeded", "succeeded", "pending"]
    report = resume_unfinished(rig.app.runbooks, budget=LONG)
    assert not report.errors
    [done] = report.views
    assert done.run.status == "succeeded"
    assert len(done.steps[3].result["confirmed"]) == 7


def test_services_that_never_confirm_are_reported_after_the_deadline(journal_factory: Any) -> None:
    world = World()
    rig = rig_for(world, journal_factory(world), KEYSTEWARD_VERIFY_DEADLINE_MINUTES="2")
    world.service_settings.usage_interval_s = 3600.0  # the services will not notice within 2 minutes
    view = revoke(rig)
    assert view.run.status == "partially-succeeded"
    verify = view.steps[3].result
    assert len(verify["unconfirmed"]) == 7 and not verify["confirmed"]


# ---- kill and resume -------------------------------------------------------------------------


def killer(step: str, phase: str) -> Any:
    fired: list[bool] = []

    def hook(run_id: str, name: str, at: str) -> None:
        if name == step and at == phase and not fired:
            fired.append(True)
            raise Killed(f"killed at {step}/{phase}")

    return hook


def end_state(rig: Rig, view: Any) -> dict[str, Any]:
    """What a run left behind, in terms that do not depend on the world's random ids."""
    run_id = view.run.run_id
    steps = {s.name: s.result for s in view.steps}
    return {
        "status": view.run.status,
        "steps": [(s.name, s.status) for s in view.steps],
        "versions": sorted((p.enabled, (p.tags or {}).get(REVOKED_BY_TAG) == run_id) for p in rig.versions().values()),
        "policies": sorted(sorted(p) for p in rig.policies().values()),
        "unrelated kept": UNRELATED in rig.policies(),
        "done": len(steps["act"]["done"]),
        "confirmed": len(steps["verify"]["confirmed"]),
        "health": sorted(rig.health().values()),
    }


@pytest.mark.parametrize("mode", ["disable", "remove-access"])
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("phase", ["claimed", "acted", "recorded"])
def test_a_revocation_killed_at_any_step_resumes_to_the_same_end_state(
    journal_factory: Any, mode: str, step: str, phase: str
) -> None:
    baseline_world = World()
    baseline = rig_for(baseline_world, MemoryJournal(baseline_world.clock))
    expected = end_state(baseline, revoke(baseline, mode))
    expected_writes = len(baseline.writes(0))

    world = World()
    rig = rig_for(world, journal_factory(world))
    with pytest.raises(Killed):
        revoke(rig, mode, books=rig.books(hook=killer(step, phase)))
    [run] = rig.journal.list_runs()
    assert run.status == "running"
    # The dead instance's claim goes stale; any instance then resumes the run.
    world.clock.advance(STEP_STALE_AFTER + timedelta(seconds=1))
    view = rig.books().resume(run.run_id, budget=LONG)
    assert end_state(rig, view) == expected
    assert len(rig.writes(0)) == expected_writes, "a resumed step wrote again"
    assert len([o for o in rig.notifier.outcomes if o.kind == "KeyRevoked"]) >= 1


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("phase", ["claimed", "acted"])
def test_a_restore_killed_at_any_step_resumes_to_the_same_end_state(
    journal_factory: Any, step: str, phase: str
) -> None:
    world = World()
    rig = rig_for(world, journal_factory(world))
    before = (rig.policies(), {v: (p.enabled, dict(p.tags or {})) for v, p in rig.versions().items()})
    revocation = revoke(rig)
    with pytest.raises(Killed):
        restore(rig, revocation.run.run_id, books=rig.books(hook=killer(step, phase)))
    world.clock.advance(STEP_STALE_AFTER + timedelta(seconds=1))
    report = resume_unfinished(rig.app.runbooks, budget=LONG)
    assert not report.errors
    [view] = report.views
    assert view.run.status == "succeeded", view.as_dict()
    assert (rig.policies(), {v: (p.enabled, dict(p.tags or {})) for v, p in rig.versions().items()}) == before


def test_a_run_with_a_live_claim_is_not_taken_over(rig: Rig) -> None:
    with pytest.raises(Killed):
        revoke(rig, books=rig.books(hook=killer("act", "claimed")))
    [run] = rig.journal.list_runs()
    seq = rig.world.last_seq
    view = rig.books().resume(run.run_id, budget=LONG)  # too soon: the claim is not stale yet
    assert view.run.status == "running" and view.waiting == "busy"
    assert rig.writes(seq) == []


# ---- concurrency -----------------------------------------------------------------------------


def test_a_second_revocation_of_the_same_key_waits_for_the_first(rig: Rig) -> None:
    second: list[Any] = []

    def hook(run_id: str, step: str, phase: str) -> None:
        if step == "act" and phase == "claimed" and not second:
            second.append(revoke(rig, key=rig.key.with_version(rig.estate.v1)))

    first = revoke(rig, books=rig.books(hook=hook))
    [queued] = second
    assert queued.waiting == "lease" and queued.steps == [] and queued.run.status == "running"
    assert first.run.status == "succeeded"
    report = resume_unfinished(rig.app.runbooks, budget=LONG)
    [done] = report.views
    assert done.run.run_id == queued.run.run_id and done.run.status == "succeeded"
    assert min(s.started for s in done.steps) >= max(s.finished for s in first.steps if s.finished)
    # The version was already disabled by the first run: the second found nothing to do.
    assert done.steps[1].result["alreadyDisabled"] == [rig.estate.v1]
    assert done.steps[2].result["done"] == []


def test_concurrent_revocations_of_one_key_never_interleave(rig: Rig) -> None:
    barrier = threading.Barrier(3)
    views: list[Any] = []
    errors: list[BaseException] = []

    def go() -> None:
        barrier.wait()
        try:
            views.append(revoke(rig, budget=timedelta(0)))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for _ in range(6):
        if all(r.finished for r in rig.journal.list_runs()):
            break
        resume_unfinished(rig.app.runbooks, budget=LONG)
    runs = rig.journal.list_runs()
    assert len(runs) == 3 and all(r.status == "succeeded" for r in runs), [r.status for r in runs]
    spans = sorted((min(s.started for s in st), max(s.finished for s in st if s.finished))
                   for st in (rig.journal.steps(r.run_id) for r in runs))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two runs on one key overlapped"
    versions = rig.versions()
    assert all(not p.enabled for p in versions.values())
    # exactly one run disabled each version; the others found it done
    owners = {(p.tags or {})[REVOKED_BY_TAG] for p in versions.values()}
    assert len(owners) == 1


# ---- two-person rule ---------------------------------------------------------------------------


def test_two_person_rule_waits_for_a_different_approver(journal_factory: Any) -> None:
    world = World()
    rig = rig_for(world, journal_factory(world), KEYSTEWARD_TWO_PERSON_RULE="true")
    seq = world.last_seq
    view = revoke(rig)
    assert view.run.status == "pending-approval" and view.waiting == "approval"
    assert rig.writes(seq) == []
    assert resume_unfinished(rig.app.runbooks).views == []  # waits for a person, not for the timer
    with pytest.raises(AuthError) as err:
        rig.books().approve(view.run.run_id, ALICE)
    assert err.value.status == 403
    approved = rig.books().approve(view.run.run_id, BOB, budget=LONG)
    assert approved.run.status == "succeeded"
    assert approved.run.params["approvedBy"]["objectId"] == BOB.object_id
    with pytest.raises(PermanentError):
        rig.books().approve(view.run.run_id, BOB)


def test_two_person_rule_emergency_and_single_version_skip_approval(journal_factory: Any) -> None:
    world = World()
    rig = rig_for(world, journal_factory(world), KEYSTEWARD_TWO_PERSON_RULE="true")
    one = revoke(rig, key=rig.key.with_version(rig.estate.v1))
    assert one.run.status == "succeeded"
    urgent = revoke(rig, emergency=True)
    assert urgent.run.status == "succeeded" and urgent.run.params["emergency"] is True


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_revoke_runs_restore_resume(rig: Rig) -> None:
    import io
    import json

    from shared.cli import main

    def cli(*argv: str) -> tuple[int, Any]:
        buf = io.StringIO()
        code = main([*argv, "--json"], app=rig.app, stdout=buf)
        return code, json.loads(buf.getvalue())

    code, plan = cli("revoke", "--key", rig.estate.key_uri, "--mode", "disable", "--reason", "r", "--ticket", "T-1",
                     "--dry-run")
    assert code == 0 and plan["summary"]["affected"] == 7 and rig.journal.list_runs() == []
    code, doc = cli("revoke", "--key", rig.estate.key_uri, "--mode", "disable", "--reason", "r", "--ticket", "T-1",
                    "--no-wait")
    assert code == 0 and doc["status"] == "running" and doc["caller"]["objectId"].startswith("cli:")
    run_id = doc["run"]
    code, doc = cli("resume", run_id)
    assert code == 0 and doc["status"] == "succeeded"
    code, doc = cli("runs", "--key", rig.estate.key_uri)
    assert [r["run"] for r in doc["runs"]] == [run_id]
    code, doc = cli("restore", "--run", run_id, "--reason", "ok", "--ticket", "T-1")
    assert code == 0 and doc["status"] == "succeeded"
    code, doc = cli("runs", "--run", doc["run"])
    assert doc["kind"] == "restore" and len(doc["steps"]) == 5
    code, doc = cli("resume")
    assert code == 0 and doc == {"runs": [], "errors": {}}
    code, doc = cli("revoke", "--key", "https://evil.vault.azure.net/keys/k", "--mode", "disable", "--reason", "r",
                    "--ticket", "t")
    assert code == 2 and doc["field"] == "key"


# ---- a large fleet ----------------------------------------------------------------------------


@pytest.mark.azurite
def test_a_key_bound_to_a_large_fleet_is_revoked_and_restored_through_table_storage(azurite: Azurite) -> None:
    """1,000 bindings make a blast radius of ~260,000 characters: more than one Table entity
    holds, so the resolve step's record is paged (journal.py) and read back whole by the
    steps that follow it and by the restore."""
    world = World()
    world.service_settings.usage_interval_s = 30.0  # services notice within one verify poll
    world.service_settings.cosmos_recovery_s = 60.0
    services = 1000
    doc = seeds.generate_fleet(services // 2, services // 2, 2, versions=3)
    seeds.apply_seed(world, doc)
    subs = [str(s["id"]) for s in doc["subscriptions"]]
    vault_url = "https://kv-fleet.vault.azure.net"
    table = TableServiceClient.from_connection_string(azurite.connection_string)
    journal = TableJournal(table, clock=world.clock, table_prefix=f"rb{uuid.uuid4().hex[:12]}")
    settings = load_settings({"KEYSTEWARD_SUBSCRIPTIONS": ",".join(subs), "KEYSTEWARD_VAULTS": vault_url,
                              "KEYSTEWARD_VERIFY_DEADLINE_MINUTES": "60"})
    app_notifier = RecordingNotifier()
    app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                credential=StaticTokenCredential(), notifier=app_notifier, queue=MemoryQueue(),
                polling_interval=0, journal=journal)
    key = parse_key_uri(f"{vault_url}/keys/cmk-fleet", allowed_vaults=None)
    books = app.runbooks

    view = books.revoke(RevokeRequest(key, "disable", "key exposed", "INC-9", emergency=True), ALICE, budget=LONG)

    assert view.run.status == "succeeded", view.run.result
    resolve = next(s for s in journal.steps(view.run.run_id) if s.name == "resolve")
    assert len(resolve.result["bindings"]) == services
    assert len(json.dumps(resolve.result)) > JSON_MAX_CHARS  # paged, not truncated
    assert len(next(s for s in view.steps if s.name == "verify").result["confirmed"]) == services
    [outcome] = [o for o in app_notifier.outcomes if o.kind == "KeyRevoked"]
    assert outcome.data["confirmedCount"] == services and len(outcome.data["confirmed"]) == SAMPLE_MAX
    assert len(json.dumps(outcome.data)) < 64 * 1024  # one Event Grid billing unit, far below its 1 MB limit
    versions = world.vaults["kv-fleet"].keys["cmk-fleet"].versions.values()
    assert len(versions) == 3 and not any(v.enabled for v in versions)

    back = books.restore(RestoreRequest(view.run.run_id, "all clear", "INC-9"), BOB, budget=LONG)

    assert back.run.status == "succeeded", back.run.result
    assert all(v.enabled for v in world.vaults["kv-fleet"].keys["cmk-fleet"].versions.values())
    table.close()


# ---- outcome events on an Event Grid topic --------------------------------------------------------

TOPIC = "https://outcomes.westeurope-1.eventgrid.azure.net/api/events"


def topic_app() -> tuple[World, Estate, Keysteward, KeyRef]:
    """An estate and an app whose outcomes go to the sandbox's custom topic (no recording notifier)."""
    world = World()
    estate = make_estate(world)
    settings = load_settings({"KEYSTEWARD_SUBSCRIPTIONS": ",".join(estate.subs), "KEYSTEWARD_VAULTS": estate.vault_url,
                              "KEYSTEWARD_VERIFY_DEADLINE_MINUTES": "60", "KEYSTEWARD_OUTCOME_TOPIC": TOPIC})
    app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                credential=StaticTokenCredential(), queue=MemoryQueue(), polling_interval=0,
                journal=MemoryJournal(world.clock))
    return world, estate, app, parse_key_uri(estate.key_uri, allowed_vaults=None)


def test_outcome_events_reach_the_topic_with_stable_ids() -> None:
    """The real notifier (KEYSTEWARD_OUTCOME_TOPIC) through the sandbox's custom topic: a
    resumed run that publishes again publishes under the same event id."""
    world, estate, app, key = topic_app()
    request = RevokeRequest(key, "disable", "key exposed", "INC-8", emergency=True)
    with pytest.raises(Killed):  # dies after publishing, before recording that it did
        Runbooks(app.runbooks.deps, hook=killer("publish", "acted")).revoke(request, ALICE, budget=LONG)
    world.clock.advance(STEP_STALE_AFTER + timedelta(seconds=1))
    [run] = app.runbooks.runs(key)
    view = app.runbooks.resume(run.run_id, budget=LONG)

    assert view.run.status == "succeeded"
    revoked = [e for e in world.eventgrid.published if e["eventType"] == "KeySteward.KeyRevoked"]
    assert [e["id"] for e in revoked] == [f"{run.run_id}.KeyRevoked"] * 2
    assert all(e["topic"].endswith("/providers/Microsoft.EventGrid/topics/outcomes") for e in revoked)
    data = revoked[-1]["data"]
    assert data["severity"] == "incident" and data["confirmedCount"] == len(data["confirmed"]) == 7
    assert data["changedCount"] == 1 and data["run"] == run.run_id


def test_a_topic_outage_leaves_the_run_to_publish_on_resume() -> None:
    world, estate, app, key = topic_app()
    world.faults.set_rules([FaultRule.parse({"host": r"outcomes\..*", "status": 503})])
    view = app.runbooks.revoke(RevokeRequest(key, "disable", "key exposed", "INC-8", emergency=True), ALICE,
                                    budget=LONG)
    assert view.run.status == "running" and view.waiting == "publish", view.as_dict()
    assert all(not p.enabled for p in estate.keys.list_properties_of_key_versions(estate.key_name))
    world.faults.clear()
    done = app.runbooks.resume(view.run.run_id, budget=LONG)
    assert done.run.status == "succeeded"
    assert [e["eventType"] for e in world.eventgrid.published if e["eventType"].startswith("KeySteward.Key")] == [
        "KeySteward.KeyRevoked"]


# ---- two remove-access revocations sharing an identity ----------------------------------------------


def test_a_restore_keeps_an_identity_that_another_revocation_still_holds(journal_factory: Any) -> None:
    """Access policies are per identity and vault, not per key. Keys A and B of one vault are
    both used through the identity uai-fleet (Kusto on A, Cosmos DB on B); uai-solo is used
    only on A. Revoking A, then B, by removing access, then restoring A must give uai-solo its
    entry back but not uai-fleet's: that would quietly undo B. Restoring B then does."""
    world = World()
    world.service_settings.usage_interval_s = 30.0
    world.service_settings.cosmos_recovery_s = 60.0
    doc = seeds.generate_fleet(2, 2, 1, versions=1)
    doc["identities"].append({**doc["identities"][0], "name": "uai-solo"})
    [vault] = doc["vaults"]
    vault["keys"].append({**vault["keys"][0], "name": "cmk-two"})
    vault["access_policies"].append({**vault["access_policies"][0], "identity": "uai-solo"})
    doc["kusto_clusters"][0]["identity"] = "uai-solo"
    for account in doc["cosmos_accounts"]:
        account["key"] = "kv-fleet/cmk-two"
    seeded = seeds.apply_seed(world, doc)
    shared, solo = (str(seeded.identities[n]["principalId"]) for n in ("uai-fleet", "uai-solo"))
    vault_url = "https://kv-fleet.vault.azure.net"
    settings = load_settings({"KEYSTEWARD_SUBSCRIPTIONS": doc["subscriptions"][0]["id"],
                              "KEYSTEWARD_VAULTS": vault_url, "KEYSTEWARD_VERIFY_DEADLINE_MINUTES": "30"})
    notifier = RecordingNotifier()
    app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                credential=StaticTokenCredential(), notifier=notifier, queue=MemoryQueue(), polling_interval=0,
                journal=journal_factory(world))
    books = app.runbooks
    key_a = parse_key_uri(f"{vault_url}/keys/cmk-fleet", allowed_vaults=None)
    key_b = parse_key_uri(f"{vault_url}/keys/cmk-two", allowed_vaults=None)

    def principals() -> set[str]:
        found = kv_mgmt(world, vault["subscription"]).vaults.get(vault["resource_group"], "kv-fleet")
        return {str(e.object_id) for e in found.properties.access_policies}

    a = books.revoke(RevokeRequest(key_a, "remove-access", "exposed", "INC-1", emergency=True), ALICE, budget=LONG)
    b = books.revoke(RevokeRequest(key_b, "remove-access", "exposed", "INC-2", emergency=True), ALICE, budget=LONG)
    assert a.run.status == b.run.status == "succeeded"
    assert not {shared, solo} & principals()

    back_a = books.restore(RestoreRequest(a.run.run_id, "A is safe", "INC-1"), BOB, budget=LONG)

    assert solo in principals() and shared not in principals()
    act = next(s for s in back_a.steps if s.name == "act").result
    assert act["held"] == {shared: b.run.run_id}
    assert back_a.run.status == "partially-succeeded" and back_a.run.result["held"] == {shared: b.run.run_id}
    assert back_a.run.result["unconfirmed"] == []  # services left revoked on purpose are not waited for
    [event] = [o for o in notifier.outcomes if o.kind == "KeyRestored"]
    assert event.data["heldCount"] == 1

    back_b = books.restore(RestoreRequest(b.run.run_id, "B is safe", "INC-2"), BOB, budget=LONG)

    assert back_b.run.status == "succeeded", back_b.run.result
    assert {shared, solo} <= principals()
