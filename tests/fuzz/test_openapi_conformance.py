"""schemathesis against the app served over real HTTP, from the published OpenAPI document.

The development host (``sandbox.host.DevHost``) serves ``function_app.py``'s HTTP functions on
a free loopback port, in this process, with the function key checked as the Functions host
does; the app behind it works against the in-process sandbox (an estate in the vault the
document's examples name). schemathesis loads ``docs/openapi.yaml`` and, for every operation,
sends the documented examples and then generated requests (valid and invalid by the
document), with the function key and a trusted ``X-MS-CLIENT-PRINCIPAL``; each answer must not
be a server error and must match the document (status, content type, body schema).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import functions._root as root
from sandbox.host import DevHost, FunctionSpec, HostConfig, HostKeys, HttpTriggerSpec, load_functions
from sandbox.world import World
from shared.app import build
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, encode_principal
from shared.config import load_settings
from shared.notify import RecordingNotifier
from shared.workqueue import MemoryQueue
from tests.app.estate import key_client, make_cluster, make_vault
from tests.functionapp import fresh_function_app
from tests.memory_journal import MemoryJournal

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "docs" / "openapi.yaml"
FUNCTION_KEY = "function-key-for-schemathesis"
KEYS = HostKeys(function=FUNCTION_KEY, master="master-key-for-schemathesis", eventgrid="eventgrid-key-for-schemathesis")
CALLER = encode_principal(
    "11111111-2222-3333-4444-555555555555", name="oncall", roles=(ROLE_READ, ROLE_REVOKE, ROLE_RESTORE)
)
# What load_functions needs to accept the app's timer and queue triggers (only HTTP is served).
TRIGGER_SETTINGS = {
    "KEYSTEWARD_ROTATION_SCHEDULE": "0 0 3 * * *",
    "KEYSTEWARD_RECONCILE_SCHEDULE": "0 */15 * * * *",
    "KEYSTEWARD_WORK_QUEUE": "keysteward-work",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}
EXAMPLES_PER_OPERATION = 60

schema = schemathesis.openapi.from_path(SPEC)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES_PER_OPERATION,
    with_security_parameters=False,  # the key and the principal are supplied by the test
    deterministic=True,
)
# The coverage phase also tries methods the routes do not take. The development host answers
# the common ones 405 (as the Functions host does); TRACE and QUERY its HTTP server answers 501
# itself, before any routing: those two are left out.
schema.config.phases.coverage.unexpected_methods = {"get", "put", "post", "delete", "patch", "options"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@functools.cache
def http_functions() -> list[FunctionSpec]:
    """The app's HTTP functions (the app's functions can be listed once per process)."""
    functions = load_functions(fresh_function_app(), environ=TRIGGER_SETTINGS)
    return [f for f in functions if isinstance(f.trigger, HttpTriggerSpec)]


def _estate(world: World) -> str:
    """The vault, key and bound cluster the document's examples name; returns the vault URL."""
    sub = world.subscriptions[0]
    vault_url = make_vault(world, sub, "kv-contoso-prod-weu")
    version = key_client(world, vault_url).create_rsa_key("cmk-adx", size=2048).properties.version
    make_cluster(
        world,
        sub,
        "adxcontoso",
        vault_url=vault_url,
        key="cmk-adx",
        version=str(version),
        grant_in=(sub, "kv-contoso-prod-weu"),
    )
    return vault_url


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    """The base URL (``http://127.0.0.1:PORT/api``) of the app, served until the module ends."""
    from sandbox.transport import SandboxTransport, StaticTokenCredential

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WEBSITE_AUTH_ENABLED", raising=False)
        world = World()
        vault_url = _estate(world)
        settings_ = load_settings(
            {
                "KEYSTEWARD_SUBSCRIPTIONS": ",".join(world.subscriptions),
                "KEYSTEWARD_VAULTS": vault_url,
                "KEYSTEWARD_TRUST_PRINCIPAL_HEADER": "true",
            }
        )
        app = build(
            settings_,
            clock=world.clock,
            transport_factory=lambda: SandboxTransport(world),
            credential=StaticTokenCredential(),
            notifier=RecordingNotifier(),
            queue=MemoryQueue(),
            polling_interval=0,
            journal=MemoryJournal(world.clock),
        )
        root.install(app)
        host = DevHost(http_functions(), keys=KEYS, config=HostConfig(), port=0)
        with host:
            yield f"{host.url}/api"
        root.install(None)


@schema.parametrize()
@settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)  # no shrinking: keeps the run bounded
def test_the_api_conforms_to_its_openapi_document(api: str, case: schemathesis.Case) -> None:
    case.call_and_validate(
        base_url=api,
        headers={"x-functions-key": FUNCTION_KEY, "X-MS-CLIENT-PRINCIPAL": CALLER},
        checks=CHECKS,
        timeout=30,
    )


def test_the_document_lists_every_http_route_of_the_app() -> None:
    routes = {
        (method, "/" + f.trigger.route)
        for f in http_functions()
        if isinstance(f.trigger, HttpTriggerSpec)
        for method in (f.trigger.methods or ())
    }
    documented = {(method.upper(), path) for path, item in schema.raw_schema["paths"].items() for method in item}
    assert routes == documented


@pytest.mark.parametrize("where", ["query", "header"])
def test_the_function_key_is_accepted_in_both_documented_places(api: str, where: str) -> None:
    import requests

    url, headers = f"{api}/runs", {"X-MS-CLIENT-PRINCIPAL": CALLER}
    if where == "query":
        url += f"?code={FUNCTION_KEY}&limit=5"
    else:
        headers["x-functions-key"] = FUNCTION_KEY
    resp = requests.get(url, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert isinstance(resp.json()["runs"], list)
    assert requests.get(f"{api}/runs", headers={"X-MS-CLIENT-PRINCIPAL": CALLER}, timeout=10).status_code == 401


def test_the_principal_header_is_required(api: str) -> None:
    import requests

    for principal in (None, "garbage", base64.b64encode(json.dumps({"claims": []}).encode()).decode()):
        headers = {"x-functions-key": FUNCTION_KEY}
        if principal is not None:
            headers["X-MS-CLIENT-PRINCIPAL"] = principal
        resp = requests.get(f"{api}/check", headers=headers, timeout=10)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "Unauthorized"
