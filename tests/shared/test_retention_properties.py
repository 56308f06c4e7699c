"""Property: the retention rule never allows a disable that breaks conditions 1-4."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model import Binding, KeyRef, KeyVersion, ServiceType
from shared.retention import verdict

VAULT = "https://kv.vault.azure.net"
NOW = datetime(2027, 1, 1, tzinfo=UTC)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[KeyVersion], list[Binding], timedelta, str]:
    n = draw(st.integers(min_value=1, max_value=8))
    ages_h = sorted(draw(st.lists(st.integers(min_value=0, max_value=24 * 400), min_size=n, max_size=n)), reverse=True)
    versions = [
        KeyVersion(ref=KeyRef(VAULT, "k", f"{i:032x}"), enabled=draw(st.booleans()),
                   created=NOW - timedelta(hours=h), not_before=None, expires_on=None)
        for i, h in enumerate(ages_h)
    ]
    names = [v.version for v in versions] + [f"{99:032x}"]  # a version the key does not have
    bindings = []
    for j in range(draw(st.integers(min_value=0, max_value=6))):
        service = draw(st.sampled_from(list(ServiceType)))
        updatable = service in (ServiceType.KUSTO, ServiceType.COSMOS)
        pinned = draw(st.one_of(st.none(), st.sampled_from(names)))
        in_use = pinned if pinned else draw(st.one_of(st.none(), st.sampled_from(names)))
        bindings.append(Binding(
            resource_id=f"/subscriptions/s/resourceGroups/rg/providers/x/y/r{j}", service=service,
            subscription="s", resource_group="rg", name=f"r{j}", location="westeurope",
            key=KeyRef(VAULT, "k"), pinned_version=pinned, in_use_version=in_use, updatable=updatable,
        ))
    retention = timedelta(hours=draw(st.integers(min_value=24, max_value=24 * 10)))
    target = draw(st.sampled_from(names))
    return versions, bindings, retention, target


@settings(max_examples=3000, deadline=None)
@given(histories())
def test_rule_never_allows_a_disable_that_breaks_conditions_1_to_4(case):
    versions, bindings, retention, target = case
    result = verdict(target, versions=versions, bindings=bindings, now=NOW, retention=retention)
    if not result.allowed:
        assert result.blockers and all(b.message for b in result.blockers)  # never just "no"
        return
    order = [v.version for v in versions]
    # 1. not the current version (and a version of this key at all)
    assert target in order and target != order[-1]
    # 2. retention since the successor's creation
    successor = versions[order.index(target) + 1]
    assert successor.created is not None and NOW - successor.created >= retention
    for b in bindings:
        if b.updatable and b.pinned_version is not None:
            assert b.pinned_version != target  # 3. no binding pinned to it
        elif b.updatable:
            assert b.in_use_version is not None and b.in_use_version != target  # 3. versionless moved off
        else:
            assert b.effective_version is not None and b.effective_version != target  # 4. read-only


@settings(max_examples=500, deadline=None)
@given(histories())
def test_blockers_name_the_bindings_and_time_left(case):
    versions, bindings, retention, target = case
    result = verdict(target, versions=versions, bindings=bindings, now=NOW, retention=retention)
    for b in result.blockers:
        if b.kind in ("pinned", "versionless", "read-only"):
            assert b.resource_id is not None and b.resource_id.rsplit("/", 1)[-1] in b.message
        if b.kind == "retention":
            assert b.time_left is not None and timedelta(0) < b.time_left <= retention
