"""The on-call page through its user functions, with real func.HttpRequest objects, against the
in-process sandbox: the API's authentication, every key named, escaping, no secret in the page."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser

import azure.functions as func
import pytest

import functions._root as root
from functions.ui import ui_blast_radius, ui_estate, ui_key, ui_run
from sandbox.world import World
from shared.auth import ROLE_READ, ROLE_REVOKE, Principal, encode_principal
from shared.keyuri import parse_key_uri
from shared.runbooks import RevokeRequest
from tests.app.estate import key_client
from tests.app.test_runbooks import Rig, rig_for
from tests.memory_journal import MemoryJournal

READER = encode_principal("33333333-cccc-4000-8000-000000000003", name="Rita", roles=(ROLE_READ,))
NOBODY = encode_principal("55555555-eeee-4000-8000-000000000005", name="Nina")
FUNCTION_KEY = "fk-0123456789-secret"
HOSTILE = '<script>alert("x")</script>&"'


def http(route: str, *, principal: str | None = READER, params: dict[str, str] | None = None,
         route_params: dict[str, str] | None = None) -> func.HttpRequest:
    headers = {"x-functions-key": FUNCTION_KEY}
    if principal is not None:
        headers["X-MS-CLIENT-PRINCIPAL"] = principal
    return func.HttpRequest(method="GET", url=f"https://keysteward.azurewebsites.net/api/{route}", headers=headers,
                            params={"code": FUNCTION_KEY, **(params or {})}, route_params=route_params or {}, body=b"")


class Tags(HTMLParser):
    """Collects what a person or a screen reader relies on: labels, controls, scripts, links."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.external: list[str] = []
        self.lang: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))
        if tag in ("select", "textarea") or (tag == "input" and a.get("type") != "hidden"):
            self.controls.append(a)
        if tag == "script":
            self.scripts.append(a)
        for name in ("src", "href", "action"):
            value = a.get(name) or ""
            if re.match(r"^(https?:)?//", value):
                self.external.append(value)


