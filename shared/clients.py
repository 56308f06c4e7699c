"""Builds the Azure SDK clients, pointed at Azure or at the sandbox.

The one place that knows endpoints, credentials and transports. In Azure: the managed
identity and the public endpoints. With ``KEYSTEWARD_SANDBOX``: the connection file's ARM
URL, CA bundle and any bearer token. In-process tests pass a ``transport_factory``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.pipeline.transport import HttpTransport
from azure.keyvault.keys import KeyClient
from azure.mgmt.cosmosdb import CosmosDBManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.kusto import KustoManagementClient
from azure.mgmt.resourcegraph import ResourceGraphClient

from shared.config import Settings
from shared.metrics import ArmCallMeter

ARM_URL = "https://management.azure.com"
ARM_SCOPES = ("https://management.azure.com/.default",)


class StaticTokenCredential:
    """A fixed bearer token for the sandbox, which accepts any token. Never used against Azure."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # noqa: ARG002 - any scope: the sandbox
        return AccessToken("sandbox-token", int(time.time()) + 3600)


@dataclass
class ClientFactory:
    """Creates and caches one client per (kind, subscription or vault)."""

    credential: TokenCredential
    arm_url: str = ARM_URL
    credential_scopes: tuple[str, ...] = ARM_SCOPES
    connection_verify: str | bool = True
    transport_factory: Callable[[], HttpTransport[Any, Any]] | None = None
    polling_interval: float = 30.0
    # Sandbox vaults listen on loopback ports, so the challenge resource cannot match the host.
    verify_challenge_resource: bool = True
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _common(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"connection_verify": self.connection_verify}
        if self.transport_factory is not None:
            kwargs["transport"] = self.transport_factory()
        return kwargs

    def _mgmt(self) -> dict[str, Any]:
        return {
            **self._common(),
            "base_url": self.arm_url,
            "credential_scopes": list(self.credential_scopes),
            "polling_interval": self.polling_interval,
            "custom_hook_policy": ArmCallMeter(),  # ARM calls and 429s per subscription (shared/metrics.py)
        }

    def _cached(self, kind: str, key: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            client = self._cache.get((kind, key))
            if client is None:
                client = self._cache[(kind, key)] = make()
            return client

    def kusto(self, subscription: str) -> KustoManagementClient:
        client: KustoManagementClient = self._cached(
            "kusto", subscription, lambda: KustoManagementClient(self.credential, subscription, **self._mgmt())
        )
        return client

    def cosmos(self, subscription: str) -> CosmosDBManagementClient:
        client: CosmosDBManagementClient = self._cached(
            "cosmos", subscription, lambda: CosmosDBManagementClient(self.credential, subscription, **self._mgmt())
        )
        return client

    def keyvault_mgmt(self, subscription: str) -> KeyVaultManagementClient:
        client: KeyVaultManagementClient = self._cached(
            "kvmgmt", subscription, lambda: KeyVaultManagementClient(self.credential, subscription, **self._mgmt())
        )
        return client

    def resource_graph(self) -> ResourceGraphClient:
        client: ResourceGraphClient = self._cached(
            "graph", "", lambda: ResourceGraphClient(self.credential, **self._mgmt())
        )
        return client

    def keys(self, vault_url: str) -> KeyClient:
        client: KeyClient = self._cached(
            "keys",
            vault_url,
            lambda: KeyClient(
                vault_url,
                self.credential,
                verify_challenge_resource=self.verify_challenge_resource,
                **self._common(),
            ),
        )
        return client

    def arm_pipeline_kwargs(self) -> dict[str, Any]:
        """Arguments for a generic ARM pipeline client (read-only reads of other providers)."""
        return self._mgmt()


def factory_for(settings: Settings, *, transport_factory: Callable[[], HttpTransport[Any, Any]] | None = None,
                credential: TokenCredential | None = None, polling_interval: float | None = None) -> ClientFactory:
    """The composition root's client factory for these settings."""
    conn = settings.sandbox_connection
    if conn is not None:
        return ClientFactory(
            credential=credential or StaticTokenCredential(),
            arm_url=conn.arm_url,
            credential_scopes=conn.credential_scopes,
            connection_verify=conn.ca_bundle,
            transport_factory=transport_factory,
            polling_interval=1.0 if polling_interval is None else polling_interval,
            verify_challenge_resource=False,
        )
    if credential is None:
        from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - only needed in Azure

        credential = DefaultAzureCredential()
    return ClientFactory(
        credential=credential,
        transport_factory=transport_factory,
        polling_interval=30.0 if polling_interval is None else polling_interval,
        verify_challenge_resource=True,
    )
