"""What a general-purpose Azure client needs before its first resource call, served on loopback:
the managed-identity endpoint (sandbox.identity) and the tenant-level ARM endpoints
(sandbox.cloud). The Azure CLI itself runs in ``make az-check``; here the app's own
azure-identity client and raw HTTP check the same endpoints in every CI run."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import requests
from azure.identity import ManagedIdentityCredential

from sandbox.identity import API_VERSION, IdentityEndpoint
from sandbox.server import SandboxServer
from sandbox.world import World

pytestmark = pytest.mark.loopback

PRINCIPAL = "5b1c3a6e-8f0d-4c39-9a51-2f4e7d6c8b90"
CLIENT = "0f6c2d4e-1b3a-4c5d-8e7f-9a0b1c2d3e4f"


@pytest.fixture
def identity() -> Iterator[IdentityEndpoint]:
    with IdentityEndpoint(tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47", principal_id=PRINCIPAL, client_id=CLIENT) as ep:
        yield ep


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(World(seed=5), workdir=tmp_path_factory.mktemp("az-endpoints")) as srv:
        yield srv


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def test_app_service_managed_identity_credential_gets_a_token(
    identity: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in identity.env().items():
        monkeypatch.setenv(name, value)
    token = ManagedIdentityCredential().get_token("https://management.azure.com/.default")
    claims = _claims(token.token)
    assert claims["aud"] == "https://management.azure.com"
    assert claims["tid"] == identity.tenant_id
    assert claims["oid"] == PRINCIPAL
    assert claims["appid"] == CLIENT
    assert token.expires_on > claims["iat"]  # type: ignore[operator]
    assert identity.tokens_issued == 1


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        ({}, {"api-version": API_VERSION, "resource": "https://vault.azure.net"}, 401),
        ({"X-IDENTITY-HEADER": "wrong"}, {"api-version": API_VERSION, "resource": "https://vault.azure.net"}, 401),
        (None, {"api-version": "2017-09-01", "resource": "https://vault.azure.net"}, 400),
        (None, {"api-version": API_VERSION}, 400),
    ],
)
def test_identity_endpoint_refuses_bad_requests(
    identity: IdentityEndpoint, headers: dict[str, str] | None, params: dict[str, str], status: int
) -> None:
    sent = {"X-IDENTITY-HEADER": identity.header} if headers is None else headers
    got = requests.get(identity.url, params=params, headers=sent, timeout=10)
    assert got.status_code == status
    assert "access_token" not in got.json()
    assert identity.tokens_issued == 0


def test_cloud_metadata_points_every_called_endpoint_at_the_sandbox(server: SandboxServer) -> None:
    # The Azure CLI appends the path to the endpoint it was given, slash included.
    got = requests.get(f"{server.arm_url}//metadata/endpoints?api-version=2022-09-01", verify=server.ca_bundle, timeout=10)
    assert got.status_code == 200
    doc = got.json()
    for called in (doc["resourceManager"], doc["authentication"]["loginEndpoint"], doc["portal"], doc["gallery"]):
        assert called.rstrip("/") == server.arm_url
    assert doc["authentication"]["audiences"][0] == "https://management.core.windows.net/"
    assert doc["suffixes"]["keyVaultDns"] == "vault.azure.net"


def test_subscriptions_and_tenants_list_the_worlds(server: SandboxServer) -> None:
    world = server.world
    subs = requests.get(f"{server.arm_url}/subscriptions?api-version=2022-12-01", verify=server.ca_bundle, timeout=10)
    assert subs.status_code == 200
    assert [s["subscriptionId"] for s in subs.json()["value"]] == world.subscriptions
    assert {s["tenantId"] for s in subs.json()["value"]} == {world.tenant_id}
    assert all(s["state"] == "Enabled" and s["id"] == f"/subscriptions/{s['subscriptionId']}" for s in subs.json()["value"])
    one = requests.get(f"{server.arm_url}/subscriptions/{world.subscriptions[0]}?api-version=2022-12-01",
                       verify=server.ca_bundle, timeout=10)
    assert one.json()["subscriptionId"] == world.subscriptions[0]
    missing = requests.get(f"{server.arm_url}/subscriptions/00000000-0000-0000-0000-0000000000ff?api-version=2022-12-01",
                           verify=server.ca_bundle, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "SubscriptionNotFound"
    tenants = requests.get(f"{server.arm_url}/tenants?api-version=2022-12-01", verify=server.ca_bundle, timeout=10)
    assert [t["tenantId"] for t in tenants.json()["value"]] == [world.tenant_id]
    no_version = requests.get(f"{server.arm_url}/subscriptions", verify=server.ca_bundle, timeout=10)
    assert no_version.status_code == 400
