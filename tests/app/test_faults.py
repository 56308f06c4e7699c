"""Propagation converges through throttling, server errors, dropped connections and failed LROs."""

from __future__ import annotations

import pytest

import functions._root as root
from functions.schedules import reconcile_schedule
from sandbox.transport import sandbox_session
from sandbox.world import World
from tests.app.estate import make_estate, steward
from tests.app.test_propagation import TimerRequest, run_queue

ADMIN = "https://sandbox.local"


def admin(world: World, path: str, body: dict) -> None:
    r = sandbox_session(world).post(ADMIN + path, json=body)
    assert r.status_code in (200, 201, 204), r.text


@pytest.mark.parametrize(
    "rule",
    [
        {"method": "PATCH", "path": "Microsoft.Kusto/clusters", "status": 429, "retry_after": 2, "times": 8},
        {"method": "PATCH", "path": "Microsoft.Kusto/clusters", "status": 429, "times": 8},
        # Cosmos DB accounts are never written (they follow the key): their reads are throttled.
        {"method": "GET", "path": "/providers/Microsoft.DocumentDB/databaseAccounts$", "status": 429,
         "retry_after": 1, "times": 3},
        {"method": "PATCH", "path": "/clusters/", "status": 503, "times": 5},
        {"method": "PATCH", "path": "/clusters/", "status": 500, "times": 4},
        {"method": "PATCH", "path": "/clusters/", "drop": True, "times": 3},
        {"method": "GET", "path": "/providers/Microsoft.Kusto/clusters$", "status": 429, "retry_after": 1, "times": 3},
    ],
    ids=["429-retry-after", "429-no-retry-after", "cosmos-list-429", "503", "500", "dropped", "list-429"],
)
def test_converges_through_faults(rule):
    world = World()
    estate = make_estate(world, versionless=0)
    app, queue, notifier = steward(world, estate)
    root.install(app)
    try:
        v2 = estate.keys.rotate_key(estate.key_name).properties.version
        admin(world, "/sandbox/faults", {"rules": [rule]})
        for _ in range(3):  # the timer runs again while anything is left over
            try:
                reconcile_schedule(TimerRequest(past_due=False))
            except Exception:
                pass
            run_queue(queue, world)
        assert set(estate.pinned_versions().values()) == {v2}
        # the rule really fired
        faults = sandbox_session(world).get(ADMIN + "/sandbox/faults").json()
        rules = faults.get("rules", faults) if isinstance(faults, dict) else faults
        assert rules[0]["hits"] >= 1
    finally:
        root.install(None)


def test_failed_lro_is_retried_on_a_later_pass():
    world = World()
    estate = make_estate(world, clusters_per_sub=2, accounts_per_sub=0, versionless=0)
    app, queue, notifier = steward(world, estate)
    root.install(app)
    try:
        v2 = estate.keys.rotate_key(estate.key_name).properties.version
        admin(world, "/sandbox/lro", {"duration_s": 30.0, "fail_rate": 1.0})
        reconcile_schedule(TimerRequest(past_due=False))
        # first confirm pass (after 30 s of sandbox time) finds the operations failed
        admin(world, "/sandbox/lro", {"duration_s": 30.0, "fail_rate": 0.0})
        patches_before = [e for e in world.requests if e.method == "PATCH"]
        run_queue(queue, world)
        patches = [e for e in world.requests if e.method == "PATCH"]
        assert set(estate.pinned_versions().values()) == {v2}
        # each cluster was written once more after its operation failed, not more
        assert len(patches) - len(patches_before) == len(estate.clusters)
    finally:
        root.install(None)


def test_one_write_per_pinned_binding_when_nothing_fails():
    world = World()
    estate = make_estate(world, versionless=0)
    app, queue, notifier = steward(world, estate)
    root.install(app)
    try:
        admin(world, "/sandbox/lro", {"duration_s": 60.0, "fail_rate": 0.0})
        estate.keys.rotate_key(estate.key_name)
        seq = world.last_seq
        reconcile_schedule(TimerRequest(past_due=False))
        run_queue(queue, world)
        reconcile_schedule(TimerRequest(past_due=False))  # an extra pass writes nothing
        run_queue(queue, world)
        patches = [e for e in world.requests_since(seq) if e.method == "PATCH"]
        # Cosmos DB accounts follow the key themselves: never written.
        assert len(patches) == len(estate.clusters)
    finally:
        root.install(None)