def parse(text: str) -> Tags:
    tags = Tags()
    tags.feed(text)
    return tags


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    world = World()
    made = rig_for(world, MemoryJournal(world.clock), KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true")
    # A second key in the vault, bound to nothing: the estate still names it.
    key_client(world, made.estate.vault_url).create_rsa_key("cmk-spare", size=2048)
    root.install(made.app)
    yield made
    root.install(None)


def test_without_a_principal_every_page_answers_401_like_the_api(rig: Rig) -> None:
    for fn, route, params, route_params in [
        (ui_estate, "ui", {}, {}),
        (ui_key, "ui/key", {"key": rig.estate.key_uri}, {}),
        (ui_blast_radius, "ui/blast-radius", {"key": rig.estate.key_uri, "mode": "disable"}, {}),
        (ui_run, "ui/runs/r1", {}, {"id": "r1"}),
    ]:
        resp = fn(http(route, principal=None, params=params, route_params=route_params))
        assert resp.status_code == 401
        assert resp.mimetype == "application/json"
        assert json.loads(resp.get_body())["error"]["code"] == "Unauthorized"
    resp = ui_estate(http("ui", principal=NOBODY))
    assert resp.status_code == 403


def test_the_estate_names_every_key_in_scope_as_html(rig: Rig) -> None:
    resp = ui_estate(http("ui"))
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    text = resp.get_body().decode()
    for name in ("cmk", "cmk-spare"):
        assert f">{name}</a>" in text
    assert re.search(r'class="badge warn">updating</span>&nbsp;\d+', text)  # the rig rotated: bindings trail
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce is not None
    tags = parse(text)
    assert tags.lang == "en"
    assert tags.scripts and all(s.get("nonce") == nonce.group(1) and not s.get("src") for s in tags.scripts)
    assert tags.external == []  # no CDN, nothing fetched from elsewhere
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


def test_no_secret_or_token_is_written_into_any_page(rig: Rig) -> None:
    key = parse_key_uri(rig.estate.key_uri, allowed_vaults=None)
    view = rig.app.runbooks.revoke(RevokeRequest(key=key, mode="disable", reason="drill", ticket="T-1"),
                                        Principal("oid-1", "Alice", frozenset({ROLE_READ, ROLE_REVOKE})))
    pages = [
        ui_estate(http("ui")),
        ui_key(http("ui/key", params={"key": rig.estate.key_uri})),
        ui_blast_radius(http("ui/blast-radius", params={"key": rig.estate.key_uri, "mode": "remove-access"})),
        ui_run(http(f"ui/runs/{view.run.run_id}", route_params={"id": view.run.run_id})),
    ]
    for resp in pages:
        assert resp.status_code == 200, resp.get_body()[:500]
        text = resp.get_body().decode()
        assert FUNCTION_KEY not in text
        assert "sandbox-token" not in text
        assert READER not in text
        assert "code=" not in text  # links carry no function key; the page's script adds its own


def test_the_key_page_shows_versions_bindings_verdicts_and_a_labelled_dry_run_form(rig: Rig) -> None:
    resp = ui_key(http("ui/key", params={"key": rig.estate.key_uri}))
    assert resp.status_code == 200
    text = resp.get_body().decode()
    versions = [p.version for p in rig.estate.keys.list_properties_of_key_versions(rig.estate.key_name)]
    for v in versions:
        assert v in text
    assert 'class="timeline"' in text
    assert "Retention: kept" in text  # the current version is never disabled
    assert "is the key&#x27;s current version" in text
    for _sub, name in rig.estate.clusters:
        assert name in text
    tags = parse(text)
    assert tags.controls and all(c.get("id") in tags.labels for c in tags.controls)


def test_everything_shown_is_escaped(rig: Rig) -> None:
    key = parse_key_uri(rig.estate.key_uri, allowed_vaults=None)
    view = rig.app.runbooks.revoke(RevokeRequest(key=key, mode="disable", reason=HOSTILE, ticket=HOSTILE),
                                        Principal("oid-1", HOSTILE, frozenset({ROLE_READ, ROLE_REVOKE})))
    for resp in (ui_run(http(f"ui/runs/{view.run.run_id}", route_params={"id": view.run.run_id})),
                 ui_estate(http("ui")), ui_key(http("ui/key", params={"key": rig.estate.key_uri}))):
        text = resp.get_body().decode()
        assert "<script>alert" not in text
    run_text = ui_run(http(f"ui/runs/{view.run.run_id}", route_params={"id": view.run.run_id})).get_body().decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;" in run_text


def test_bad_input_is_refused_with_the_api_error(rig: Rig) -> None:
    cases = [
        (ui_key, http("ui/key", params={"key": "https://evil.vault.azure.net/keys/x"})),
        (ui_key, http("ui/key", params={"key": rig.estate.key_uri, "extra": "1"})),
        (ui_blast_radius, http("ui/blast-radius", params={"key": rig.estate.key_uri, "mode": "explode"})),
        (ui_run, http("ui/runs/x", params={"part": "all"}, route_params={"id": "x"})),
    ]
    for fn, req in cases:
        resp = fn(req)
        assert resp.status_code == 400, resp.get_body()
        assert json.loads(resp.get_body())["error"]["code"] == "BadRequest"
    resp = ui_run(http("ui/runs/nope", route_params={"id": "nope"}))
    assert resp.status_code == 404
    resp = ui_key(http("ui/key", params={"key": rig.estate.vault_url + "/keys/no-such-key"}))
    assert resp.status_code == 404
    assert json.loads(resp.get_body())["error"]["code"] == "NotFound"


def test_the_blast_radius_page_is_the_dry_run_and_changes_nothing(rig: Rig) -> None:
    before = {p.version: p.enabled for p in rig.estate.keys.list_properties_of_key_versions(rig.estate.key_name)}
    resp = ui_blast_radius(http("ui/blast-radius", params={"key": rig.estate.key_uri, "mode": "disable"}))
    assert resp.status_code == 200
    text = resp.get_body().decode()
    doc = rig.app.runbooks.plan(parse_key_uri(rig.estate.key_uri, allowed_vaults=None), "disable")
    assert f"<strong>{doc['summary']['affected']}</strong> binding(s) reached" in text
    for b in doc["bindings"]:
        assert b["resourceId"] in text
    after = {p.version: p.enabled for p in rig.estate.keys.list_properties_of_key_versions(rig.estate.key_name)}
    assert before == after


def test_the_run_page_refreshes_only_until_the_run_is_finished(rig: Rig) -> None:
    key = parse_key_uri(rig.estate.key_uri, allowed_vaults=None)
    books = rig.app.runbooks
    view = books.revoke(RevokeRequest(key=key, mode="disable", reason="drill", ticket="T-1"),
                        Principal("oid-1", "Alice", frozenset({ROLE_READ, ROLE_REVOKE})))
    live = ui_run(http(f"ui/runs/{view.run.run_id}", params={"part": "live"}, route_params={"id": view.run.run_id}))
    text = live.get_body().decode()
    assert 'data-finished="false"' in text and "<html" not in text
    for step in ("resolve", "snapshot", "act"):
        assert f'<th scope="row">{step}</th><td><span class="badge ok">succeeded</span>' in text
