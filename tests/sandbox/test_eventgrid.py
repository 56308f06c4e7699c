"""Event Grid delivery: handshakes, the array format, retries on Event Grid's schedule in
sandbox time, dead-lettering, duplicates, shuffling, filters and lock discipline.

Deliveries are parsed with the official models (``EventGridEvent.from_dict``,
``CloudEvent.from_dict``), so a shape the SDK would refuse fails here.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from sandbox.eventgrid import RETRY_SCHEDULE_S, retry_delay_s
from sandbox.transport import sandbox_session
from sandbox.world import World
from tests.sandbox.conftest import EVENTGRID_LOCAL_HOST
from tests.sandbox.webhook import Webhook, serve_http

VAULT_ID = (
    "/subscriptions/00000000-0000-0000-0000-00000000a001/resourceGroups/rg-sec"
    "/providers/Microsoft.KeyVault/vaults/kv-one"
)
ENDPOINT = f"{EVENTGRID_LOCAL_HOST}/runtime/webhooks/eventgrid?functionName=key_events"


def key_event(
    world: World,
    *,
    version: str = "",
    event_type: str = "Microsoft.KeyVault.KeyNewVersionCreated",
    topic: str = VAULT_ID,
) -> dict[str, Any]:
    """An event shaped as the Key Vault part publishes it."""
    version = version or uuid.uuid4().hex
    return {
        "id": str(uuid.uuid4()),
        "topic": topic,
        "subject": "cmk-adx",
        "eventType": event_type,
        "eventTime": world.clock.now().isoformat(),
        "data": {
            "Id": f"https://kv-one.vault.azure.net/keys/cmk-adx/{version}",
            "VaultName": "kv-one",
            "ObjectType": "Key",
            "ObjectName": "cmk-adx",
            "Version": version,
            "NBF": None,
            "EXP": 1790000000,
        },
        "dataVersion": "1",
        "metadataVersion": "1",
    }


def advance(world: World, seconds: float) -> None:
    world.clock.advance(timedelta(seconds=seconds))


def attempts_of(world: World, event_id: str) -> list[dict[str, Any]]:
    return [d for d in world.eventgrid.deliveries if d["event_id"] == event_id]


# ---- handshakes and format -----------------------------------------------------------------------
def test_event_grid_schema_validates_then_delivers_an_array(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    sub = world.eventgrid.subscribe(endpoint=ENDPOINT, name="keysteward")
    event = key_event(world)
    world.eventgrid.publish([event])
    world.eventgrid.pump(world.clock.now())

    validation, delivery = hook.received
    assert validation.method == "POST"
    assert validation.headers["aeg-event-type"] == "SubscriptionValidation"
    assert isinstance(validation.body, list)
    assert len(validation.body) == 1
    parsed_validation = EventGridEvent.from_dict(validation.body[0])
    assert parsed_validation.event_type == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert parsed_validation.data["validationCode"] == sub.validation_code
    assert parsed_validation.data["validationUrl"].endswith(f"code={sub.validation_code}")

    assert delivery.path == "/runtime/webhooks/eventgrid?functionName=key_events"
    assert delivery.headers["aeg-event-type"] == "Notification"
    assert delivery.headers["aeg-subscription-name"] == "KEYSTEWARD"
    assert delivery.headers["aeg-delivery-count"] == "0"
    assert delivery.headers["aeg-data-version"] == "1"
    assert delivery.headers["aeg-metadata-version"] == "1"
    assert isinstance(delivery.body, list)
    parsed = EventGridEvent.from_dict(delivery.body[0])
    assert parsed.id == event["id"]
    assert parsed.event_type == "Microsoft.KeyVault.KeyNewVersionCreated"
    assert parsed.topic == VAULT_ID
    assert parsed.data["Version"] == event["data"]["Version"]
    assert world.eventgrid.describe(sub.id)["validation"]["state"] == "Validated"  # type: ignore[index]
    assert [d["outcome"] for d in world.eventgrid.deliveries] == ["validated", "delivered"]


def test_cloud_events_use_the_options_handshake_and_cloud_event_shape(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    world.eventgrid.subscribe(endpoint=ENDPOINT, schema="CloudEventSchemaV1_0")
    event = key_event(world)
    world.eventgrid.publish([event])
    world.eventgrid.pump(world.clock.now())

    handshake, delivery = hook.received
    assert handshake.method == "OPTIONS"
    assert handshake.headers["webhook-request-origin"] == "eventgrid.azure.net"
    assert delivery.headers["aeg-event-type"] == "Notification"
    assert delivery.headers["content-type"].startswith("application/cloudevents-batch+json")
    parsed = CloudEvent.from_dict(delivery.body[0])
    assert parsed.id == event["id"]
    assert parsed.source == VAULT_ID
    assert parsed.type == "Microsoft.KeyVault.KeyNewVersionCreated"
    assert parsed.subject == "cmk-adx"
    assert parsed.specversion == "1.0"
    assert parsed.data["ObjectName"] == "cmk-adx"
    assert isinstance(parsed.time, datetime)


def test_cloud_events_handshake_without_allowed_origin_keeps_events_queued(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.allowed_origin = None
    sub = world.eventgrid.subscribe(endpoint=ENDPOINT, schema="CloudEventSchemaV1_0")
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.pump(world.clock.now())
    assert hook.notifications == []
    assert world.eventgrid.pending_count() == 1
    assert world.eventgrid.describe(sub.id)["provisioningState"] == "Creating"  # type: ignore[index]

    hook.allowed_origin = "*"
    advance(world, 9)
    assert len(hook.handshakes) == 1, "validation is retried on the schedule, not before"
    advance(world, 1)
    assert len(hook.handshakes) == 2
    assert len(hook.notifications) == 1


def test_failed_validation_queues_events_until_validated(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.validate = False
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world), key_event(world)])
    world.eventgrid.pump(world.clock.now())
    advance(world, 10)
    advance(world, 30)
    assert hook.notifications == []
    assert len(hook.handshakes) == 3
    hook.validate = True
    advance(world, 60)
    assert len(hook.events) == 2


def test_manual_validation_url_validates(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.validate = False
    sub = world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.pump(world.clock.now())
    hook.validate = True  # the endpoint now accepts events, but the handshake is done by GET below
    session = sandbox_session(world)
    url = world.eventgrid.validation_url(sub)
    assert session.get(url.replace(sub.validation_code, "wrong")).status_code == 400
    assert session.get(url).status_code == 200
    assert len(hook.notifications) == 1


def test_events_published_before_subscribing_are_not_delivered(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world = eventgrid_world
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.pump(world.clock.now())
    assert eventgrid_webhook.received == []


def test_event_type_and_topic_filters(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(
        endpoint=ENDPOINT, event_types=["Microsoft.KeyVault.KeyNearExpiry"], topic=VAULT_ID
    )
    world.eventgrid.publish(
        [
            key_event(world),
            key_event(world, event_type="Microsoft.KeyVault.KeyNearExpiry"),
            key_event(
                world, event_type="Microsoft.KeyVault.KeyNearExpiry", topic=VAULT_ID.replace("kv-one", "kv-2")
            ),
        ]
    )
    world.eventgrid.pump(world.clock.now())
    assert [e["eventType"] for e in eventgrid_webhook.events] == ["Microsoft.KeyVault.KeyNearExpiry"]
    assert eventgrid_webhook.events[0]["topic"] == VAULT_ID


# ---- retries and dead-lettering ----------------------------------------------------------------------
def test_retries_follow_event_grids_schedule_in_sandbox_time(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.statuses = [503] * 10
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    event = key_event(world)
    start = world.clock.now()
    world.eventgrid.publish([event])
    world.eventgrid.pump(start)
    expected_offsets = [0]
    # The listed waits, then 12 h: the 11th attempt lands at 22.8 h, inside the 24 h TTL.
    for wait in [*RETRY_SCHEDULE_S, 43200]:
        advance(world, wait - 1)
        assert len(attempts_of(world, event["id"])) == len(expected_offsets), "no attempt before it is due"
        advance(world, 1)
        expected_offsets.append(expected_offsets[-1] + wait)
    log = attempts_of(world, event["id"])
    assert [d["attempt"] for d in log] == list(range(1, 12))
    assert [d["status_code"] for d in log] == [503] * 10 + [200]
    offsets = [(datetime.fromisoformat(d["time"]) - start).total_seconds() for d in log]
    assert offsets == expected_offsets
    assert [r.headers["aeg-delivery-count"] for r in hook.notifications] == [str(i) for i in range(11)]
    assert log[-1]["outcome"] == "delivered"
    assert world.eventgrid.dead_letters == []


def test_retry_delay_table() -> None:
    waits = [10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200, 43200]
    assert [retry_delay_s(n) for n in range(1, 12)] == waits


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_refusals_are_dead_lettered_without_retry(
    eventgrid_world: World, eventgrid_webhook: Webhook, status: int
) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.statuses = [status]
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    event = key_event(world)
    world.eventgrid.publish([event])
    world.eventgrid.pump(world.clock.now())
    for _ in range(6):
        advance(world, 3600 * 4)
    assert len(hook.notifications) == 1
    (dead,) = world.eventgrid.dead_letters
    assert dead["event"]["id"] == event["id"]
    assert dead["lastDeliveryOutcome"] == status
    assert world.eventgrid.pending_count() == 0


@pytest.mark.parametrize("status", [404, 408, 429, 500, 503])
def test_other_failures_are_retried(eventgrid_world: World, eventgrid_webhook: Webhook, status: int) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.statuses = [status]
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.pump(world.clock.now())
    advance(world, 10)
    assert [d["status_code"] for d in world.eventgrid.deliveries[1:]] == [status, 200]


def test_2xx_outside_200_204_is_a_failure(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.statuses = [206, 204]
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.pump(world.clock.now())
    advance(world, 10)
    assert [d["outcome"] for d in world.eventgrid.deliveries[1:]] == ["retry-scheduled", "delivered"]


def test_time_to_live_dead_letters_after_24_hours(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.statuses = [503] * 100
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    event = key_event(world)
    world.eventgrid.publish([event])
    world.eventgrid.pump(world.clock.now())
    for wait in [*RETRY_SCHEDULE_S, 43200]:
        advance(world, wait)
    advance(world, 2 * 86400)
    log = attempts_of(world, event["id"])
    # Attempts at 0 s ... 10.8 h (the listed waits) and 22.8 h; one more 12 h later would pass the TTL.
    assert len(log) == 11
    assert log[-1]["outcome"] == "dead-lettered"
    assert world.eventgrid.dead_letters[0]["deadLetterReason"] == "TimeToLiveExceeded"


def test_max_delivery_attempts(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.statuses = [500] * 10
    world.eventgrid.subscribe(endpoint=ENDPOINT, max_delivery_attempts=3)
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.pump(world.clock.now())
    for wait in (10, 30, 60, 300):
        advance(world, wait)
    assert len(hook.notifications) == 3
    assert world.eventgrid.dead_letters[0]["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"


def test_unreachable_endpoint_is_retried(eventgrid_world: World) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(endpoint="http://127.0.0.1:9/nowhere")  # discard port: nothing listens
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.pump(world.clock.now())
    (attempt,) = world.eventgrid.deliveries
    assert attempt["status_code"] == 0
    assert attempt["outcome"] == "validation-failed"
    assert world.eventgrid.pending_count() == 1


# ---- duplicates, shuffle, batches --------------------------------------------------------------------
def test_duplicates_redeliver_each_event_later(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    world.eventgrid.subscribe(endpoint=ENDPOINT, duplicate_rate=1.0)
    events = [key_event(world) for _ in range(3)]
    world.eventgrid.publish(events)
    world.eventgrid.pump(world.clock.now())
    assert len(hook.events) == 3
    advance(world, 30)
    ids = [e["id"] for e in hook.events]
    assert sorted(ids) == sorted([e["id"] for e in events] * 2)
    assert sum(1 for d in world.eventgrid.deliveries if d["duplicate"]) == 3
    advance(world, 3600)
    assert len(hook.events) == 6, "a duplicate is not duplicated again"


def test_no_duplicates_by_default(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world) for _ in range(5)])
    world.eventgrid.pump(world.clock.now())
    advance(world, 3600)
    assert len(eventgrid_webhook.events) == 5


@pytest.mark.parametrize("shuffle", [False, True])
def test_shuffle_reorders_deliveries(
    eventgrid_world: World, eventgrid_webhook: Webhook, shuffle: bool
) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(endpoint=ENDPOINT, shuffle=shuffle)
    events = [key_event(world) for _ in range(20)]
    world.eventgrid.publish(events)
    world.eventgrid.pump(world.clock.now())
    delivered = [e["id"] for e in eventgrid_webhook.events]
    assert sorted(delivered) == sorted(e["id"] for e in events)
    assert (delivered != [e["id"] for e in events]) is shuffle


def test_batches_carry_several_events(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(endpoint=ENDPOINT, max_events_per_batch=2)
    world.eventgrid.publish([key_event(world) for _ in range(5)])
    world.eventgrid.pump(world.clock.now())
    assert [len(r.body) for r in eventgrid_webhook.notifications] == [2, 2, 1]


# ---- lock discipline, reset, world integration ---------------------------------------------------
def test_nothing_is_sent_while_the_world_lock_is_held(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world)])
    with world.lock:
        world.eventgrid.pump(world.clock.now())
        assert eventgrid_webhook.received == []
    world.eventgrid.pump(world.clock.now())
    assert len(eventgrid_webhook.events) == 1


def test_webhook_can_call_back_into_the_sandbox(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world = eventgrid_world
    session = sandbox_session(world)
    seen: list[int] = []
    eventgrid_webhook.on_notification = lambda _events: seen.append(
        session.get("https://sandbox.local/sandbox/clock").status_code
    )
    session.post("https://sandbox.local/sandbox/event-subscriptions", json={"endpoint": ENDPOINT})
    world.eventgrid.publish([key_event(world)])
    # Any request through the world pumps once it is answered (outside the lock).
    assert session.get("https://sandbox.local/sandbox/state").status_code == 200
    assert seen == [200]


def test_clock_moved_through_the_admin_api_delivers_due_retries(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world, hook = eventgrid_world, eventgrid_webhook
    hook.statuses = [503]
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.pump(world.clock.now())
    session = sandbox_session(world)
    assert session.post("https://sandbox.local/sandbox/clock", json={"advance": "PT10S"}).status_code == 200
    assert [d["status_code"] for d in world.eventgrid.deliveries[1:]] == [503, 200]


def test_reset_forgets_subscriptions_but_keeps_local_endpoints(
    eventgrid_world: World, eventgrid_webhook: Webhook
) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world)])
    world.reset()
    assert world.eventgrid.subscriptions == {}
    assert world.eventgrid.pending_count() == 0
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world)])
    world.eventgrid.pump(world.clock.now())
    assert len(eventgrid_webhook.events) == 1


def test_unsubscribe_drops_pending(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world = eventgrid_world
    eventgrid_webhook.validate = False
    sub = world.eventgrid.subscribe(endpoint=ENDPOINT)
    world.eventgrid.publish([key_event(world)])
    assert world.eventgrid.unsubscribe(sub.id)
    assert not world.eventgrid.unsubscribe(sub.id)
    assert world.eventgrid.pending_count() == 0


def test_remove_for_topic(eventgrid_world: World) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(endpoint=ENDPOINT, topic=VAULT_ID)
    world.eventgrid.subscribe(endpoint=ENDPOINT)
    assert world.eventgrid.remove_for_topic(VAULT_ID.upper()) == 1
    assert len(world.eventgrid.subscriptions) == 1


def test_default_sender_posts_over_http(eventgrid_world: World) -> None:
    world = eventgrid_world
    hook = Webhook()
    with serve_http(hook) as base:
        world.eventgrid.subscribe(endpoint=f"{base}/api/events")
        event = key_event(world)
        world.eventgrid.publish([event])
        world.eventgrid.pump(world.clock.now())
    assert [e["id"] for e in hook.events] == [event["id"]]
    assert hook.notifications[0].path == "/api/events"
