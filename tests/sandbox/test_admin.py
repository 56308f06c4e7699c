"""The admin API under /sandbox/, driven over the in-process admin host (https://sandbox.local).

Every bad body must answer 400 naming the field at fault and leave the world as it was.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests

from sandbox.clock import isoformat
from sandbox.world import World
from tests.sandbox.conftest import EVENTGRID_LOCAL_HOST
from tests.sandbox.webhook import Webhook

ADMIN = "https://sandbox.local/sandbox"


def error_of(resp: requests.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"])
    return dict(body["error"])


# ---- clock ------------------------------------------------------------------------------------
def test_clock_get_advance_set_and_mode(eventgrid_world: World, admin_session: requests.Session) -> None:
    start = eventgrid_world.clock.now()
    got = admin_session.get(f"{ADMIN}/clock").json()
    assert got == {"now": isoformat(start), "mode": "manual"}

    moved = admin_session.post(f"{ADMIN}/clock", json={"advance": "PT25H"}).json()
    assert moved["now"] == isoformat(start + timedelta(hours=25))
    assert eventgrid_world.clock.now() == start + timedelta(hours=25)

    target = start + timedelta(days=3, minutes=7)
    assert admin_session.post(f"{ADMIN}/clock", json={"set": isoformat(target)}).json()["now"] == isoformat(target)

    assert admin_session.post(f"{ADMIN}/clock", json={"mode": "real"}).json()["mode"] == "real"
    assert eventgrid_world.clock.mode == "real"
    assert admin_session.post(f"{ADMIN}/clock", json={"mode": "manual"}).json()["mode"] == "manual"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"advance": "P"}, "advance"),
        ({"advance": "25 hours"}, "advance"),
        ({"advance": "-PT1H"}, "advance"),
        ({"advance": 3600}, "advance"),
        ({"set": "2020-01-01T00:00:00Z"}, "set"),
        ({"set": "2030-01-01T00:00:00"}, "set"),
        ({"set": "tomorrow"}, "set"),
        ({"advance": "PT1H", "set": "2030-01-01T00:00:00Z"}, "set"),
        ({"mode": "fast"}, "mode"),
        ({"mode": "real", "advance": "PT1X"}, "advance"),
        ({"speed": 2}, "speed"),
        ({}, "advance"),
    ],
)
def test_bad_clock_bodies_change_nothing(
    eventgrid_world: World, admin_session: requests.Session, body: dict[str, Any], field: str
) -> None:
    before = (eventgrid_world.clock.now(), eventgrid_world.clock.mode)
    resp = admin_session.post(f"{ADMIN}/clock", json=body)
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "BadParameter"
    assert err["target"] == field
    assert field in err["message"]
    assert (eventgrid_world.clock.now(), eventgrid_world.clock.mode) == before


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
def test_bodies_that_are_not_json_objects_are_400(admin_session: requests.Session, raw: bytes) -> None:
    resp = admin_session.post(f"{ADMIN}/clock", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "BadParameter"


# ---- LRO, throttle, services -------------------------------------------------------------------
def test_lro_settings(eventgrid_world: World, admin_session: requests.Session) -> None:
    resp = admin_session.post(f"{ADMIN}/lro", json={"duration_s": 2.0, "fail_rate": 0.25})
    assert resp.json() == {"duration_s": 2.0, "fail_rate": 0.25}
    assert (eventgrid_world.lro.duration_s, eventgrid_world.lro.fail_rate) == (2.0, 0.25)
    assert admin_session.get(f"{ADMIN}/lro").json() == {"duration_s": 2.0, "fail_rate": 0.25}

    for body, field in (
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"duration_s": -1}, "duration_s"),
        ({"duration_s": "2"}, "duration_s"),
        ({"duration_s": 1, "fail_rate": True}, "fail_rate"),
    ):
        resp = admin_session.post(f"{ADMIN}/lro", json=body)
        assert resp.status_code == 400
        assert error_of(resp)["target"] == field
    assert (eventgrid_world.lro.duration_s, eventgrid_world.lro.fail_rate) == (2.0, 0.25)


def test_throttle_settings(eventgrid_world: World, admin_session: requests.Session) -> None:
    body = {
        "arm_writes_per_s": 10,
        "arm_write_burst": 3,
        "arm_reads_per_s": 25,
        "arm_read_burst": 250,
        "enabled": True,
        "kv_ops_per_10s": 100,
    }
    got = admin_session.post(f"{ADMIN}/throttle", json=body).json()
    assert got["arm_write_burst"] == 3
    assert got["kv_ops_per_10s"] == 100
    assert eventgrid_world.throttle.settings.arm_write_burst == 3

    for bad, field in (
        ({"arm_write_burst": 0}, "arm_write_burst"),
        ({"enabled": "yes"}, "enabled"),
        ({"arm_write_burst": 5, "writes": 1}, "writes"),
    ):
        resp = admin_session.post(f"{ADMIN}/throttle", json=bad)
        assert resp.status_code == 400
        assert error_of(resp)["target"] == field
    assert eventgrid_world.throttle.settings.arm_write_burst == 3
    assert admin_session.get(f"{ADMIN}/throttle").json()["arm_write_burst"] == 3


def test_service_settings(eventgrid_world: World, admin_session: requests.Session) -> None:
    got = admin_session.post(f"{ADMIN}/services", json={"usage_interval_s": 60, "versionless_lag_s": 120}).json()
    assert got["usage_interval_s"] == 60
    assert eventgrid_world.service_settings.versionless_lag_s == 120
    resp = admin_session.post(f"{ADMIN}/services", json={"usage_interval_s": 30, "cosmos_recovery_s": -5})
    assert resp.status_code == 400
    assert error_of(resp)["target"] == "cosmos_recovery_s"
    assert eventgrid_world.service_settings.usage_interval_s == 60


# ---- faults -----------------------------------------------------------------------------------
def test_fault_rules_apply_count_hits_and_clear(eventgrid_world: World, admin_session: requests.Session) -> None:
    rule = {
        "method": "PATCH",
        "path": "/providers/Microsoft.Kusto/clusters/",
        "status": 429,
        "retry_after": 1,
        "times": 2,
        "latency_ms": 0,
    }
    resp = admin_session.post(f"{ADMIN}/faults", json={"rules": [rule]})
    assert resp.status_code == 200
    url = (
        "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.Kusto/clusters/c1"
        "?api-version=2025-02-14"
    )
    first = admin_session.patch(url, json={})
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "1"
    assert admin_session.patch(url, json={}).status_code == 429
    assert admin_session.patch(url, json={}).status_code != 429, "times=2 is spent"
    listed = admin_session.get(f"{ADMIN}/faults").json()["rules"]
    assert listed[0]["hits"] == 2
    assert listed[0]["status"] == 429

    admin_session.delete(f"{ADMIN}/faults")
    assert admin_session.get(f"{ADMIN}/faults").json() == {"rules": []}


def test_bad_fault_rules_keep_the_old_set(eventgrid_world: World, admin_session: requests.Session) -> None:
    admin_session.post(f"{ADMIN}/faults", json={"rules": [{"path": "keys", "status": 503}]})
    for body, field in (
        ({"rules": [{"path": "ok", "status": 500}, {"path": "(", "status": 500}]}, "rules[1]"),
        ({"rules": [{"path": "x", "status": 99}]}, "rules[0]"),
        ({"rules": [{"path": "x", "explode": True}]}, "rules[0]"),
        ({"rules": {"path": "x"}}, "rules"),
    ):
        resp = admin_session.post(f"{ADMIN}/faults", json=body)
        assert resp.status_code == 400
        assert error_of(resp)["target"] == field
    rules = admin_session.get(f"{ADMIN}/faults").json()["rules"]
    assert [r["path"] for r in rules] == ["keys"]


def test_fault_rules_can_be_appended(admin_session: requests.Session) -> None:
    admin_session.post(f"{ADMIN}/faults", json={"rules": [{"path": "a", "status": 500}]})
    admin_session.post(f"{ADMIN}/faults", json={"rules": [{"path": "b", "drop": True}], "append": True})
    assert [r["path"] for r in admin_session.get(f"{ADMIN}/faults").json()["rules"]] == ["a", "b"]


def test_faults_never_block_the_admin_api(admin_session: requests.Session) -> None:
    admin_session.post(f"{ADMIN}/faults", json={"rules": [{"path": ".*", "status": 503}]})
    assert admin_session.get(f"{ADMIN}/clock").status_code == 200
    assert admin_session.delete(f"{ADMIN}/faults").status_code == 200


# ---- event subscriptions and deliveries ------------------------------------------------------------
def test_event_subscription_lifecycle(
    eventgrid_world: World, admin_session: requests.Session, eventgrid_webhook: Webhook
) -> None:
    body = {
        "endpoint": f"{EVENTGRID_LOCAL_HOST}/api/events",
        "schema": "CloudEventSchemaV1_0",
        "event_types": ["Microsoft.KeyVault.KeyNewVersionCreated"],
        "duplicate_rate": 0.0,
        "shuffle": False,
    }
    resp = admin_session.post(f"{ADMIN}/event-subscriptions", json=body)
    assert resp.status_code == 201
    sub = resp.json()
    assert sub["endpoint"] == body["endpoint"]
    assert sub["schema"] == "CloudEventSchemaV1_0"
    assert sub["validation"]["state"] == "Pending"

    eventgrid_world.eventgrid.publish(
        [
            {
                "id": "e1",
                "topic": "/t",
                "subject": "k",
                "eventType": "Microsoft.KeyVault.KeyNewVersionCreated",
                "eventTime": "2026-01-05T09:00:00Z",
                "data": {},
                "dataVersion": "1",
                "metadataVersion": "1",
            }
        ]
    )
    # Deliveries go out once a request has been answered (outside the world's lock).
    admin_session.get(f"{ADMIN}/clock")
    listed = admin_session.get(f"{ADMIN}/event-subscriptions").json()["value"]
    assert [s["id"] for s in listed] == [sub["id"]]
    assert listed[0]["validation"]["state"] == "Validated"

    deliveries = admin_session.get(f"{ADMIN}/deliveries").json()
    assert [(d["event_id"], d["status_code"], d["attempt"], d["subscription_id"]) for d in deliveries["value"]][-1] == (
        "e1",
        200,
        1,
        sub["id"],
    )
    since = admin_session.get(f"{ADMIN}/deliveries", params={"since": deliveries["last_seq"]}).json()
    assert since["value"] == []
    assert admin_session.get(f"{ADMIN}/events").json()["value"][0]["id"] == "e1"

    assert admin_session.get(f"{ADMIN}/event-subscriptions/{sub['id']}").status_code == 200
    assert admin_session.delete(f"{ADMIN}/event-subscriptions/{sub['id']}").status_code == 204
    assert admin_session.delete(f"{ADMIN}/event-subscriptions/{sub['id']}").status_code == 404
    assert admin_session.get(f"{ADMIN}/event-subscriptions/{sub['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "endpoint"),
        ({"endpoint": "ftp://host/x"}, "endpoint"),
        ({"endpoint": "https://"}, "endpoint"),
        ({"endpoint": "https://h/x", "schema": "CustomInputSchema"}, "schema"),
        ({"endpoint": "https://h/x", "event_types": "Microsoft.KeyVault.KeyExpired"}, "event_types"),
        ({"endpoint": "https://h/x", "event_types": [""]}, "event_types"),
        ({"endpoint": "https://h/x", "duplicate_rate": 2}, "duplicate_rate"),
        ({"endpoint": "https://h/x", "shuffle": "yes"}, "shuffle"),
        ({"endpoint": "https://h/x", "max_events_per_batch": 1.5}, "max_events_per_batch"),
        ({"endpoint": "https://h/x", "max_delivery_attempts": 31}, "max_delivery_attempts"),
        ({"endpoint": "https://h/x", "event_ttl_minutes": 0}, "event_ttl_minutes"),
        ({"endpoint": "https://h/x", "filter": {}}, "filter"),
    ],
)
def test_bad_event_subscriptions_are_refused(
    eventgrid_world: World, admin_session: requests.Session, body: dict[str, Any], field: str
) -> None:
    resp = admin_session.post(f"{ADMIN}/event-subscriptions", json=body)
    assert resp.status_code == 400
    assert error_of(resp)["target"] == field
    assert eventgrid_world.eventgrid.subscriptions == {}


def test_dead_letters_are_listed(
    eventgrid_world: World, admin_session: requests.Session, eventgrid_webhook: Webhook
) -> None:
    eventgrid_webhook.statuses = [413]
    admin_session.post(f"{ADMIN}/event-subscriptions", json={"endpoint": f"{EVENTGRID_LOCAL_HOST}/x"})
    eventgrid_world.eventgrid.publish([{"id": "big", "topic": "/t", "subject": "k", "eventType": "T", "data": {}}])
    admin_session.get(f"{ADMIN}/clock")
    dead = admin_session.get(f"{ADMIN}/dead-letters").json()["value"]
    assert [(d["event"]["id"], d["lastDeliveryOutcome"]) for d in dead] == [("big", 413)]


# ---- request log, state, reset, routing ----------------------------------------------------------
def test_request_log_since(eventgrid_world: World, admin_session: requests.Session) -> None:
    admin_session.get(f"{ADMIN}/clock")
    mark = eventgrid_world.last_seq
    admin_session.get(f"{ADMIN}/lro")
    admin_session.get("https://management.azure.com/subscriptions?api-version=2022-12-01")
    got = admin_session.get(f"{ADMIN}/requests", params={"since": mark}).json()
    entries = got["value"]
    assert [(e["method"], e["host"], e["path"]) for e in entries] == [
        ("GET", "sandbox.local", "/sandbox/lro"),
        ("GET", "management.azure.com", "/subscriptions"),
    ]
    assert all({"seq", "status", "time"} <= set(e) for e in entries)
    assert entries[0]["status"] == 200
    assert got["last_seq"] == entries[-1]["seq"]
    bad = admin_session.get(f"{ADMIN}/requests", params={"since": "abc"})
    assert bad.status_code == 400
    assert error_of(bad)["target"] == "since"


def test_state_summary_and_reset(eventgrid_world: World, admin_session: requests.Session) -> None:
    admin_session.post(f"{ADMIN}/faults", json={"rules": [{"path": "x", "status": 500}]})
    admin_session.post(f"{ADMIN}/lro", json={"duration_s": 9})
    admin_session.post(f"{ADMIN}/event-subscriptions", json={"endpoint": "https://h/x"})
    state = admin_session.get(f"{ADMIN}/state").json()
    assert state["event_subscriptions"] == 1
    assert {"vaults", "keys", "key_versions", "resources", "operations", "clock"} <= set(state)

    assert admin_session.post(f"{ADMIN}/reset").status_code == 200
    assert eventgrid_world.faults.rules == []
    assert eventgrid_world.lro.duration_s == 0.0
    assert admin_session.get(f"{ADMIN}/state").json()["event_subscriptions"] == 0


def test_unknown_admin_paths_and_methods(admin_session: requests.Session) -> None:
    missing = admin_session.get(f"{ADMIN}/nothing-here")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "NotFound"
    wrong = admin_session.put(f"{ADMIN}/clock", json={})
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "MethodNotAllowed"


def test_seed_endpoint_refuses_bad_documents(eventgrid_world: World, admin_session: requests.Session) -> None:
    resp = admin_session.post(f"{ADMIN}/seed", json={"vaults": [{"name": "kv", "subscription": "nope"}]})
    assert resp.status_code == 400
    assert error_of(resp)["target"] == "vaults[0].subscription"
    assert eventgrid_world.vaults == {}
    assert eventgrid_world.requests_since(0)[-1].path == "/sandbox/seed", "nothing was sent"
