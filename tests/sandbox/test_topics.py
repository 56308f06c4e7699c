"""Event Grid custom topics: publishing through the official publisher client, Event Grid's
refusals, and delivery to subscriptions on the topic."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient
from azure.eventgrid._legacy import EventGridPublisherClient as BasicTopicPublisher

from sandbox.topics import MAX_REQUEST_BYTES, topic_id
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World
from tests.sandbox.conftest import EVENTGRID_LOCAL_HOST
from tests.sandbox.webhook import Webhook

ENDPOINT = "https://outcomes.westeurope-1.eventgrid.azure.net/api/events"
WEBHOOK = f"{EVENTGRID_LOCAL_HOST}/alerts"


def publisher(world: World, credential: Any = None) -> BasicTopicPublisher:
    return BasicTopicPublisher(ENDPOINT, credential or StaticTokenCredential(), transport=SandboxTransport(world))


def outcome(n: int = 0, **data: Any) -> EventGridEvent:
    return EventGridEvent(subject=f"https://kv.vault.azure.net/keys/k{n}", event_type="KeySteward.KeyRevoked",
                          data={"run": f"r{n}", **data}, data_version="1.0", id=f"r{n}.KeyRevoked")


def topic_posts(world: World) -> list[Any]:
    return [e for e in world.requests if e.service == "topic"]


def test_published_events_are_stamped_with_the_topic_and_listed(eventgrid_world: World) -> None:
    world = eventgrid_world
    publisher(world).send([outcome(1), outcome(2, severity="incident")])

    published = world.eventgrid.published
    assert [e["id"] for e in published] == ["r1.KeyRevoked", "r2.KeyRevoked"]
    assert {e["topic"] for e in published} == {topic_id(world, "outcomes")}
    assert published[1]["data"] == {"run": "r2", "severity": "incident"}
    assert all(e["eventType"] == "KeySteward.KeyRevoked" and e["metadataVersion"] == "1" for e in published)
    [post] = topic_posts(world)
    assert (post.method, post.path, post.status) == ("POST", "/api/events", 200)
    assert post.query.startswith("api-version=")


def test_a_subscription_on_the_topic_receives_its_events(eventgrid_world: World, eventgrid_webhook: Webhook) -> None:
    world = eventgrid_world
    world.eventgrid.subscribe(endpoint=WEBHOOK, name="alerts", topic=topic_id(world, "outcomes"))
    world.eventgrid.subscribe(endpoint=WEBHOOK, name="other-topic", topic=topic_id(world, "elsewhere"))

    publisher(world).send([outcome(3)])
    world.eventgrid.pump(world.clock.now())

    assert [e["id"] for e in eventgrid_webhook.events] == ["r3.KeyRevoked"]
    assert [n.headers["aeg-subscription-name"] for n in eventgrid_webhook.notifications] == ["ALERTS"]


def test_a_repeated_id_is_delivered_again_as_event_grid_does(eventgrid_world: World) -> None:
    world = eventgrid_world
    client = publisher(world)
    client.send([outcome(4)])
    client.send([outcome(4)])
    assert [e["id"] for e in world.eventgrid.published] == ["r4.KeyRevoked", "r4.KeyRevoked"]


def test_shared_access_key_is_accepted(eventgrid_world: World) -> None:
    publisher(eventgrid_world, AzureKeyCredential("topic-key")).send([outcome(5)])
    assert len(eventgrid_world.eventgrid.published) == 1


def test_over_one_megabyte_is_refused_whole(eventgrid_world: World) -> None:
    world = eventgrid_world
    big = [outcome(n, blob="x" * 200_000) for n in range(6)]
    with pytest.raises(HttpResponseError) as caught:
        publisher(world).send(big)
    assert caught.value.status_code == 413
    assert "RequestEntityTooLarge" in str(caught.value)
    assert world.eventgrid.published == []


def test_a_cloud_events_batch_is_refused_by_an_event_grid_schema_topic(eventgrid_world: World) -> None:
    with pytest.raises(HttpResponseError) as caught:
        publisher(eventgrid_world).send([CloudEvent(source="/keysteward", type="KeySteward.KeyRevoked", data={})])
    assert caught.value.status_code == 400
    assert eventgrid_world.eventgrid.published == []


@pytest.mark.parametrize(("body", "headers", "status", "code"), [
    (b"[]", {}, 401, "Unauthorized"),
    (b"not json", {"Authorization": "Bearer t"}, 400, "BadRequest"),
    (b"{}", {"Authorization": "Bearer t"}, 400, "BadRequest"),
    (b"[]", {"Authorization": "Bearer t"}, 400, "BadRequest"),
    (json.dumps([{"id": "1", "subject": "s", "eventType": "t"}]).encode(), {"aeg-sas-key": "k"}, 400, "BadRequest"),
    (json.dumps([{"id": "", "subject": "s", "eventType": "t", "eventTime": "2026-01-01T00:00:00Z"}]).encode(),
     {"aeg-sas-key": "k"}, 400, "BadRequest"),
    (b"[" + b" " * MAX_REQUEST_BYTES + b"]", {"aeg-sas-key": "k"}, 413, "RequestEntityTooLarge"),
], ids=["no-credentials", "not-json", "not-an-array", "empty-array", "no-eventTime", "empty-id", "over-1MB"])
def test_bad_requests_get_event_grid_errors_and_publish_nothing(
    eventgrid_world: World, admin_session: requests.Session, body: bytes, headers: dict[str, str], status: int,
    code: str,
) -> None:
    resp = admin_session.post(f"{ENDPOINT}?api-version=2018-01-01", data=body,
                              headers={"Content-Type": "application/json", **headers})
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
    assert eventgrid_world.eventgrid.published == []


def test_wrong_path_method_and_missing_api_version(eventgrid_world: World, admin_session: requests.Session) -> None:
    auth = {"aeg-sas-key": "k"}
    base = ENDPOINT.removesuffix("/api/events")
    assert admin_session.post(f"{base}/api/other?api-version=2018-01-01", json=[], headers=auth).status_code == 404
    assert admin_session.get(f"{ENDPOINT}?api-version=2018-01-01", headers=auth).status_code == 405
    missing = admin_session.post(ENDPOINT, json=[], headers=auth)
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "MissingApiVersionParameter")


def test_the_public_client_drops_the_transport_for_a_basic_topic(eventgrid_world: World) -> None:
    """Pins why shared/notify.py builds the basic-topic client itself: azure-eventgrid 4.22's
    EventGridPublisherClient does not pass its keyword arguments on, so the sandbox transport
    is ignored and the real host name is looked up. When this fails, the SDK passes them."""
    client = EventGridPublisherClient(ENDPOINT, StaticTokenCredential(), transport=SandboxTransport(eventgrid_world))
    with pytest.raises(ServiceRequestError):
        client.send([outcome(6)])
    assert eventgrid_world.eventgrid.published == []
