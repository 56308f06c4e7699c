"""The role matrix, route by route, through the local development host over real HTTP: each
app role alone may do what README and docs/runbooks.md say, and nothing else; a revoked key's
refusals answer 409 naming the run."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import requests

import functions._root as root
from sandbox.host import DevHost, FunctionSpec, HostConfig, HostKeys, HttpTriggerSpec, load_functions
from sandbox.world import World
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, encode_principal
from shared.runbooks import RevokeRequest
from tests.app.test_runbooks import ALICE, Rig, rig_for
from tests.functionapp import fresh_function_app
from tests.memory_journal import MemoryJournal

FUNCTION_KEY = "function-key-for-roles"
KEYS = HostKeys(function=FUNCTION_KEY, master="master-key-for-roles", eventgrid="eventgrid-key-for-roles")
TRIGGER_SETTINGS = {
    "KEYSTEWARD_ROTATION_SCHEDULE": "0 0 3 * * *",
    "KEYSTEWARD_RECONCILE_SCHEDULE": "0 */15 * * * *",
    "KEYSTEWARD_WORK_QUEUE": "keysteward-work",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}
ONLY = {
    ROLE_READ: encode_principal("a0000000-0000-4000-8000-000000000001", name="Reader", roles=(ROLE_READ,)),
    ROLE_REVOKE: encode_principal("b0000000-0000-4000-8000-000000000002", name="Revoker", roles=(ROLE_REVOKE,)),
    ROLE_RESTORE: encode_principal("c0000000-0000-4000-8000-000000000003", name="Restorer", roles=(ROLE_RESTORE,)),
}


@functools.cache
def http_functions() -> list[FunctionSpec]:
    functions = load_functions(fresh_function_app(), environ=TRIGGER_SETTINGS)
    return [f for f in functions if isinstance(f.trigger, HttpTriggerSpec)]


@dataclass
class Served:
    rig: Rig
    url: str

    def call(self, method: str, route: str, principal: str, body: Any = None,
             params: dict[str, str] | None = None) -> tuple[int, Any]:
        resp = requests.request(method, f"{self.url}/{route}", json=body, params=params, timeout=30,
                                headers={"x-functions-key": FUNCTION_KEY, "X-MS-CLIENT-PRINCIPAL": principal})
        return resp.status_code, resp.json()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    world = World()
    rig = rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true",
                  KEYSTEWARD_TWO_PERSON_RULE="true")
    root.install(rig.app)
    host = DevHost(http_functions(), keys=KEYS, config=HostConfig(), port=0)
    try:
        with host:
            yield Served(rig, f"{host.url}/api")
    finally:
        root.install(None)


def revoke_body(rig: Rig, *, dry_run: bool) -> dict[str, Any]:
    return {"key": rig.estate.key_uri, "mode": "disable", "reason": "key exposed", "ticket": "INC-11",
            "dryRun": dry_run, "emergency": True}


# role -> route -> the answer that role alone gets (403: refused for the role).
MATRIX = {
    ROLE_READ: {"dry-run": 200, "revoke": 403, "approve": 403, "retire": 403, "restore": 403, "get-run": 200,
                "list-runs": 200},
    ROLE_REVOKE: {"dry-run": 200, "revoke": 202, "approve": 202, "retire": 409, "restore": 403, "get-run": 200,
                  "list-runs": 200},
    ROLE_RESTORE: {"dry-run": 403, "revoke": 403, "approve": 403, "retire": 403, "restore": 202, "get-run": 200,
                   "list-runs": 200},
}


@pytest.mark.parametrize("role", sorted(MATRIX))
def test_each_role_alone_gets_exactly_its_routes(served: Served, role: str) -> None:
    rig, who = served.rig, ONLY[role]
    books = rig.app.runbooks
    # A finished revocation (to read and restore) and one waiting for approval (to approve),
    # on keys of their own so that neither holds the other's key.
    done = books.revoke(RevokeRequest(rig.key, "disable", "seed", "INC", emergency=True), ALICE,
                        budget=timedelta(hours=2)).run.run_id
    version = next(iter(rig.versions()))
    answers: dict[str, int] = {}
    answers["dry-run"], _ = served.call("POST", "revoke", who, revoke_body(rig, dry_run=True))
    answers["get-run"], _ = served.call("GET", f"runs/{done}", who)
    answers["list-runs"], _ = served.call("GET", "runs", who, params={"key": rig.estate.key_uri})
    answers["retire"], retire_doc = served.call("POST", "retire", who, {
        "key": f"{rig.estate.key_uri}/{version}", "reason": "old", "ticket": "CHG-1"})
    answers["restore"], _ = served.call("POST", "restore", who, {"run": done, "reason": "clear", "ticket": "INC"})
    # After the restore (when allowed): a fresh revocation, and one that waits for a second person.
    answers["revoke"], _ = served.call("POST", "revoke", who, revoke_body(rig, dry_run=False))
    pending = books.revoke(RevokeRequest(rig.key, "disable", "needs two", "INC"), ALICE).run.run_id
    answers["approve"], _ = served.call("POST", f"runs/{pending}/approve", who, {})
    if role == ROLE_REVOKE:
        # retire while the key is revoked: 409 naming the revocation run, not 403
        assert done in retire_doc["error"]["message"]
    assert answers == MATRIX[role]


def test_oids_are_canonical_guids_and_roles_exact(served: Served) -> None:
    rig = served.rig
    for bad in ("not-a-guid", "{a0000000-0000-4000-8000-000000000001}", " a0000000-0000-4000-8000-000000000001"):
        status, doc = served.call("GET", "runs", encode_principal(bad, roles=(ROLE_READ,)))
        assert status == 401, (bad, doc)
    status, _ = served.call("GET", "runs", encode_principal("a0000000-0000-4000-8000-000000000001",
                                                            roles=(" KeySteward.Read ",)))
    assert status == 403
    assert rig.journal.list_runs() == []
