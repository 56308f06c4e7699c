"""Usage evidence from Key Vault audit logs, through LogsQueryClient against the sandbox's workspace."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

import functions._root as root
from functions.keys_http import retire_version
from sandbox import audit
from sandbox.transport import SandboxTransport, admin_url, sandbox_session
from sandbox.world import World
from shared.auth import encode_principal
from shared.cli import main as cli_main
from shared.model import KeyRef
from shared.retention import RetentionRefused
from shared.usage import USE_OPERATIONS, UsageState
from tests.app.estate import Estate, make_estate, steward

WORKSPACE = audit.DEFAULT_WORKSPACE
STRANGER = "0badc0de-1111-4222-8333-444455556666"
REVOKE = encode_principal("00000000-0000-0000-0000-0000000000bb", name="oncall", roles=("KeySteward.Revoke",))


@pytest.fixture
def world() -> World:
    return World()


def add_consumer(world: World, principal: str, key_uri: str, every_s: float) -> dict[str, Any]:
    resp = sandbox_session(world).post(f"{admin_url()}/sandbox/consumers",
                                       json={"principal_id": principal, "key": key_uri, "every_s": every_s})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def set_usage_interval(world: World, seconds: float) -> None:
    resp = sandbox_session(world).post(f"{admin_url()}/sandbox/services", json={"usage_interval_s": seconds})
    assert resp.status_code == 200, resp.text


def fault(world: World, **rule: Any) -> None:
    resp = sandbox_session(world).post(f"{admin_url()}/sandbox/faults", json={"rules": [rule]})
    assert resp.status_code == 200, resp.text


def unused_old_version(world: World) -> tuple[Estate, str]:
    """A key whose v1 nothing in the inventory uses, rotated 25 h ago (the 24-hour rule is met)."""
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    v2 = str(estate.keys.rotate_key(estate.key_name).properties.version)
    world.clock.advance(timedelta(hours=25))
    return estate, v2


def v1_ref(estate: Estate) -> KeyRef:
    return KeyRef(estate.vault_url, estate.key_name, estate.v1)


# ---- the retention guard ---------------------------------------------------------------------------------
def test_version_used_only_by_an_unknown_identity_cannot_be_retired_and_the_blocker_names_it(world):
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    # Without any call, the version may go (the evidence is there and shows no use).
    assert app.retention.key_status(estate_key(estate))["usageEvidence"]["state"] == "available"
    add_consumer(world, STRANGER, f"{estate.key_uri}/{estate.v1}", 3600)
    world.clock.advance(timedelta(hours=2))
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(v1_ref(estate), reason="cleanup", ticket="T-1", caller="alice")
    [blocker] = refused.value.verdict.blockers
    assert blocker.kind == "audit-in-use"
    assert STRANGER in blocker.message and "does not know" in blocker.message
    assert "3 successful calls" in blocker.message  # at add time, +1 h, +2 h
    assert next(p for p in estate.keys.list_properties_of_key_versions(estate.key_name)
                if p.version == estate.v1).enabled


def estate_key(estate: Estate) -> KeyRef:
    return KeyRef(estate.vault_url, estate.key_name)


def test_same_estate_without_a_workspace_retires_the_version_the_stranger_uses(world):
    """The control: keysteward's inventory alone cannot see the stranger (why the evidence matters)."""
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate)
    add_consumer(world, STRANGER, f"{estate.key_uri}/{estate.v1}", 3600)
    status = app.retention.key_status(estate_key(estate))
    assert status["usageEvidence"]["state"] == "not-configured"
    assert "KEYSTEWARD_AUDIT_WORKSPACE is not set" in status["usageEvidence"]["reason"]
    assert app.retention.disable_version(v1_ref(estate), reason="r", ticket="t", caller="c")["disabled"]


def test_cli_disable_exits_1_and_names_the_unknown_caller(world, capsys):
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    add_consumer(world, STRANGER, f"{estate.key_uri}/{estate.v1}", 600)
    code = cli_main(["disable", "--key", f"{estate.key_uri}/{estate.v1}", "--reason", "r", "--ticket", "t"], app=app)
    assert code == 1
    assert STRANGER in capsys.readouterr().out


def test_http_retire_answers_409_naming_the_unknown_caller(world):
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE, KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true")
    add_consumer(world, STRANGER, f"{estate.key_uri}/{estate.v1}", 600)
    root.install(app)
    try:
        body = json.dumps({"key": f"{estate.key_uri}/{estate.v1}", "reason": "cleanup", "ticket": "CHG-1"}).encode()
        resp = retire_version(func.HttpRequest(method="POST", url="/api/retire", body=body,
                                               headers={"X-MS-CLIENT-PRINCIPAL": REVOKE}))
    finally:
        root.install(None)
    assert resp.status_code == 409
    text = resp.get_body().decode()
    assert STRANGER in text
    assert "Traceback" not in text


