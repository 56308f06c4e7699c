"""Rotation propagation through the triggers' user functions, against the in-process sandbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

import functions._root as root
from functions.key_events import on_key_vault_event
from functions.schedules import reconcile_schedule
from functions.work_items import process_work_item
from sandbox.world import World
from shared.workqueue import MemoryQueue
from tests.app.estate import Estate, EventCapture, grid_event, make_estate, steward


def run_queue(queue: MemoryQueue, world: World) -> int:
    """Plays the Functions host's queue trigger: each message to the user function, delays in sandbox time."""
    n = 0
    while (popped := queue.pop()) is not None:
        item, delay = popped
        world.clock.advance(delay)
        msg = QueueMessage(id=f"m{n}", body=item.to_json().encode(), dequeue_count=1)
        process_work_item(msg)
        n += 1
        assert n < 200, "confirm chain did not end"
    return n


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def estate(world: World) -> Estate:
    return make_estate(world, held=("adxb0021",))


@pytest.fixture
def wired(world: World, estate: Estate):
    app, queue, notifier = steward(world, estate)
    root.install(app)
    capture = EventCapture(world)
    yield app, queue, notifier, capture
    root.install(None)


def rotate_and_deliver(estate: Estate, capture: EventCapture) -> tuple[str, dict]:
    new = estate.keys.rotate_key(estate.key_name)
    estate.world.tick(estate.world.clock.now())
    events = [e for e in capture.of_type("KeyNewVersionCreated") if e["data"]["Version"] == new.properties.version]
    assert len(events) == 1
    return str(new.properties.version), events[0]


def test_rotation_moves_every_pinned_binding_across_two_subscriptions(world, estate, wired):
    app, queue, notifier, capture = wired
    v2, raw = rotate_and_deliver(estate, capture)
    on_key_vault_event(grid_event(raw))
    # bindings span two subscriptions: one work item each, then confirm passes
    assert {i.subscription for i, _ in queue.items} == set(estate.subs)
    run_queue(queue, world)
    versions = estate.pinned_versions()
    assert versions.pop("adxb0021") == estate.v1  # held by tag
    assert set(versions.values()) == {v2}
    updated = {o.subject.rsplit("/", 1)[-1] for o in notifier.outcomes if o.kind == "BindingUpdated"}
    assert updated == set(versions)
    held = [o for o in notifier.outcomes if o.kind == "BindingHeld"]
    assert held and held[0].subject.endswith("adxb0021")


def test_duplicate_event_makes_no_write(world, estate, wired):
    app, queue, notifier, capture = wired
    _, raw = rotate_and_deliver(estate, capture)
    on_key_vault_event(grid_event(raw))
    run_queue(queue, world)
    seq = world.last_seq
    on_key_vault_event(grid_event(raw))
    run_queue(queue, world)
    assert estate.writes(seq) == []


def test_out_of_order_older_event_changes_nothing(world, estate, wired):
    app, queue, notifier, capture = wired
    _, first = rotate_and_deliver(estate, capture)
    v3, second = rotate_and_deliver(estate, capture)
    on_key_vault_event(grid_event(second))
    run_queue(queue, world)
    before = estate.pinned_versions()
    seq = world.last_seq
    on_key_vault_event(grid_event(first))  # the older event arrives late
    run_queue(queue, world)
    assert estate.writes(seq) == []
    assert estate.pinned_versions() == before
    assert before["adxa0010"] == v3


def test_timer_heals_a_binding_whose_event_was_lost(world, estate, wired):
    app, queue, notifier, capture = wired
    v2 = estate.keys.rotate_key(estate.key_name).properties.version  # event never handled
    reconcile_schedule(TimerRequest(past_due=False))
    run_queue(queue, world)
    versions = estate.pinned_versions()
    versions.pop("adxb0021")
    assert set(versions.values()) == {v2}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"enabled": False}, "disabled"),
        ({"not_before_days": 3}, "not valid before"),
    ],
)
def test_unacceptable_new_version_is_not_applied_and_is_reported(world, estate, wired, change, reason):
    app, queue, notifier, capture = wired
    new = estate.keys.rotate_key(estate.key_name)
    kwargs = {}
    if "enabled" in change:
        kwargs["enabled"] = False
    if "not_before_days" in change:
        kwargs["not_before"] = world.clock.now() + timedelta(days=change["not_before_days"])
    estate.keys.update_key_properties(estate.key_name, new.properties.version, **kwargs)
    seq = world.last_seq
    reconcile_schedule(TimerRequest(past_due=False))
    run_queue(queue, world)
    assert not [w for w in estate.writes(seq) if w.method == "PATCH"]
    assert set(estate.pinned_versions().values()) == {estate.v1}
    rejected = [o for o in notifier.outcomes if o.kind == "BindingRejected"]
    assert rejected and all(reason in o.data["reason"] for o in rejected)


def test_too_small_key_for_a_service_is_not_applied(world):
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=1, versionless=0)
    app, queue, notifier = steward(world, estate, KEYSTEWARD_KEY_SIZES="kusto=3072,4096")
    root.install(app)
    seq = world.last_seq
    try:
        estate.keys.rotate_key(estate.key_name)
        reconcile_schedule(TimerRequest(past_due=False))
        run_queue(queue, world)
    finally:
        root.install(None)
    rejected = {o.subject.rsplit("/", 1)[-1]: o.data["reason"] for o in notifier.outcomes if o.kind == "BindingRejected"}
    assert set(rejected) == {name for _, name in estate.clusters}
    assert all("RSA 2048 is not accepted by kusto" in r for r in rejected.values())
    assert set(estate.pinned_versions().values()) == {estate.v1}
    # Cosmos DB accounts are never written: they follow the key themselves.
    assert not [w for w in estate.writes(seq) if "Microsoft.DocumentDB" in w.path]

