"""Near expiry and expiry: managed keys rotate, unmanaged ones only notify."""

from __future__ import annotations

from datetime import timedelta

import pytest

import functions._root as root
from functions.key_events import on_key_vault_event
from functions.schedules import rotation_schedule
from sandbox.world import World
from tests.app.estate import EventCapture, grid_event, make_estate, steward
from tests.app.test_propagation import TimerRequest, run_queue


@pytest.fixture
def setup():
    world = World()
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=1, versionless=0)
    app, queue, notifier = steward(world, estate)
    root.install(app)
    capture = EventCapture(world)
    yield world, estate, queue, notifier, capture
    root.install(None)


def expire_in(estate, days: int, tags: dict[str, str] | None = None) -> str:
    kc = estate.keys
    current = kc.get_key(estate.key_name)
    kc.update_key_properties(estate.key_name, current.properties.version,
                             expires_on=estate.world.clock.now() + timedelta(days=days), tags=tags)
    return str(current.properties.version)


def near_expiry_event(world, estate, capture):
    world.clock.advance(timedelta(days=15))
    events = capture.of_type("KeyNearExpiry")
    assert events, "the sandbox emits KeyNearExpiry 30 days before exp"
    return events[-1]


def test_near_expiry_rotates_a_managed_key_and_propagates(setup):
    world, estate, queue, notifier, capture = setup
    old = expire_in(estate, 40, tags={"keysteward-rotate": "P90D"})
    raw = near_expiry_event(world, estate, capture)
    on_key_vault_event(grid_event(raw))
    current = estate.keys.get_key(estate.key_name)
    assert current.properties.version != old
    assert current.properties.tags.get("keysteward-rotate") == "P90D"  # policy carried to the new version
    assert [o.kind for o in notifier.outcomes] == ["KeyRotated"]
    # the new version's own event drives propagation
    new_events = [e for e in capture.of_type("KeyNewVersionCreated") if e["data"]["Version"] == current.properties.version]
    on_key_vault_event(grid_event(new_events[0]))
    run_queue(queue, world)
    assert set(estate.pinned_versions().values()) == {current.properties.version}
    # a duplicate NearExpiry does not rotate again
    on_key_vault_event(grid_event(raw))
    assert estate.keys.get_key(estate.key_name).properties.version == current.properties.version


def test_near_expiry_only_notifies_for_an_unmanaged_key(setup):
    world, estate, queue, notifier, capture = setup
    old = expire_in(estate, 40)
    raw = near_expiry_event(world, estate, capture)
    on_key_vault_event(grid_event(raw))
    assert estate.keys.get_key(estate.key_name).properties.version == old
    assert [o.kind for o in notifier.outcomes] == ["KeyNearExpiry"]
    assert notifier.outcomes[0].severity == "warning"


def test_expired_is_an_incident_and_rotates_when_managed(setup):
    world, estate, queue, notifier, capture = setup
    old = expire_in(estate, 2, tags={"keysteward-rotate": "true"})
    world.clock.advance(timedelta(days=3))
    raw = capture.of_type("KeyExpired")[-1]
    on_key_vault_event(grid_event(raw))
    kinds = [o.kind for o in notifier.outcomes]
    assert kinds[0] == "KeyExpired" and notifier.outcomes[0].severity == "incident"
    assert "KeyRotated" in kinds
    assert estate.keys.get_key(estate.key_name).properties.version != old


def test_scheduled_rotation_rotates_only_old_managed_keys(setup):
    world, estate, queue, notifier, capture = setup
    kc = estate.keys
    v1 = expire_in(estate, 365, tags={"keysteward-rotate": "P30D"})
    other = kc.create_rsa_key("unmanaged", size=2048).properties.version
    rotation_schedule(TimerRequest(past_due=False))
    assert kc.get_key(estate.key_name).properties.version == v1  # younger than 30 days
    world.clock.advance(timedelta(days=31))
    rotation_schedule(TimerRequest(past_due=False))
    assert kc.get_key(estate.key_name).properties.version != v1
    assert kc.get_key("unmanaged").properties.version == other
