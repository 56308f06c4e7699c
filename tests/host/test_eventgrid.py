"""The Event Grid webhook: keys, both validation handshakes, and delivery in both schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import requests

from sandbox.host import DevHost
from tests.host import fixture_app
from tests.host.conftest import EVENTGRID_KEY, FUNCTION_KEY, MASTER_KEY

VAULT_ID = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v1"
KEY_DATA = {
    "Id": "https://v1.vault.azure.net/keys/k1/abc",
    "VaultName": "v1",
    "ObjectType": "Key",
    "ObjectName": "k1",
    "Version": "abc",
    "NBF": None,
    "EXP": None,
}


def webhook(host: DevHost, *, function: str = "on_event", code: str | None = EVENTGRID_KEY) -> str:
    url = f"{host.url}/runtime/webhooks/eventgrid?functionName={function}"
    return f"{url}&code={code}" if code else url


def post(url: str, body: Any, kind: str = "Notification") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        url, data=data, headers={"aeg-event-type": kind, "Content-Type": "application/json"}, timeout=5
    )


def eg_event(event_id: str = "e1", subject: str = "k1") -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": VAULT_ID,
        "subject": subject,
        "eventType": "Microsoft.KeyVault.KeyNewVersionCreated",
        "eventTime": "2026-01-05T09:00:00.1234567Z",
        "data": KEY_DATA,
        "dataVersion": "1",
        "metadataVersion": "1",
    }


def test_validation_handshake_returns_the_code(web_host: DevHost) -> None:
    body = [
        {
            "id": "v",
            "topic": VAULT_ID,
            "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-01-05T09:00:00Z",
            "dataVersion": "2",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x"},
        }
    ]
    resp = post(webhook(web_host), body, kind="SubscriptionValidation")
    assert resp.status_code == 200
    assert resp.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert fixture_app.calls("on_event") == []


def test_cloudevents_options_handshake(web_host: DevHost) -> None:
    resp = requests.options(webhook(web_host), headers={"WebHook-Request-Origin": "eventgrid.azure.net"}, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert resp.headers["WebHook-Allowed-Rate"] == "*"


def test_event_grid_schema_delivery_reaches_the_function(web_host: DevHost) -> None:
    resp = post(webhook(web_host), [eg_event("e1"), eg_event("e2", subject="k2")])
    assert resp.status_code == 202
    events = fixture_app.calls("on_event")
    assert [e.id for e in events] == ["e1", "e2"]
    first = events[0]
    assert isinstance(first, func.EventGridEvent)
    assert first.topic == VAULT_ID
    assert first.subject == "k1"
    assert first.event_type == "Microsoft.KeyVault.KeyNewVersionCreated"
    assert first.event_time == datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=UTC)
    assert first.data_version == "1"
    assert first.get_json() == KEY_DATA


def test_cloudevents_delivery_maps_the_fields(web_host: DevHost) -> None:
    event = {
        "specversion": "1.0",
        "id": "c1",
        "source": VAULT_ID,
        "subject": "k1",
        "type": "Microsoft.KeyVault.KeyNearExpiry",
        "time": "2026-01-05T09:00:00Z",
        "data": KEY_DATA,
    }
    resp = post(webhook(web_host), [event])
    assert resp.status_code == 202
    (got,) = fixture_app.calls("on_event")
    assert (got.id, got.topic, got.subject, got.event_type) == (
        "c1",
        VAULT_ID,
        "k1",
        "Microsoft.KeyVault.KeyNearExpiry",
    )
    assert got.event_time == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert got.data_version == "1.0"
    assert got.get_json() == KEY_DATA


def test_function_failure_answers_500_after_trying_every_event(web_host: DevHost) -> None:
    resp = post(webhook(web_host), [eg_event("e1", subject="fail"), eg_event("e2")])
    assert resp.status_code == 500
    assert "Traceback" not in resp.text
    assert [e.id for e in fixture_app.calls("on_event")] == ["e1", "e2"]


def test_bodies_that_are_not_arrays_of_objects_are_400(web_host: DevHost) -> None:
    assert post(webhook(web_host), b"not json").status_code == 400
    assert post(webhook(web_host), [1, 2]).status_code == 400
    assert post(webhook(web_host), "text").status_code == 400
    assert post(webhook(web_host), [{"subject": "no id"}]).status_code == 400
    assert fixture_app.calls("on_event") == []


def test_missing_or_unknown_event_type_header_is_400(web_host: DevHost) -> None:
    resp = requests.post(webhook(web_host), json=[eg_event()], timeout=5)
    assert resp.status_code == 400
    assert post(webhook(web_host), [eg_event()], kind="Unsubscribe").status_code == 202


def test_system_key_is_required(web_host: DevHost) -> None:
    assert post(webhook(web_host, code=None), [eg_event()]).status_code == 401
    assert post(webhook(web_host, code="wrong"), [eg_event()]).status_code == 401
    assert post(webhook(web_host, code=FUNCTION_KEY), [eg_event()]).status_code == 401
    assert post(webhook(web_host, code=MASTER_KEY), [eg_event()]).status_code == 202
    assert len(fixture_app.calls("on_event")) == 1


def test_unknown_function_is_404(web_host: DevHost) -> None:
    assert post(webhook(web_host, function="nope"), [eg_event()]).status_code == 404
    assert post(webhook(web_host, function="ping"), [eg_event()]).status_code == 404


def test_function_name_is_case_insensitive(web_host: DevHost) -> None:
    assert post(webhook(web_host, function="ON_EVENT"), [eg_event()]).status_code == 202
