"""The runbook HTTP triggers through their user functions, with real func.HttpRequest objects,
against the in-process sandbox: contract answers, authentication, authorisation, validation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from structlog.testing import capture_logs

import functions._root as root
from functions.runbooks import approve_run, get_run, list_runs, restore, revoke
from sandbox.transport import sandbox_session
from sandbox.world import World
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, encode_principal
from shared.runbooks import resume_unfinished
from tests.app.test_runbooks import Rig, rig_for
from tests.memory_journal import MemoryJournal

ALICE = encode_principal("11111111-aaaa-4000-8000-000000000001", name="Alice", roles=(ROLE_READ, ROLE_REVOKE))
BOB = encode_principal("22222222-bbbb-4000-8000-000000000002", name="Bob", roles=(ROLE_REVOKE, ROLE_RESTORE))
READER = encode_principal("33333333-cccc-4000-8000-000000000003", name="Rita", roles=(ROLE_READ,))
RESTORER = encode_principal("44444444-dddd-4000-8000-000000000004", name="Ray", roles=(ROLE_RESTORE,))
NOBODY = encode_principal("55555555-eeee-4000-8000-000000000005", name="Nina")


def http(method: str, route: str, *, body: Any = None, raw: bytes | None = None, principal: str | None = None,
         params: dict[str, str] | None = None, route_params: dict[str, str] | None = None) -> func.HttpRequest:
    headers = {"Content-Type": "application/json", "x-functions-key": "function-key"}
    if principal is not None:
        headers["X-MS-CLIENT-PRINCIPAL"] = principal
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return func.HttpRequest(method=method, url=f"https://keysteward.azurewebsites.net/api/{route}", headers=headers,
                            params=params or {}, route_params=route_params or {}, body=data)


def call(fn: Any, req: func.HttpRequest) -> tuple[int, dict[str, Any], func.HttpResponse]:
    resp = fn(req)
    assert resp.mimetype == "application/json"
    return resp.status_code, json.loads(resp.get_body()), resp


def installed(rig: Rig) -> Iterator[Rig]:
    root.install(rig.app)
    try:
        yield rig
    finally:
        root.install(None)


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    world = World()
    yield from installed(rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true"))


def body(rig: Rig, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": rig.estate.key_uri, "mode": "disable", "reason": "key exposed", "ticket": "INC-9",
                           "dryRun": False}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not ...}


def test_dry_run_answers_the_blast_radius_and_changes_nothing(rig: Rig) -> None:
    seq = rig.world.last_seq
    status, doc, _ = call(revoke, http("POST", "revoke", body=body(rig, dryRun=True), principal=READER))
    assert status == 200
    assert len(doc["bindings"]) == 7 and doc["summary"]["affected"] == 7
    assert sorted(doc["changes"]["disable"]) == sorted(rig.versions())
    assert {e.method for e in rig.world.requests_since(seq)} == {"GET"}
    assert rig.journal.list_runs() == []


def test_revoke_then_restore_over_http(rig: Rig) -> None:
    status, doc, _ = call(revoke, http("POST", "revoke", body=body(rig), principal=ALICE))
    assert status == 202
    run_id = doc["run"]
    assert doc["status"] == "running" and doc["waiting"] == "verify"  # revoked; verification continues
    assert all(not p.enabled for p in rig.versions().values())

    status, doc, _ = call(get_run, http("GET", f"runs/{run_id}", principal=READER, route_params={"id": run_id}))
    assert status == 200
    assert doc["kind"] == "revoke" and doc["reason"] == "key exposed" and doc["ticket"] == "INC-9"
    assert doc["caller"]["name"] == "Alice"
    assert [s["name"] for s in doc["steps"]] == ["resolve", "snapshot", "act", "verify"]
    assert all(s["started"] for s in doc["steps"])

    report = resume_unfinished(rig.app.runbooks, budget=timedelta(hours=1))
    assert not report.errors
    status, doc, _ = call(get_run, http("GET", f"runs/{run_id}", principal=READER, route_params={"id": run_id}))
    assert doc["status"] == "succeeded" and len(doc["steps"]) == 5

    status, doc, _ = call(list_runs, http("GET", "runs", principal=READER, params={"key": rig.estate.key_uri}))
    assert status == 200 and [r["run"] for r in doc["runs"]] == [run_id]

    restore_body = {"run": run_id, "reason": "all clear", "ticket": "INC-9"}
    status, doc, _ = call(restore, http("POST", "restore", body=restore_body, principal=RESTORER))
    assert status == 202 and doc["kind"] == "restore"
    restore_id = doc["run"]
    assert all(p.enabled for p in rig.versions().values())
    seq = rig.world.last_seq
    status, doc, _ = call(restore, http("POST", "restore", body=restore_body, principal=RESTORER))
    assert status == 200 and doc["duplicate"] is True and doc["run"] == restore_id
    assert [e for e in rig.world.requests_since(seq) if e.method != "GET"] == []


def test_two_person_rule_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    world = World()
    for rig in installed(rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true",
                                 KEYSTEWARD_TWO_PERSON_RULE="true")):
        status, doc, _ = call(revoke, http("POST", "revoke", body=body(rig), principal=ALICE))
        assert (status, doc["status"]) == (202, "pending-approval")
        run_id = doc["run"]
        assert all(p.enabled for p in rig.versions().values())
        status, doc, _ = call(approve_run, http("POST", f"runs/{run_id}/approve", principal=ALICE,
                                                route_params={"id": run_id}))
        assert status == 403
        status, doc, _ = call(approve_run, http("POST", f"runs/{run_id}/approve", principal=RESTORER,
                                                route_params={"id": run_id}))
        assert status == 403
        status, doc, _ = call(approve_run, http("POST", f"runs/{run_id}/approve", principal=BOB,
                                                route_params={"id": run_id}))
        assert status == 202 and doc["params"]["approvedBy"]["name"] == "Bob"
        assert all(not p.enabled for p in rig.versions().values())
        status, doc, _ = call(approve_run, http("POST", f"runs/{run_id}/approve", principal=BOB,
                                                route_params={"id": run_id}))
        assert status == 409
        status, doc, _ = call(revoke, http("POST", "revoke", body=body(rig, emergency=True), principal=ALICE))
        assert status == 202 and doc["params"]["emergency"] is True and doc["status"] != "pending-approval"


BAD_BODIES: list[tuple[str, bytes | dict[str, Any], str]] = [
    ("not-json", b"{key: 1", "body"),
    ("array", b"[]", "body"),
    ("empty", b"", "body"),
    ("not-utf8", b'{"key": "\xff"}', "body"),
    ("too-large", json.dumps({"reason": "x" * 20_000}).encode(), "body"),
    ("duplicate-field", b'{"mode": "disable", "mode": "remove-access"}', "mode"),
    ("nan", b'{"dryRun": NaN}', "body"),
    ("unknown-field", {"force": True}, "force"),
    ("missing-reason", {"reason": ...}, "reason"),
    ("missing-dry-run", {"dryRun": ...}, "dryRun"),
    ("empty-ticket", {"ticket": "   "}, "ticket"),
    ("reason-not-text", {"reason": 42}, "reason"),
    ("dry-run-as-text", {"dryRun": "false"}, "dryRun"),
    ("dry-run-as-number", {"dryRun": 0}, "dryRun"),
    ("emergency-as-text", {"emergency": "yes"}, "emergency"),
    ("bad-mode", {"mode": "delete"}, "mode"),
    ("key-outside-allowlist", {"key": "https://evil.vault.azure.net/keys/cmk"}, "key"),
    ("key-with-userinfo", {"key": "https://kv-estate.vault.azure.net@evil.example/keys/cmk"}, "key"),
    ("key-not-a-key", {"key": "https://kv-estate.vault.azure.net/secrets/cmk"}, "key"),
    ("key-not-text", {"key": ["https://kv-estate.vault.azure.net/keys/cmk"]}, "key"),
]


@pytest.mark.parametrize(("case", "payload", "field"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_malformed_bodies_get_400_and_nothing_is_sent(rig: Rig, case: str, payload: Any, field: str) -> None:
    seq = rig.world.last_seq
    req = (http("POST", "revoke", raw=payload, principal=ALICE) if isinstance(payload, bytes)
           else http("POST", "revoke", body=body(rig, **payload), principal=ALICE))
    status, doc, _ = call(revoke, req)
    assert status == 400, doc
    assert doc["error"]["code"] == "BadRequest" and doc["error"]["field"] == field
    assert "Traceback" not in doc["error"]["message"]
    assert rig.world.requests_since(seq) == []  # no token went anywhere
    assert rig.journal.list_runs() == []


@pytest.mark.parametrize(("principal", "dry_run", "status"), [
    (None, False, 401),
    ("bm90IGpzb24=", False, 401),  # "not json"
    (NOBODY, True, 403),
    (RESTORER, False, 403),
    (READER, False, 403),  # may look (dry run), may not revoke
], ids=["no-principal", "malformed", "no-role", "restore-role", "read-role"])
def test_callers_without_the_right_role_change_nothing(rig: Rig, principal: str | None, dry_run: bool,
                                                      status: int) -> None:
    seq = rig.world.last_seq
    got, doc, _ = call(revoke, http("POST", "revoke", body=body(rig, dryRun=dry_run), principal=principal))
    assert got == status
    assert doc["error"]["code"] == ("Unauthorized" if status == 401 else "Forbidden")
    assert rig.world.requests_since(seq) == []
    assert rig.journal.list_runs() == []


def test_restore_needs_the_restore_role(rig: Rig) -> None:
    status, doc, _ = call(restore, http("POST", "restore", body={"run": "x", "reason": "r", "ticket": "t"},
                                        principal=ALICE))
    assert status == 403


def test_a_forged_header_is_refused_where_easy_auth_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    world = World()
    for rig in installed(rig_for(world, MemoryJournal(world.clock))):  # trust_principal_header off
        seq = world.last_seq
        status, doc, _ = call(revoke, http("POST", "revoke", body=body(rig), principal=ALICE))
        assert status == 401 and doc["error"]["code"] == "Unauthorized"
        assert world.requests_since(seq) == []
        assert all(p.enabled for p in rig.versions().values())
        monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")  # App Service: the platform vouches for the header
        status, doc, _ = call(revoke, http("POST", "revoke", body=body(rig, dryRun=True), principal=ALICE))
        assert status == 200


def test_every_call_leaves_one_audit_line(rig: Rig) -> None:
    with capture_logs() as logs:
        status, doc, _ = call(revoke, http("POST", "revoke", body=body(rig), principal=ALICE))
        call(revoke, http("POST", "revoke", body=body(rig), principal=None))
    audits = [e for e in logs if e["event"] == "audit"]
    assert len(audits) == 2
    ok, refused = audits
    assert ok["operation"] == "revoke" and ok["caller_oid"].startswith("11111111") and ok["caller_name"] == "Alice"
    assert ok["key"] == rig.estate.key_uri and ok["run"] == doc["run"] and ok["status"] == 202
    assert refused["status"] == 401 and refused["caller_oid"] is None and refused["outcome"] == "refused"


def test_unknown_run_is_404_and_odd_queries_are_400(rig: Rig) -> None:
    status, doc, _ = call(get_run, http("GET", "runs/nope", principal=READER, route_params={"id": "nope"}))
    assert status == 404 and doc["error"]["code"] == "NotFound"
    status, doc, _ = call(list_runs, http("GET", "runs", principal=READER, params={"key": "https://x.example/keys/k"}))
    assert (status, doc["error"]["field"]) == (400, "key")
    status, doc, _ = call(list_runs, http("GET", "runs", principal=READER, params={"limit": "0"}))
    assert (status, doc["error"]["field"]) == (400, "limit")
    status, doc, _ = call(list_runs, http("GET", "runs", principal=READER, params={"sort": "x"}))
    assert (status, doc["error"]["field"]) == (400, "sort")


def test_restore_of_an_unfinished_revocation_is_409(rig: Rig) -> None:
    _, doc, _ = call(revoke, http("POST", "revoke", body=body(rig), principal=ALICE))
    status, err, _ = call(restore, http("POST", "restore", body={"run": doc["run"], "reason": "r", "ticket": "t"},
                                        principal=RESTORER))
    assert status == 409 and err["error"]["code"] == "RevocationNotFinished"


def test_a_transient_azure_failure_is_503_with_retry_after(rig: Rig) -> None:
    r = sandbox_session(rig.world).post("https://sandbox.local/sandbox/faults", json={"rules": [
        {"method": "GET", "path": "Microsoft.Kusto/clusters$", "status": 503}]})
    assert r.status_code in (200, 201, 204)
    status, doc, resp = call(revoke, http("POST", "revoke", body=body(rig, dryRun=True), principal=READER))
    assert status == 503 and doc["error"]["code"] == "ServiceUnavailable"
    assert int(resp.headers["Retry-After"]) >= 1
