"""Azure Data Explorer (Kusto) clusters: ``properties.keyVaultProperties``.

Shapes follow ``specification/azure-kusto/resource-manager/Microsoft.Kusto/stable/2024-04-13/kusto.json``
(``ClusterProperties.keyVaultProperties``, ``KeyVaultProperties``) and the installed
azure-mgmt-kusto 4.0.0, whose default api-version 2025-02-14 adds
``KeyVaultProperties.federatedIdentityClientId`` (cross-tenant CMK).

An update is a PATCH answered 202 and completed by a long-running operation; keysteward
starts it with ``polling=False`` (no poller thread per cluster) and confirms convergence on a
later pass by reading the cluster back (provisioningState and keyVersion). The update carries
every ``keyVaultProperties`` field the cluster had (key name, vault, user identity, federated
client id) and changes only ``keyVersion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from azure.mgmt.kusto.models import Cluster, ClusterProperties, ClusterUpdate, KeyVaultProperties

from shared.clients import ClientFactory
from shared.errors import NotFoundError
from shared.keyuri import norm_vault_url
from shared.model import Binding, KeyRef, ServiceType
from shared.targets.base import (
    CMK_PERMISSIONS,
    Health,
    JsonObj,
    UpdateStart,
    enum_text,
    expected_seconds,
    name_of,
    operation_recorder,
    resource_group_of,
    sdk,
    subscription_of,
)

# Cluster states that mean "not serving" (Kusto State enum, kusto.json 2024-04-13).
_DOWN_STATES = {"unavailable", "stopped", "stopping"}
# Which state a cluster shows when it loses its key is NOT documented: the product docs say ADX
# "suspends" the cluster and resumes it when access returns, the State enum has no Suspended
# member, and stateReason is free text. So a cluster counts as revoked only when it is down AND
# its stateReason speaks of the key; a down cluster with any other reason stays "unknown"
# (a revocation is then not confirmed, rather than confirmed wrongly). Undocumented text match.
_KEY_WORDS = ("key vault", "keyvault", "customer-managed key", "customer managed key", "encryption key")

# Data Explorer docs: "Only RSA keys of size 2048 are supported".
KUSTO_KEY_SIZES = frozenset({2048})


def vault_url(uri: str) -> str:
    """A Kusto ``keyVaultUri`` as keysteward's normalised vault URL (:func:`shared.keyuri.norm_vault_url`)."""
    return norm_vault_url(uri)


def speaks_of_key(reason: str | None) -> bool:
    text = (reason or "").lower()
    return any(word in text for word in _KEY_WORDS)


def kvp_binding(
    *,
    rid: str,
    service: ServiceType,
    name: str,
    location: str,
    kvp: KeyVaultProperties | None,
    identity: Any,
    provisioning_state: str | None,
    state: str | None,
    health: str | None,
    access_revoked: bool,
    tags: dict[str, str],
) -> Binding | None:
    """A binding from Kusto ``KeyVaultProperties`` (clusters and databases share the shape)."""
    if kvp is None or not kvp.key_vault_uri or not kvp.key_name:
        return None
    principal: str | None = None
    if kvp.user_identity and identity is not None and identity.user_assigned_identities:
        for uid, info in identity.user_assigned_identities.items():
            if uid.lower() == kvp.user_identity.lower():
                principal = info.principal_id
    elif identity is not None:
        principal = identity.principal_id
    version = (kvp.key_version or "").strip().lower() or None
    return Binding(
        resource_id=rid,
        service=service,
        subscription=subscription_of(rid),
        resource_group=resource_group_of(rid),
        name=name,
        location=location,
        key=KeyRef(vault_url(kvp.key_vault_uri), kvp.key_name),
        pinned_version=version,
        # A pinned resource uses its pinned version; a versionless one does not report which.
        in_use_version=version,
        updatable=True,
        principal_id=principal,
        user_identity=kvp.user_identity or None,
        provisioning_state=provisioning_state,
        state=state,
        health=health,
        access_revoked=access_revoked,
        federated_client_id=kvp.federated_identity_client_id or None,
        tags=tags,
    )


def kvp_update(binding: Binding, version: str) -> KeyVaultProperties:
    """The ``keyVaultProperties`` of an update: every field the resource had, only the version changed."""
    return KeyVaultProperties(
        key_name=binding.key.name,
        key_version=version,
        key_vault_uri=binding.key.vault_url + "/",
        user_identity=binding.user_identity,
        federated_identity_client_id=binding.federated_client_id,
    )


def _binding(cluster: Cluster) -> Binding | None:
    rid = cluster.id or ""
    return kvp_binding(
        rid=rid,
        service=ServiceType.KUSTO,
        name=cluster.name or "",
        location=cluster.location or "",
        kvp=cluster.key_vault_properties,
        identity=cluster.identity,
        provisioning_state=enum_text(cluster.provisioning_state),
        state=enum_text(cluster.state),
        health=cluster.state_reason,
        access_revoked=False,
        tags=dict(cluster.tags or {}),
    )


class KustoTarget:
    service = ServiceType.KUSTO
    updatable = True
    arm_types: ClassVar[tuple[str, ...]] = ("microsoft.kusto/clusters",)
    reports_key_status: ClassVar[bool] = True  # state + stateReason (see health)
    key_sizes: ClassVar[frozenset[int]] = KUSTO_KEY_SIZES
    recommended_key_size: ClassVar[int | None] = None
    vault_permissions: ClassVar[tuple[str, ...]] = CMK_PERMISSIONS
    vault_same_region: ClassVar[bool] = True  # Data Explorer docs: the vault in the cluster's region
    vault_retention_days: ClassVar[int | None] = None

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    def list_clusters(self, subscription: str) -> list[Cluster]:
        with sdk(f"list Kusto clusters in {subscription}"):
            return list(self._clients.kusto(subscription).clusters.list())

    def list_bindings(self, subscription: str) -> list[Binding]:
        return [b for c in self.list_clusters(subscription) if (b := _binding(c)) is not None]

    def bindings_from_row(self, row: JsonObj, rows: Mapping[str, JsonObj]) -> list[Binding]:  # noqa: ARG002
        b = _binding(Cluster(row))
        return [b] if b is not None else []

    def get_binding(self, resource_id: str) -> Binding | None:
        sub, rg, name = subscription_of(resource_id), resource_group_of(resource_id), name_of(resource_id)
        try:
            with sdk(f"get Kusto cluster {name}"):
                cluster = self._clients.kusto(sub).clusters.get(rg, name)
        except NotFoundError:
            return None
        return _binding(cluster)

    def start_update(self, binding: Binding, version: str) -> UpdateStart:
        update = ClusterUpdate(properties=ClusterProperties(key_vault_properties=kvp_update(binding, version)))
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
        if state in _DOWN_STATES and speaks_of_key(binding.health):
            return Health.REVOKED
        return Health.UNKNOWN
