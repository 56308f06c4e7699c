"""Behaviour the soak found, pinned as deterministic scenarios (see docs/soak.md, "Findings")."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.functions.timer import TimerRequest

import functions._root as root
from functions.schedules import reconcile_schedule
from shared.runbooks import RevokeRequest
from tests.soak import invariants as inv
from tests.soak.harness import jwk_of, key_pool, snapshot
from tests.soak.scenario import ONCALL, Soak


def _revoked_then_rotated() -> Soak:
    """Seed 0's opening, reduced: the whole first key revoked, then a new version of it."""
    soak = Soak(0)
    soak.setup()
    key = soak.estate.keys[0]
    # emergency: the seed may turn the two-person rule on; the revocation must act here
    soak.app.runbooks.revoke(RevokeRequest(key=key, mode="disable", reason="soak", ticket="SOAK-F1",
                                                emergency=True), ONCALL, budget=timedelta(hours=1))
    soak.estate.key_client(key.vault_url).import_key(key.name, jwk_of(key_pool()[1]))
    return soak


@pytest.mark.soak
def test_no_pass_sends_a_key_change_to_a_revoked_cosmos_account() -> None:
    soak = _revoked_then_rotated()
    try:
        for _ in range(3):
            soak.world.clock.advance(timedelta(minutes=15))
            mark = len(soak.app_log)
            reconcile_schedule(TimerRequest(past_due=False))
            soak.run_queue()
        refused = [r for r in soak.app_log[mark:] if inv.is_write(r) and r["status"] == 400]
        assert refused == [], f"{len(refused)} refused PATCH(es) on the last pass, e.g. {refused[:1]}"
    finally:
        root.install(None)


def test_a_new_version_of_a_revoked_key_does_not_bring_revoked_services_back() -> None:
    """A whole-key revocation stays in force until a restore: reconcile moves nothing to the new
    version meanwhile (only a restore brings the data back)."""
    soak = _revoked_then_rotated()
    try:
        mark = len(soak.app_log)
        reconcile_schedule(TimerRequest(past_due=False))
        soak.run_queue()
        end = snapshot(soak.world, soak.estate)
        key = soak.estate.keys[0]
        current = end.versions[key.key_id][-1].version
        bindings = [b for b in end.bindings_of(key.key_id) if b.updatable and b.pinned_version is not None]
        assert bindings
        assert all(b.pinned_version != current for b in bindings)
        assert not [r for r in soak.app_log[mark:] if inv.is_write(r) and "/keys/" not in r["path"]]
    finally:
        root.install(None)
