"""Azure Data Explorer databases with their own key: ``ReadWriteDatabaseProperties.keyVaultProperties``.

Shapes follow ``specification/azure-kusto/resource-manager/Microsoft.Kusto/stable/2024-04-13/kusto.json``
(``ReadWriteDatabase``, kind ``ReadWrite``; ``ReadWriteDatabaseProperties.keyVaultProperties`` and the
read-only ``suspensionDetails``) and azure-mgmt-kusto 4.0.0 (api-version 2025-02-14). A database
without ``keyVaultProperties`` uses its cluster's key and is covered by the cluster's binding;
follower (``ReadOnlyFollowing``) databases have no key of their own.

ARM lists databases per cluster only (``Databases_ListByCluster``), so the list path reads each
cluster's databases, one call per cluster, in order (sequential on purpose: request order stays
deterministic for the sandbox's seeded faults; large estates use the Resource Graph path);
Resource Graph returns them as ``microsoft.kusto/clusters/databases`` rows.
A database uses its key through its cluster's identity (``userIdentity`` names one of the
cluster's user-assigned identities, empty means the cluster's system identity), so its
``principal_id`` is resolved from the cluster: a remove-access revocation must reach it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from azure.mgmt.kusto.models import Cluster, Database, Kind, ReadWriteDatabase, ReadWriteDatabaseProperties

from shared.clients import ClientFactory
from shared.errors import NotFoundError
from shared.model import Binding, ServiceType
from shared.targets.base import (
    CMK_PERMISSIONS,
    Health,
    JsonObj,
    UpdateStart,
    enum_text,
    expected_seconds,
    name_of,
    operation_recorder,
    parent_name_of,
    resource_group_of,
    sdk,
    subscription_of,
)
from shared.targets.kusto import KUSTO_KEY_SIZES, KustoTarget, kvp_binding, kvp_update

# The one field of SuspensionDetails (kusto.json 2024-04-13) is suspensionStartDate; its presence is
# the documented sign that the database is suspended, which for a database with its own key is
# what losing that key does (Data Explorer CMK docs). Health reads that structure, not any text.
SUSPENDED = "suspended"


def _cluster_id(database_id: str) -> str:
    return database_id.rstrip("/").rsplit("/", 2)[0]


def _binding(db: Database, cluster_identity: Any) -> Binding | None:
    if not isinstance(db, ReadWriteDatabase) or db.properties is None:
        return None
    props = db.properties
    rid = db.id or ""
    suspension = props.suspension_details
    return kvp_binding(
        rid=rid,
        service=ServiceType.KUSTO_DATABASE,
        name=db.name or "",
        location=db.location or "",
        kvp=props.key_vault_properties,
        identity=cluster_identity,
        provisioning_state=enum_text(props.provisioning_state),
        state=SUSPENDED if suspension is not None else None,
        health=(f"suspended since {suspension.suspension_start_date}" if suspension is not None else None),
        access_revoked=False,
        tags={},
    )


class KustoDatabaseTarget:
    service = ServiceType.KUSTO_DATABASE
    updatable = True
    arm_types: ClassVar[tuple[str, ...]] = ("microsoft.kusto/clusters/databases",)
    reports_key_status: ClassVar[bool] = True  # suspensionDetails
    # The database-level CMK docs name no sizes of their own; the cluster's rule (RSA 2048) is assumed.
    key_sizes: ClassVar[frozenset[int]] = KUSTO_KEY_SIZES
    recommended_key_size: ClassVar[int | None] = None
    vault_permissions: ClassVar[tuple[str, ...]] = CMK_PERMISSIONS
    vault_same_region: ClassVar[bool] = True  # the cluster's rule (the database lives in its cluster)
    vault_retention_days: ClassVar[int | None] = None

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients
        self._clusters = KustoTarget(clients)

    def list_bindings(self, subscription: str) -> list[Binding]:
        out: list[Binding] = []
        client = self._clients.kusto(subscription)
        for cluster in self._clusters.list_clusters(subscription):
            rg, name = resource_group_of(cluster.id or ""), cluster.name or ""
            with sdk(f"list databases of Kusto cluster {name}"):
                databases = list(client.databases.list_by_cluster(rg, name))
            out.extend(b for d in databases if (b := _binding(d, cluster.identity)) is not None)
        return out

    def bindings_from_row(self, row: JsonObj, rows: Mapping[str, JsonObj]) -> list[Binding]:
        if str(row.get("kind", "")).lower() != "readwrite":
            return []
        parent = rows.get(_cluster_id(str(row.get("id", ""))).lower())
        b = _binding(ReadWriteDatabase(row), Cluster(parent).identity if parent is not None else None)
        return [b] if b is not None else []

    def get_binding(self, resource_id: str) -> Binding | None:
        sub, rg = subscription_of(resource_id), resource_group_of(resource_id)
        cluster, name = parent_name_of(resource_id), name_of(resource_id)
        client = self._clients.kusto(sub)
        try:
            with sdk(f"get Kusto database {cluster}/{name}"):
                db = client.databases.get(rg, cluster, name)
                parent = client.clusters.get(rg, cluster)
        except NotFoundError:
            return None
        return _binding(db, parent.identity)

    def start_update(self, binding: Binding, version: str) -> UpdateStart:
        cluster, name = parent_name_of(binding.resource_id), name_of(binding.resource_id)
        update = ReadWriteDatabase(
            location=binding.location or None,
            properties=ReadWriteDatabaseProperties(key_vault_properties=kvp_update(binding, version)),
        )
        # kind is the required discriminator of Database (kusto.json); the 4.0.0 model does not set it itself.
        update.kind = Kind.READ_WRITE
        seen, hook = operation_recorder()
        with sdk(f"update Kusto database {cluster}/{name} to {version}"):
            self._clients.kusto(binding.subscription).databases.begin_update(
                binding.resource_group, cluster, name, update, polling=False, raw_response_hook=hook
            )
        return UpdateStart(binding, version, seen.get("operation"), expected_seconds(seen))

    def health(self, binding: Binding) -> str:
        if binding.state == SUSPENDED:
            return Health.REVOKED
        if (binding.provisioning_state or "").lower() == "succeeded":
            return Health.OK
        return Health.UNKNOWN
