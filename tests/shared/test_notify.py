"""The Event Grid notifier against the sandbox's custom topic: batching within Event Grid's
request limits, stable ids, an outcome too large for one event, errors by class."""

from __future__ import annotations

import pytest

from sandbox.faults import FaultRule
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World
from shared.errors import PermanentError, TransientError
from shared.notify import EventGridNotifier, Outcome

TOPIC = "https://outcomes.westeurope-1.eventgrid.azure.net/api/events"


def notifier(world: World) -> EventGridNotifier:
    return EventGridNotifier(TOPIC, StaticTokenCredential(), transport=SandboxTransport(world))


def posts(world: World) -> list[int]:
    return [e.status for e in world.requests if e.service == "topic"]


def test_many_small_outcomes_go_out_in_requests_of_at_most_100() -> None:
    world = World()
    notifier(world).publish([Outcome("BindingUpdated", f"/subscriptions/s/clusters/c{n}", {"n": n})
                             for n in range(250)])
    assert posts(world) == [200, 200, 200]
    published = world.eventgrid.published
    assert [e["data"]["n"] for e in published] == list(range(250))
    assert all(e["eventType"] == "KeySteward.BindingUpdated" and e["data"]["severity"] == "info" for e in published)
    assert len({e["id"] for e in published}) == 250  # no event_id given: a fresh id each


def test_large_outcomes_are_split_by_size_and_keep_their_ids() -> None:
    world = World()
    outcomes = [Outcome("KeyRevoked", "https://kv.vault.azure.net/keys/k", {"blob": "x" * 300_000}, "incident",
                        event_id=f"run-{n}.KeyRevoked") for n in range(5)]
    notifier(world).publish(outcomes)
    assert posts(world) == [200, 200]  # three of ~300 KB fit under 1 MB, then two
    assert [e["id"] for e in world.eventgrid.published] == [f"run-{n}.KeyRevoked" for n in range(5)]


def test_an_outcome_larger_than_an_event_is_published_as_a_note() -> None:
    world = World()
    notifier(world).publish([Outcome("KeyRevoked", "https://kv.vault.azure.net/keys/k", {"blob": "y" * 2_000_000},
                                     "incident", event_id="run.KeyRevoked")])
    [event] = world.eventgrid.published
    assert event["id"] == "run.KeyRevoked"
    assert event["data"]["truncated"] is True and event["data"]["severity"] == "incident"
    assert event["data"]["originalBytes"] > 2_000_000


@pytest.mark.parametrize(("status", "error"), [(503, TransientError), (429, TransientError), (403, PermanentError)])
def test_topic_errors_keep_their_class(status: int, error: type[Exception]) -> None:
    world = World()
    world.faults.set_rules([FaultRule.parse({"host": r"outcomes\..*", "status": status})])
    with pytest.raises(error):
        notifier(world).publish([Outcome("KeyRevoked", "https://kv.vault.azure.net/keys/k")])
    assert world.eventgrid.published == []