def test_failed_calls_are_not_use_and_calls_older_than_the_lookback_do_not_count(world):
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE, KEYSTEWARD_AUDIT_LOOKBACK_DAYS="1")
    add_consumer(world, STRANGER, f"{estate.key_uri}/{estate.v1}", 3600)
    world.clock.advance(timedelta(hours=1))
    assert sandbox_session(world).delete(f"{admin_url()}/sandbox/consumers").json() == {"removed": 1}
    with pytest.raises(RetentionRefused):
        app.retention.disable_version(v1_ref(estate), reason="r", ticket="t", caller="c")
    world.clock.advance(timedelta(days=1, hours=1))  # the stranger's calls are now older than the lookback
    assert app.retention.disable_version(v1_ref(estate), reason="r", ticket="t", caller="c")["disabled"]
    # Its calls now fail (the version is disabled): a failure is not use.
    add_consumer(world, STRANGER, f"{estate.key_uri}/{estate.v1}", 600)
    world.clock.advance(timedelta(hours=1))
    usage = app.usage.key_usage(v1_ref(estate))
    [row] = usage.for_version(estate.v1)
    assert row.succeeded == 0 and row.failed == 7


def test_known_binding_usage_is_named_as_known(world):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, queue, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    world.clock.advance(timedelta(minutes=10))  # the clusters unwrap with v1
    estate.keys.rotate_key(estate.key_name)
    app.reconcile_all()
    world.clock.advance(timedelta(hours=25))  # the clusters moved to v2 a day ago
    status = app.retention.key_status(estate_key(estate))
    v1 = next(v for v in status["versions"] if v["version"] == estate.v1)
    assert {u["resourceId"].rsplit("/", 1)[-1] for u in v1["knownUsers"]} == {n for _, n in estate.clusters}
    assert v1["unknownCallers"] == []
    assert v1["lastCall"] is not None
    kinds = {b["kind"] for b in v1["retention"]["blockers"]}
    assert kinds == {"audit-in-use"}, v1["retention"]
    assert all("kusto adx" in b["message"] for b in v1["retention"]["blockers"])


def test_status_shows_known_users_unknown_callers_and_last_call_per_version(world, capsys):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    add_consumer(world, STRANGER, f"{estate.key_uri}/{estate.v1}", 900)
    world.clock.advance(timedelta(hours=1))
    status = app.retention.key_status(estate_key(estate))
    [v1] = status["versions"]
    assert [u["objectId"] for u in v1["unknownCallers"]] == [STRANGER]
    assert v1["unknownCallers"][0]["succeeded"] == 5  # 0, 15, 30, 45, 60 minutes
    assert len(v1["knownUsers"]) == 2
    assert v1["lastCall"].startswith(world.clock.now().strftime("%Y-%m-%dT%H"))
    assert cli_main(["status", "--key", estate.key_uri], app=app) == 0
    out = capsys.readouterr().out
    assert f"UNKNOWN caller {STRANGER}" in out and "usage evidence: AZKVAuditLogs" in out


# ---- evidence that cannot be had: fail closed ---------------------------------------------------------------
def test_missing_workspace_makes_the_guard_refuse_with_its_reason(world):
    estate, _ = unused_old_version(world)
    other = "11111111-2222-4333-8444-555566667777"
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=other)
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(v1_ref(estate), reason="r", ticket="t", caller="c")
    [blocker] = refused.value.verdict.blockers
    assert blocker.kind == "audit-unavailable"
    assert f"workspace {other} was not found" in blocker.message
    status = app.retention.key_status(estate_key(estate))
    assert status["usageEvidence"]["state"] == "unavailable"


def test_throttled_query_makes_the_guard_refuse_and_the_sweep_keep_the_version(world):
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    fault(world, host="api.loganalytics.io", status=429, retry_after=1)
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(v1_ref(estate), reason="r", ticket="t", caller="c")
    assert "throttled" in str(refused.value)
    estate.keys.update_key_properties(estate.key_name, tags={"keysteward-retire": "true"})
    result = app.retention.sweep()
    assert result.retired == []
    assert "usage evidence is unavailable" in result.kept[f"{estate.key_uri}/{estate.v1}"][0]
    world.faults.clear()
    assert app.retention.sweep().retired == [f"{estate.key_uri}/{estate.v1}"]


def test_partial_answer_is_not_evidence_of_no_use(world):
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    assert sandbox_session(world).post(f"{admin_url()}/sandbox/audit", json={"partial": True}).status_code == 200
    usage = app.usage.key_usage(estate_key(estate))
    assert usage.state is UsageState.UNAVAILABLE and "in part" in usage.reason
    with pytest.raises(RetentionRefused):
        app.retention.disable_version(v1_ref(estate), reason="r", ticket="t", caller="c")


