"""The invariant checks fire on the violations they exist for (synthetic observations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.journal import Run
from shared.model import Binding, KeyRef, KeyVersion, ServiceType
from tests.soak import invariants as inv

T0 = datetime(2026, 1, 5, tzinfo=UTC)
KEY = KeyRef("https://kv.vault.azure.net", "cmk")


def _v(version: str, created: datetime, *, enabled: bool = True, tags: dict[str, str] | None = None) -> KeyVersion:
    return KeyVersion(KEY.with_version(version), enabled, created, None, None, "RSA", 2048, tags or {})


def _b(pinned: str) -> Binding:
    return Binding("/subscriptions/s/rg/adx", ServiceType.KUSTO, "s", "rg", "adx", "westeurope", KEY, pinned, pinned,
                   True)


def _snap(now: datetime, versions: list[KeyVersion], bindings: list[Binding]) -> inv.Snapshot:
    return inv.Snapshot(now, {KEY.key_id: versions}, bindings)


def test_i1_flags_a_disable_inside_the_retention_period_and_of_a_version_in_use():
    before = _snap(T0, [_v("v1", T0), _v("v2", T0 + timedelta(hours=1))], [_b("v2")])
    early = _snap(T0 + timedelta(hours=2), [_v("v1", T0, enabled=False), _v("v2", T0 + timedelta(hours=1))], [_b("v2")])
    assert inv.check_i1(inv.disables_between(before, early), early, retention=timedelta(hours=24), revocation_runs=[])
    used = _snap(T0 + timedelta(days=3), [_v("v1", T0, enabled=False), _v("v2", T0 + timedelta(hours=1))], [_b("v1")])
    assert inv.check_i1(inv.disables_between(before, used), used, retention=timedelta(hours=24), revocation_runs=[])
    late = _snap(T0 + timedelta(days=3), [_v("v1", T0, enabled=False), _v("v2", T0 + timedelta(hours=1))], [_b("v2")])
    assert inv.check_i1(inv.disables_between(before, late), late, retention=timedelta(hours=24), revocation_runs=[]) == []


def test_i1_accepts_a_revocation_and_refuses_a_tag_naming_no_revocation():
    before = _snap(T0, [_v("v1", T0)], [_b("v1")])
    after = _snap(T0, [_v("v1", T0, enabled=False, tags={inv.REVOKED_BY_TAG: "r1"})], [_b("v1")])
    found = inv.disables_between(before, after)
    assert inv.check_i1(found, after, retention=timedelta(hours=24), revocation_runs=["r1"]) == []
    assert inv.check_i1(found, after, retention=timedelta(hours=24), revocation_runs=["r2"])


def test_i2_to_i6_flag_their_violations():
    snap = _snap(T0, [_v("v1", T0), _v("v2", T0)], [_b("v1")])
    assert inv.check_i2(snap, vaults=[KEY.vault_url])
    run = Run(run_id="r1", kind="revoke", key=KEY.uri, status="running", caller_oid="o", caller_name="n",
              reason="r", ticket="t", params={}, result={}, created=T0, updated=T0, etag="e")
    assert inv.check_i3([run])
    write = {"method": "PATCH", "host": "management.azure.com", "path": "/x", "status": 200, "service": "arm"}
    assert inv.check_i4([write])
    assert inv.check_i5([{**write, "method": "DELETE"}])
    assert inv.check_i6([{**write, "host": "evil.example"}], vaults=[KEY.vault_url])
    assert inv.check_i6([write], vaults=[KEY.vault_url]) == []


def test_i7_flags_an_enabled_version_and_a_binding_write_under_a_revocation():
    held = [inv.InForce("r1", KEY.key_id, "disable")]
    dark = _snap(T0, [_v("v1", T0, enabled=False), _v("v2", T0, enabled=False)], [_b("v1")])
    lit = _snap(T0, [_v("v1", T0, enabled=False), _v("v2", T0)], [_b("v1")])
    assert inv.check_i7(held, before=dark, after=dark, requests=[], versions_settled=True) == []
    assert inv.check_i7(held, before=dark, after=lit, requests=[], versions_settled=True)
    assert inv.check_i7(held, before=dark, after=lit, requests=[], versions_settled=False) == []  # the hold's turn comes
    write = {"method": "PATCH", "host": "management.azure.com", "path": "/subscriptions/s/rg/adx", "status": 200,
             "service": "arm"}
    assert inv.check_i7(held, before=dark, after=dark, requests=[write], versions_settled=False)
    assert inv.check_i7([], before=dark, after=lit, requests=[write], versions_settled=True) == []
    waiting = Run(run_id="j1", kind="revoke", key=KEY.uri, status="pending-approval", caller_oid="o", caller_name="n",
                  reason="r", ticket="t", params={}, result={}, created=T0, updated=T0, etag="e")
    assert inv.check_i3([waiting]) == []  # a junk run waits for a person, not for the engine
