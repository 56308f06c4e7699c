"""Azure Cosmos DB for PostgreSQL clusters (``Microsoft.DBforPostgreSQL/serverGroupsv2``).

Read at api-version 2023-03-02-preview, the only one whose schema has the key:
``specification/postgresqlhsc/resource-manager/Microsoft.DBforPostgreSQL/PostgresqlHsc/preview/
2023-03-02-preview/postgresqlhsc.json`` ``ClusterProperties.dataEncryption`` =
``{primaryKeyUri, primaryUserAssignedIdentityId, type: AzureKeyVault | SystemAssigned}`` and the
resource's ``identity`` (example ``ClusterCreateWithCMK.json``). The stable 2022-11-08 has neither:
read at that version, a cluster shows no key at all. ``type: SystemAssigned`` means service-managed
keys (no binding). The product docs: the key is fixed at creation (changed only by a point-in-time
restore into a new cluster), user-assigned identity only, RSA 2048/3072/4096, and the vault needs
90-day deleted-vault retention.
"""

from __future__ import annotations

from typing import ClassVar

from shared.model import ServiceType
from shared.targets.base import JsonObj
from shared.targets.readonly import ReadOnlyArmTarget


class PostgresTarget(ReadOnlyArmTarget):
    service = ServiceType.POSTGRES
    arm_type: ClassVar[str] = "Microsoft.DBforPostgreSQL/serverGroupsv2"
    api_version: ClassVar[str] = "2023-03-02-preview"
    arm_types: ClassVar[tuple[str, ...]] = ("microsoft.dbforpostgresql/servergroupsv2",)
    vault_retention_days: ClassVar[int | None] = 90  # product docs: 90-day deleted-vault retention

    def key_of(self, properties: JsonObj) -> tuple[str | None, str | None]:
        enc = properties.get("dataEncryption")
        if not isinstance(enc, dict) or str(enc.get("type", "")).lower() != "azurekeyvault":
            return None, None
        return enc.get("primaryKeyUri"), enc.get("primaryUserAssignedIdentityId")