def test_unreachable_workspace_is_unavailable_not_unused(world):
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    fault(world, host="api.loganalytics.io", drop=True)
    usage = app.usage.key_usage(estate_key(estate))
    assert usage.state is UsageState.UNAVAILABLE and "unreachable" in usage.reason
    assert usage.callers == ()


def test_drift_repair_ignores_unavailable_evidence(world):
    """An outage of the workspace must not re-enable versions someone disabled on purpose."""
    estate, _ = unused_old_version(world)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    app.retention.disable_version(v1_ref(estate), reason="r", ticket="t", caller="c")
    fault(world, host="api.loganalytics.io", status=503)
    result = app.retention.sweep()
    assert result.repaired == [] and result.drift_alerts == []


# ---- the query equals a brute-force count over the sandbox's records ------------------------------------------
def brute_force(world: World, estate: Estate, since: datetime, until: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    prefix = f"https://{estate.vault_name}.vault.azure.net/keys/{estate.key_name}/".lower()
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"calls": 0, "ok": 0, "failed": 0,
                                                                      "times": [], "ops": set()})
    for rec in audit.log_for(world).records:
        if rec.operation not in USE_OPERATIONS or not rec.key_id.lower().startswith(prefix):
            continue
        if not since.timestamp() <= rec.at <= until.timestamp():
            continue
        row = out[(rec.version, rec.object_id)]
        row["calls"] += 1
        row["ok" if rec.ok else "failed"] += 1
        row["times"].append(rec.at)
        row["ops"].add(rec.operation)
    return dict(out)


@pytest.mark.parametrize("table", ["AZKVAuditLogs", "AzureDiagnostics"])
def test_query_answer_equals_a_brute_force_count_on_a_seeded_estate_with_thousands_of_calls(world, table):
    estate = make_estate(world, clusters_per_sub=2, accounts_per_sub=1, versionless=1)
    set_usage_interval(world, 60)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE, KEYSTEWARD_AUDIT_TOP="1000",
                        KEYSTEWARD_AUDIT_TABLE=table)
    v2 = str(estate.keys.rotate_key(estate.key_name).properties.version)
    app.reconcile_all()
    strangers = [f"0badc0de-0000-4000-8000-{i:012d}" for i in range(6)]
    for i, who in enumerate(strangers):
        add_consumer(world, who, f"{estate.key_uri}/{estate.v1 if i % 2 else v2}", 30 + 17 * i)
    # Identities calling through the SDK with their own tokens (the caller comes from the token).
    for i in range(3):
        cred = audit.IdentityCredential(f"5dcdc0de-0000-4000-8000-{i:012d}")
        crypto = CryptographyClient(f"{estate.key_uri}/{estate.v1}", cred, transport=SandboxTransport(world))
        for _ in range(5):
            wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
            crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    for step in range(36):  # six hours in ten-minute steps
        world.clock.advance(timedelta(minutes=10))
        if step == 18:  # half way: v1 is disabled, its callers fail from now on
            estate.keys.update_key_properties(estate.key_name, estate.v1, enabled=False)
    until = world.clock.now()
    since = until - timedelta(days=7)
    expected = brute_force(world, estate, since, until)
    assert sum(r["calls"] for r in expected.values()) > 2000
    assert sum(r["failed"] for r in expected.values()) > 100
    usage = app.usage.key_usage(estate_key(estate))
    assert usage.state is UsageState.AVAILABLE and not usage.truncated
    got = {(c.version, c.object_id): c for c in usage.callers}
    assert set(got) == set(expected)
    for k, want in expected.items():
        c = got[k]
        assert (c.calls, c.succeeded, c.failed) == (want["calls"], want["ok"], want["failed"]), k
        assert c.first_seen == datetime.fromtimestamp(min(want["times"]), tz=UTC)
        assert c.last_seen == datetime.fromtimestamp(max(want["times"]), tz=UTC)
        assert set(c.operations) == want["ops"]
    # Bounded: a small top-N keeps the newest successes and says it cut the answer.
    small, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE, KEYSTEWARD_AUDIT_TOP="3",
                          KEYSTEWARD_AUDIT_TABLE=table)
    cut = small.usage.key_usage(estate_key(estate))
    assert cut.truncated and len(cut.callers) == 3
    newest = sorted(usage.callers, key=lambda c: (c.last_success or datetime.min.replace(tzinfo=UTC)), reverse=True)
    assert [c.last_success for c in cut.callers] == [c.last_success for c in newest[:3]]
    # A cut answer never hides a version's use: that version gets its own query.
    status = small.retention.key_status(estate_key(estate))
    v1 = next(v for v in status["versions"] if v["version"] == estate.v1)
    assert any(b["kind"] == "audit-in-use" for b in v1["retention"]["blockers"])


