"""Identity-based ``AzureWebJobsStorage``: the settings the Functions host reads, and the work
queue and run journal reaching Azurite over HTTPS with bearer tokens (``--oauth basic``), as
they reach a storage account whose shared-key access is off."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from sandbox.transport import SandboxTransport
from sandbox.world import World
from shared.app import Keysteward, build
from shared.config import load_settings
from shared.errors import ConfigError, KeystewardError
from shared.workqueue import WorkItem
from tests.azurite import Azurite, running_azurite

SUB = "00000000-0000-0000-0000-00000000a001"
VAULT = "https://kv-one.vault.azure.net"
STORAGE_SCOPE = "https://storage.azure.com/.default"


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


class JwtCredential:
    """Mints JWT-shaped tokens (unsigned: Azurite's basic OAuth checks format, lifetime, issuer
    and audience) and records the scopes asked for."""

    def __init__(self, *, lifetime_s: int = 3600) -> None:
        self.scopes: list[str] = []
        self._lifetime = lifetime_s

    def get_token(self, *scopes: str, **_kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        now = int(time.time())
        claims = {"aud": "https://storage.azure.com", "iss": "https://sts.windows.net/tenant-id/",
                  "iat": now - 120, "nbf": now - 120, "exp": now + self._lifetime, "oid": "app-identity"}
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.c2ln"
        return AccessToken(token, now + max(self._lifetime, 1))


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Azurite, Path]]:
    """Azurite over HTTPS with token checks; yields it and the CA bundle that trusts it."""
    folder = tmp_path_factory.mktemp("azurite-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    with running_azurite((cert_file, key_file)) as (ports, _proc):
        yield ports, ca_file


def settings_for(azurite: Azurite, **extra: str) -> Any:
    return load_settings({
        "KEYSTEWARD_SUBSCRIPTIONS": SUB, "KEYSTEWARD_VAULTS": VAULT,
        "AzureWebJobsStorage__queueServiceUri": azurite.queue_uri,
        "AzureWebJobsStorage__tableServiceUri": azurite.table_uri,
        "KEYSTEWARD_WORK_QUEUE": "identity-work", "KEYSTEWARD_TABLE_PREFIX": "identity",
        **extra,
    })


def app_on(azurite: Azurite, credential: JwtCredential, **extra: str) -> Keysteward:
    """The app with identity-based storage on ``azurite``; Azure's other services are the sandbox."""
    world = World()
    return build(settings_for(azurite, **extra), clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                 credential=credential)


@pytest.fixture
def trusted(oauth_azurite: tuple[Azurite, Path], monkeypatch: pytest.MonkeyPatch) -> Azurite:
    """The HTTPS Azurite, its CA trusted by the storage clients for this test."""
    azurite, ca_file = oauth_azurite
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    return azurite


@pytest.mark.azurite
def test_queue_and_journal_reach_storage_with_the_apps_token(trusted: Azurite) -> None:
    azurite = trusted
    credential = JwtCredential()
    app = app_on(azurite, credential)

    app.queue.put(WorkItem("https://kv-one.vault.azure.net/keys/cmk", SUB), delay=timedelta(0))
    run = app.journal.create_run(kind="revoke", key="https://kv-one.vault.azure.net/keys/cmk", caller_oid="oid",
                                 caller_name="Ada", reason="test", ticket="T-1", params={"mode": "disable"})

    assert set(credential.scopes) == {STORAGE_SCOPE}  # storage was reached by token, for storage only
    reader = QueueClient.from_connection_string(azurite.connection_string, "identity-work",
                                                message_decode_policy=TextBase64DecodePolicy())
    [message] = list(reader.receive_messages())
    assert WorkItem.from_json(message.content).key == "https://kv-one.vault.azure.net/keys/cmk"
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    stored = tables.get_table_client("identityruns").query_entities("PartitionKey eq @pk and RunId eq @id",
                                                                 parameters={"pk": "run", "id": run.run_id})
    assert [e["Ticket"] for e in stored] == ["T-1"]


@pytest.mark.azurite
def test_an_expired_token_is_refused_and_nothing_is_enqueued(trusted: Azurite) -> None:
    azurite = trusted
    app = app_on(azurite, JwtCredential(lifetime_s=-600), KEYSTEWARD_WORK_QUEUE="identity-expired")

    with pytest.raises(KeystewardError):
        app.queue.put(WorkItem("https://kv-one.vault.azure.net/keys/cmk", SUB))
    reader = QueueClient.from_connection_string(azurite.connection_string, "identity-expired")
    with pytest.raises(ResourceNotFoundError):
        reader.get_queue_properties()


# ---- the settings --------------------------------------------------------------------------------

BASE = {"KEYSTEWARD_SUBSCRIPTIONS": SUB, "KEYSTEWARD_VAULTS": VAULT}


def test_account_name_gives_the_public_cloud_endpoints() -> None:
    settings = load_settings({**BASE, "AzureWebJobsStorage__accountName": "stkeysteward01",
                              "AzureWebJobsStorage__credential": "managedidentity",
                              "AzureWebJobsStorage__clientId": "ABC", "AZURE_CLIENT_ID": "abc"})
    assert settings.storage_queue_uri == "https://stkeysteward01.queue.core.windows.net"
    assert settings.storage_table_uri == "https://stkeysteward01.table.core.windows.net"
    assert settings.storage_connection is None and settings.has_storage


def test_explicit_service_uris_win_over_the_account_name() -> None:
    settings = load_settings({**BASE, "AzureWebJobsStorage__accountName": "stkeysteward01",
                              "AzureWebJobsStorage__queueServiceUri": "https://q.example.net/",
                              "AzureWebJobsStorage__tableServiceUri": "https://t.example.net"})
    assert (settings.storage_queue_uri, settings.storage_table_uri) == ("https://q.example.net", "https://t.example.net")


def test_no_storage_settings_means_no_storage() -> None:
    settings = load_settings(BASE)
    assert not settings.has_storage and settings.storage_queue_uri is None


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"AzureWebJobsStorage__accountName": "Bad_Name"}, "not a storage account name"),
    ({"AzureWebJobsStorage__accountName": "ab"}, "not a storage account name"),
    ({"AzureWebJobsStorage__queueServiceUri": "https://q.example.net"}, "both __queueServiceUri"),
    ({"AzureWebJobsStorage__queueServiceUri": "http://q.example.net",
      "AzureWebJobsStorage__tableServiceUri": "https://t.example.net"}, "https:// service URI"),
    ({"AzureWebJobsStorage__accountName": "stkeysteward01", "AzureWebJobsStorage__credential": "connectionstring"},
     "only 'managedidentity'"),
    ({"AzureWebJobsStorage__accountName": "stkeysteward01", "AzureWebJobsStorage__clientId": "other",
      "AZURE_CLIENT_ID": "mine"}, "another identity"),
])
def test_bad_identity_settings_are_refused_with_the_setting_named(extra: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match="AzureWebJobsStorage") as caught:
        load_settings({**BASE, **extra})
    assert fragment in str(caught.value)
