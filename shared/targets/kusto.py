"""Azure Data Explorer (Kusto) clusters: ``properties.keyVaultProperties``.

An update is a PATCH answered 202 and completed by a long-running operation; keysteward
starts it with ``polling=False`` (no poller thread per cluster) and confirms convergence on a
later pass by reading the cluster back (provisioningState and keyVersion).
"""

from __future__ import annotations

from typing import Any

from azure.mgmt.kusto.models import Cluster, ClusterProperties, ClusterUpdate, KeyVaultProperties

from shared.clients import ClientFactory
from shared.errors import NotFoundError
from shared.model import Binding, KeyRef, ServiceType
from shared.targets.base import (
    Health,
    UpdateStart,
    enum_text,
    expected_seconds,
    operation_recorder,
    resource_group_of,
    sdk,
    subscription_of,
)

# Cluster states that mean "not serving"; with a key-related stateReason they mean revoked.
_DOWN_STATES = {"unavailable", "stopped", "stopping"}


def _vault_url(uri: str) -> str:
    return uri.strip().rstrip("/").lower().removesuffix(":443")


def _binding(cluster: Cluster) -> Binding | None:
    kvp = cluster.key_vault_properties
    if kvp is None or not kvp.key_vault_uri or not kvp.key_name:
        return None
    rid = cluster.id or ""
    principal: str | None = None
    identity: Any = cluster.identity
    if kvp.user_identity and identity is not None and identity.user_assigned_identities:
        for uid, info in identity.user_assigned_identities.items():
            if uid.lower() == kvp.user_identity.lower():
                principal = info.principal_id
    elif identity is not None:
        principal = identity.principal_id
    version = (kvp.key_version or "").strip().lower() or None
    return Binding(
        resource_id=rid,
        service=ServiceType.KUSTO,
        subscription=subscription_of(rid),
        resource_group=resource_group_of(rid),
        name=cluster.name or "",
        location=cluster.location or "",
        key=KeyRef(_vault_url(kvp.key_vault_uri), kvp.key_name),
        pinned_version=version,
        # A pinned cluster uses its pinned version; a versionless one does not report which.
        in_use_version=version,
        updatable=True,
        principal_id=principal,
        user_identity=kvp.user_identity or None,
        provisioning_state=enum_text(cluster.provisioning_state),
        state=enum_text(cluster.state),
        health=cluster.state_reason,
        tags=dict(cluster.tags or {}),
    )


class KustoTarget:
    service = ServiceType.KUSTO
    updatable = True

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    def list_bindings(self, subscription: str) -> list[Binding]:
        with sdk(f"list Kusto clusters in {subscription}"):
            clusters = list(self._clients.kusto(subscription).clusters.list())
        return [b for c in clusters if (b := _binding(c)) is not None]

    def get_binding(self, resource_id: str) -> Binding | None:
        sub, rg, name = subscription_of(resource_id), resource_group_of(resource_id), resource_id.rsplit("/", 1)[-1]
        try:
            with sdk(f"get Kusto cluster {name}"):
                cluster = self._clients.kusto(sub).clusters.get(rg, name)
        except NotFoundError:
            return None
        return _binding(cluster)

    def start_update(self, binding: Binding, version: str) -> UpdateStart:
        update = ClusterUpdate(
            properties=ClusterProperties(
                key_vault_properties=KeyVaultProperties(
                    key_name=binding.key.name,
                    key_version=version,
                    key_vault_uri=binding.key.vault_url + "/",
                    user_identity=binding.user_identity,
                )
            )
        )
        seen, hook = operation_recorder()
        with sdk(f"update Kusto cluster {binding.name} to {version}"):
            self._clients.kusto(binding.subscription).clusters.begin_update(
                binding.resource_group, binding.name, update, polling=False, raw_response_hook=hook
            )
        return UpdateStart(binding, version, seen.get("operation"), expected_seconds(seen))

    def health(self, binding: Binding) -> str:
        state = (binding.state or "").lower()
        if state == "running":
            return Health.OK
        if state in _DOWN_STATES and binding.health:
            return Health.REVOKED
        return Health.UNKNOWN