# ---- verification: the confirm pass says which proof each binding got ----------------------------------------
@pytest.mark.parametrize(("usage_interval_s", "proof"), [(10, "both"), (86_400, "resource-state")])
def test_propagation_is_confirmed_by_audit_evidence_when_the_service_is_seen_unwrapping(world, usage_interval_s,
                                                                                        proof):
    from shared.app import drain

    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, queue, notifier = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    world.clock.advance(timedelta(minutes=10))
    set_usage_interval(world, usage_interval_s)
    v2 = str(estate.keys.rotate_key(estate.key_name).properties.version)
    app.reconcile_all()
    drain(app, queue, wait=world.clock.advance)
    updated = {o.subject.rsplit("/", 1)[-1]: o.data for o in notifier.outcomes if o.kind == "BindingUpdated"}
    assert set(updated) == {n for _, n in estate.clusters}  # Cosmos DB accounts follow the key themselves
    assert {d["proof"] for d in updated.values()} == {proof}
    assert all(d["toVersion"] == v2 for d in updated.values())


def test_without_a_workspace_every_confirmation_is_resource_state(world):
    from shared.app import drain

    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, queue, notifier = steward(world, estate)
    set_usage_interval(world, 10)
    estate.keys.rotate_key(estate.key_name)
    app.reconcile_all()
    drain(app, queue, wait=world.clock.advance)
    proofs = {o.data["proof"] for o in notifier.outcomes if o.kind == "BindingUpdated"}
    assert proofs == {"resource-state"}


# ---- blast radius and runbook verification evidence -------------------------------------------------------
def test_blast_radius_evidence_lists_unknown_identities_of_the_key_or_the_vault(world):
    from shared.usage import blast_radius_evidence

    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    other = str(estate.keys.create_rsa_key("other-key", size=2048).properties.version)
    add_consumer(world, STRANGER, f"{estate.key_uri}/{estate.v1}", 1800)
    neighbour = "0badc0de-2222-4333-8444-000000000002"
    add_consumer(world, neighbour, f"{estate.vault_url}/keys/other-key/{other}", 3600)
    world.clock.advance(timedelta(hours=2))
    known = [b.principal_id or "" for b in app.all_bindings()]
    on_key = blast_radius_evidence(app.usage, estate_key(estate), remove_access=False, known_principals=known)
    assert on_key["usageEvidence"]["state"] == "available"
    [stranger] = on_key["unknownIdentities"]  # the clusters are known: their identities are not listed
    assert stranger["objectId"] == STRANGER and stranger["succeeded"] == 5 and stranger["versions"] == [estate.v1]
    assert stranger["lastCall"] is not None
    on_vault = blast_radius_evidence(app.usage, estate_key(estate), remove_access=True, known_principals=known)
    assert {e["objectId"] for e in on_vault["unknownIdentities"]} == {STRANGER, neighbour}
    assert next(e for e in on_vault["unknownIdentities"] if e["objectId"] == neighbour)["keys"] == ["other-key"]
    none = blast_radius_evidence(steward(world, estate)[0].usage, estate_key(estate), remove_access=False,
                                 known_principals=known)
    assert none == {"usageEvidence": {"state": "not-configured", "reason": none["usageEvidence"]["reason"],
                                      "table": None, "since": None, "until": None, "truncated": False},
                    "unknownIdentities": []}


def test_runbook_proofs_see_services_fail_after_a_revocation_and_succeed_after_a_restore(world):
    from shared.usage import proof_kind, runbook_proofs

    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE)
    set_usage_interval(world, 60)
    principals = {b.resource_id: b.principal_id for b in app.all_bindings()}
    assert len(principals) == 2
    world.clock.advance(timedelta(minutes=5))
    acted = world.clock.now()
    estate.keys.update_key_properties(estate.key_name, estate.v1, enabled=False)  # what a revocation does
    before = runbook_proofs(app.usage, estate_key(estate), principals, revoked=True, since=acted)
    assert {p["auditEvidence"] for p in before.values()} == {False}  # no call since: no proof yet
    world.clock.advance(timedelta(minutes=2))
    after = runbook_proofs(app.usage, estate_key(estate), principals, revoked=True, since=acted)
    assert {p["auditEvidence"] for p in after.values()} == {True}
    restored = world.clock.now()
    estate.keys.update_key_properties(estate.key_name, estate.v1, enabled=True)
    world.clock.advance(timedelta(minutes=2))
    back = runbook_proofs(app.usage, estate_key(estate), principals, revoked=False, since=restored)
    assert {p["auditEvidence"] for p in back.values()} == {True}
    assert proof_kind(True, True) == "both" and proof_kind(False, True) == "audit-evidence"
    assert proof_kind(True, False) == "resource-state" and proof_kind(False, False) == "none"
