"""Azure Data Manager for Energy (``Microsoft.OpenEnergyPlatform/energyServices``).

Read at api-version 2024-05-21 (``specification/oep/resource-manager/Microsoft.OpenEnergyPlatform/
stable/2024-05-21/oep.json``): ``EnergyServiceProperties.encryption`` = ``{keySource:
"Microsoft.Keyvault", keyVaultProperties: {keyName, keyVersion, keyVaultUri, userIdentity}}``
(``KeyVaultProperties`` requires keyName and keyVaultUri; ``userIdentity`` is the user-assigned
identity's resource id). 2022-12-01-preview and 2023-11-12 have the same shape.

2024-05-21 also lists ``encryption`` in ``EnergyServiceUpdateProperties`` (a PATCH may carry a
key), whereas the product document says "You cannot edit CMK settings once the Microsoft Energy
Data Services instance is created". keysteward follows the product document: it never writes to
an Energy instance; it protects the version the instance names (a versionless instance's version
in use is unknown, so every enabled version stays protected). Identity needs get, list, wrapKey,
unwrapKey (product document); RSA 3072 recommended.
"""

from __future__ import annotations

from typing import ClassVar

from shared.model import ServiceType
from shared.targets.base import JsonObj
from shared.targets.readonly import ReadOnlyArmTarget


class EnergyTarget(ReadOnlyArmTarget):
    service = ServiceType.ENERGY
    arm_type: ClassVar[str] = "Microsoft.OpenEnergyPlatform/energyServices"
    api_version: ClassVar[str] = "2024-05-21"
    arm_types: ClassVar[tuple[str, ...]] = ("microsoft.openenergyplatform/energyservices",)
    recommended_key_size: ClassVar[int | None] = 3072
    vault_permissions: ClassVar[tuple[str, ...]] = ("get", "list", "wrapKey", "unwrapKey")

    def key_of(self, properties: JsonObj) -> tuple[str | None, str | None]:
        enc = properties.get("encryption")
        kvp = enc.get("keyVaultProperties") if isinstance(enc, dict) else None
        if not isinstance(kvp, dict) or not kvp.get("keyVaultUri") or not kvp.get("keyName"):
            return None, None
        uri = f"{str(kvp['keyVaultUri']).strip().rstrip('/')}/keys/{kvp['keyName']}"
        if kvp.get("keyVersion"):
            uri += f"/{kvp['keyVersion']}"
        return uri, kvp.get("userIdentity")
