"""HTTP triggers over real HTTP: routing, route parameters, methods, auth levels, failures."""

from __future__ import annotations

import logging

import pytest
import requests

from sandbox.host import DevHost
from tests.host import fixture_app
from tests.host.conftest import FUNCTION_KEY, MASTER_KEY


def test_route_params_query_body_and_headers_reach_the_function(web_host: DevHost) -> None:
    resp = requests.post(
        f"{web_host.url}/api/keys/k%20one/v2?code={FUNCTION_KEY}&x=1",
        data=b"payload",
        headers={"X-Test": "yes"},
        timeout=5,
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["X-Fixture"] == "1"
    doc = resp.json()
    assert doc["method"] == "POST"
    assert doc["route"] == {"name": "k one", "version": "v2"}
    assert doc["params"] == {"code": FUNCTION_KEY, "x": "1"}
    assert doc["body"] == "payload"
    assert doc["header"] == "yes"
    (req,) = fixture_app.calls("get_key")
    assert req.url.startswith(web_host.url + "/api/keys/")


def test_optional_route_param_may_be_absent(web_host: DevHost) -> None:
    resp = requests.get(f"{web_host.url}/api/keys/k1", headers={"x-functions-key": FUNCTION_KEY}, timeout=5)
    assert resp.status_code == 200
    assert resp.json()["route"] == {"name": "k1"}


def test_literal_route_wins_over_parameter(web_host: DevHost) -> None:
    resp = requests.get(f"{web_host.url}/api/keys/special", timeout=5)
    assert resp.status_code == 200
    assert resp.text == "literal wins"


def test_catch_all_and_async_function(web_host: DevHost) -> None:
    assert requests.get(f"{web_host.url}/api/files/a/b/c.txt", timeout=5).text == "a/b/c.txt"
    assert requests.get(f"{web_host.url}/api/files", timeout=5).text == "<none>"


def test_anonymous_route(web_host: DevHost) -> None:
    resp = requests.get(f"{web_host.url}/api/ping", timeout=5)
    assert (resp.status_code, resp.text) == (200, "pong")


def test_unknown_route_is_404(web_host: DevHost) -> None:
    assert requests.get(f"{web_host.url}/api/nowhere", timeout=5).status_code == 404
    assert requests.get(f"{web_host.url}/ping", timeout=5).status_code == 404
    assert requests.get(f"{web_host.url}/api/keys", timeout=5).status_code == 404


def test_wrong_method_is_405_with_allow(web_host: DevHost) -> None:
    resp = requests.delete(f"{web_host.url}/api/keys/k1?code={FUNCTION_KEY}", timeout=5)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "GET, POST"
    assert fixture_app.calls("get_key") == []


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({}, {}, 401),
        ({"code": "wrong"}, {}, 401),
        ({}, {"x-functions-key": "wrong"}, 401),
        ({"code": FUNCTION_KEY}, {}, 200),
        ({}, {"x-functions-key": FUNCTION_KEY}, 200),
        ({"code": MASTER_KEY}, {}, 200),
    ],
)
def test_function_auth_level(web_host: DevHost, params: dict[str, str], headers: dict[str, str], status: int) -> None:
    resp = requests.get(f"{web_host.url}/api/keys/k1", params=params, headers=headers, timeout=5)
    assert resp.status_code == status
    assert len(fixture_app.calls("get_key")) == (1 if status == 200 else 0)


def test_admin_auth_level_needs_the_master_key(web_host: DevHost) -> None:
    url = f"{web_host.url}/api/admin-only"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, params={"code": FUNCTION_KEY}, timeout=5).status_code == 401
    resp = requests.get(url, params={"code": MASTER_KEY}, timeout=5)
    assert (resp.status_code, resp.text) == (200, "admin ok")


def test_exception_is_500_without_details(web_host: DevHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="sandbox.host"):
        resp = requests.get(f"{web_host.url}/api/boom", timeout=5)
    assert resp.status_code == 500
    assert "secret internal detail" not in resp.text
    assert "Traceback" not in resp.text
    assert any("boom failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_admin_ping_and_status(web_host: DevHost) -> None:
    assert requests.get(f"{web_host.url}/admin/host/ping", timeout=5).status_code == 200
    assert requests.get(f"{web_host.url}/admin/host/status", timeout=5).status_code == 401
    status = requests.get(f"{web_host.url}/admin/host/status", params={"code": MASTER_KEY}, timeout=5)
    assert status.json()["state"] == "Running"


def test_keep_alive_session_serves_several_requests(web_host: DevHost) -> None:
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(f"{web_host.url}/api/ping", timeout=5).text == "pong"
