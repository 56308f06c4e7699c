"""Usage evidence in the runbooks: unknown identities in the blast radius, audit proofs in verification."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import functions._root as root
from functions.runbooks import revoke as revoke_route
from sandbox import audit
from sandbox.transport import admin_url, sandbox_session
from sandbox.world import World
from tests.app.test_runbooks import ALICE, Rig, restore, revoke, rig_for
from tests.app.test_runbooks_http import READER, body, call, http
from tests.memory_journal import MemoryJournal

WORKSPACE = audit.DEFAULT_WORKSPACE
STRANGER = "0badc0de-1111-4222-8333-444455556666"
NEIGHBOUR = "0badc0de-2222-4333-8444-000000000002"


def add_consumer(world: World, principal: str, key_uri: str, every_s: float) -> None:
    resp = sandbox_session(world).post(f"{admin_url()}/sandbox/consumers",
                                       json={"principal_id": principal, "key": key_uri, "every_s": every_s})
    assert resp.status_code == 201, resp.text


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    world = World()
    made = rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_AUDIT_WORKSPACE=WORKSPACE,
                   KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true")
    other = str(made.estate.keys.create_rsa_key("other-key", size=2048).properties.version)
    add_consumer(world, STRANGER, f"{made.estate.key_uri}/{made.estate.v1}", 1800)
    add_consumer(world, NEIGHBOUR, f"{made.estate.vault_url}/keys/other-key/{other}", 3600)
    world.clock.advance(timedelta(hours=2))
    root.install(made.app)
    try:
        yield made
    finally:
        root.install(None)


def names(entries: list[dict[str, Any]]) -> set[str]:
    return {e["objectId"] for e in entries}


def test_dry_run_lists_unknown_identities_of_the_key_with_counts_and_last_call(rig: Rig) -> None:
    status, doc, _ = call(revoke_route, http("POST", "revoke", body=body(rig, dryRun=True), principal=READER))
    assert status == 200
    assert doc["usageEvidence"]["state"] == "available"
    [stranger] = doc["unknownIdentities"]  # the services' identities are in the inventory: not listed
    assert stranger["objectId"] == STRANGER and stranger["succeeded"] == 5 and stranger["lastCall"]
    assert stranger["versions"] == [rig.estate.v1]
    assert len(doc["bindings"]) == 7  # beside the inventory's bindings, not instead of them


def test_remove_access_dry_run_lists_unknown_identities_of_the_whole_vault(rig: Rig) -> None:
    plan = rig.app.runbooks.plan(rig.key, "remove-access")
    assert names(plan["unknownIdentities"]) == {STRANGER, NEIGHBOUR}
    neighbour = next(e for e in plan["unknownIdentities"] if e["objectId"] == NEIGHBOUR)
    assert neighbour["keys"] == ["other-key"] and neighbour["calls"] == 3


def test_the_run_records_the_unknown_identities_and_the_proof_each_binding_got(rig: Rig) -> None:
    view = revoke(rig)
    steps = {s.name: s.result for s in view.steps}
    assert names(steps["resolve"]["summary"]["unknownIdentities"]) == {STRANGER}
    proofs = steps["verify"]["proofs"]
    assert len(proofs) == 7
    # Kusto and Cosmos report their state and are seen failing in the audit log: both proofs.
    assert set(proofs.values()) == {"both"}, proofs
    back = restore(rig, view.run.run_id)
    steps = {s.name: s.result for s in back.steps}
    assert set(steps["verify"]["proofs"].values()) <= {"both", "resource-state"}
    assert "both" in steps["verify"]["proofs"].values()


def test_without_a_workspace_proofs_are_resource_state_and_the_dry_run_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    world = World()
    plain = rig_for(world, MemoryJournal(world.clock))
    add_consumer(world, STRANGER, f"{plain.estate.key_uri}/{plain.estate.v1}", 1800)
    plan = plain.app.runbooks.plan(plain.key, "disable")
    assert plan["usageEvidence"]["state"] == "not-configured" and plan["unknownIdentities"] == []
    view = revoke(plain)
    proofs = {s.name: s.result for s in view.steps}["verify"]["proofs"]
    assert set(proofs.values()) == {"resource-state"}
    assert ALICE.object_id not in str(proofs)


def test_cli_dry_run_prints_the_unknown_identities(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    from shared.cli import main as cli_main

    assert cli_main(["revoke", "--key", rig.estate.key_uri, "--mode", "disable", "--reason", "r",
                     "--ticket", "t", "--dry-run"], app=rig.app) == 0
    out = capsys.readouterr().out
    assert re.search(rf"{STRANGER}\s+5\s+0\s", out), out  # the unknown identities table: 5 ok, 0 failed
