"""Retention and preflight routes through their user functions with real func.HttpRequest objects."""

from __future__ import annotations

import json
from datetime import timedelta

import azure.functions as func
import pytest

import functions._root as root
from functions.keys_http import key_status_route, preflight_check, retire_version
from sandbox.world import World
from shared.auth import encode_principal
from tests.app.estate import make_estate, steward

READ = encode_principal("00000000-0000-0000-0000-0000000000aa", name="reader", roles=("KeySteward.Read",))
REVOKE = encode_principal("00000000-0000-0000-0000-0000000000bb", name="oncall", roles=("KeySteward.Revoke",))


@pytest.fixture
def setup():
    world = World()
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true")
    root.install(app)
    yield world, estate
    root.install(None)


def req(method: str, url: str, *, principal: str | None, body: object = None, params: dict | None = None):
    headers = {"X-MS-CLIENT-PRINCIPAL": principal} if principal else {}
    data = json.dumps(body).encode() if body is not None else b""
    return func.HttpRequest(method=method, url=url, headers=headers, params=params or {}, body=data)


def test_retire_refuses_with_409_and_reasons_then_accepts_after_24h(setup):
    world, estate = setup
    kc = estate.keys
    kc.rotate_key(estate.key_name)
    # move the clusters off v1 first: the pinned clusters would block at any age
    app = root.get_app()
    app.reconcile_all()
    world.clock.advance(timedelta(hours=1))
    body = {"key": f"{estate.key_uri}/{estate.v1}", "reason": "cleanup", "ticket": "CHG-1"}
    resp = retire_version(req("POST", "/api/retire", principal=REVOKE, body=body))
    assert resp.status_code == 409
    doc = json.loads(resp.get_body())
    assert doc["error"]["code"] == "RetentionRuleBlocks"
    assert [b["kind"] for b in doc["blockers"]] == ["retention"]
    world.clock.advance(timedelta(hours=24))
    resp = retire_version(req("POST", "/api/retire", principal=REVOKE, body=body))
    assert resp.status_code == 200, resp.get_body()
    assert not next(p for p in kc.list_properties_of_key_versions(estate.key_name) if p.version == estate.v1).enabled


@pytest.mark.parametrize(
    ("principal", "body", "status"),
    [
        (None, {"key": "x", "reason": "r", "ticket": "t"}, 401),
        (READ, {"key": "x", "reason": "r", "ticket": "t"}, 403),
        (REVOKE, {"key": "https://evil.example.com/keys/cmk/" + "a" * 32, "reason": "r", "ticket": "t"}, 400),
        (REVOKE, {"key": "x", "reason": "r"}, 400),
        (REVOKE, {"key": 5, "reason": "r", "ticket": "t"}, 400),
    ],
)
def test_retire_rejects_bad_callers_and_bodies_without_sending_anything(setup, principal, body, status):
    world, _ = setup
    seq = world.last_seq
    resp = retire_version(req("POST", "/api/retire", principal=principal, body=body))
    assert resp.status_code == status
    assert b"Traceback" not in resp.get_body()
    assert world.requests_since(seq) == []


def test_status_and_check_routes(setup):
    world, estate = setup
    resp = key_status_route(req("GET", "/api/keys/status", principal=READ, params={"key": estate.key_uri}))
    assert resp.status_code == 200
    doc = json.loads(resp.get_body())
    assert doc["currentVersion"] == estate.v1
    assert doc["versions"][0]["retention"]["blockers"][0]["kind"] == "current"
    resp = preflight_check(req("GET", "/api/check", principal=READ))
    assert resp.status_code == 200
    assert json.loads(resp.get_body())["ok"] is True
    assert key_status_route(req("GET", "/api/keys/status", principal=READ, params={"key": "nope"})).status_code == 400
