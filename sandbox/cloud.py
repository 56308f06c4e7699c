"""Tenant-level ARM endpoints a general-purpose Azure client calls before any resource request.

The Azure CLI needs three things from a cloud it has never seen (``az cloud register``,
``az login``), none of them resource types:

* ``GET /metadata/endpoints?api-version=2022-09-01``: the cloud's endpoints. Not in
  azure-rest-api-specs; the keys served are the ones the Azure CLI's own mapper reads
  (``azure.cli.core.cloud._arm_to_cli_mapper``) with the values Azure's public cloud publishes,
  except that every endpoint a client would *call* (``resourceManager``, ``loginEndpoint``,
  ``portal``, ``gallery``) points at the sandbox's ARM listener. Audiences (token resources) keep
  their public values: they are names, not places.
* ``GET /subscriptions`` and ``GET /subscriptions/{subscriptionId}``: spec
  specification/resources/resource-manager/Microsoft.Resources/subscriptions/stable/2022-12-01/
  subscriptions.json (definitions ``SubscriptionListResult``, ``Subscription``,
  ``SubscriptionPolicies``). The policy values are the ones a pay-as-you-go subscription shows
  (guess: the sandbox has no offers).
* ``GET /tenants``: same spec file (``TenantListResult``, ``TenantIdDescription``).

Only the loopback server answers these (see ``sandbox.server``); the in-process transport serves
the keysteward code, which never calls them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sandbox.wire import JsonObj, Request, Response, error_response, json_response

if TYPE_CHECKING:
    from sandbox.world import World

CLOUD_NAME = "KeystewardSandbox"
_SUBSCRIPTION = re.compile(r"/subscriptions/(?P<sub>[^/]+)", re.IGNORECASE)


def metadata(arm_url: str) -> JsonObj:
    """The cloud metadata document for a sandbox whose ARM listener is ``arm_url``."""
    arm = arm_url.rstrip("/") + "/"
    return {
        "name": CLOUD_NAME,
        "portal": arm,
        "gallery": arm,
        "resourceManager": arm,
        "authentication": {
            "loginEndpoint": arm,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "graphAudience": "https://graph.windows.net/",
        "microsoftGraphResourceId": "https://graph.microsoft.com/",
        "activeDirectoryDataLake": "https://datalake.azure.net/",
        "batch": "https://batch.core.windows.net/",
        "media": "https://rest.media.azure.net",
        "sqlManagement": "https://management.core.windows.net:8443/",
        "suffixes": {
            "keyVaultDns": "vault.azure.net",
            "mhsmDns": "managedhsm.azure.net",
            "storage": "core.windows.net",
            "sqlServerHostname": "database.windows.net",
            "acrLoginServer": "azurecr.io",
            "postgresqlServerEndpoint": "postgres.database.azure.com",
            "mysqlServerEndpoint": "mysql.database.azure.com",
            "mariadbServerEndpoint": "mariadb.database.azure.com",
            "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
            "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
        },
    }


def subscription_json(world: World, sub: str) -> JsonObj:
    """One ``Subscription`` (subscriptions.json 2022-12-01)."""
    return {
        "id": f"/subscriptions/{sub}",
        "subscriptionId": sub,
        "tenantId": world.tenant_id,
        "displayName": f"keysteward sandbox {sub[-4:]}",
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "tags": {},
    }


def handle(world: World, req: Request, *, arm_url: str) -> Response | None:
    """Answers the tenant-level endpoints above; ``None`` for every other request."""
    if req.method != "GET":
        return None
    path = "/" + req.path.strip("/")
    lowered = path.lower()
    if lowered == "/metadata/endpoints":
        return json_response(200, metadata(arm_url))
    if not req.query.get("api-version"):
        if lowered in ("/subscriptions", "/tenants") or _SUBSCRIPTION.fullmatch(path):
            return error_response(
                400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required."
            )
        return None
    if lowered == "/subscriptions":
        return json_response(200, {"value": [subscription_json(world, s) for s in world.subscriptions]})
    if lowered == "/tenants":
        tenant = {
            "id": f"/tenants/{world.tenant_id}",
            "tenantId": world.tenant_id,
            "tenantCategory": "Home",
            "displayName": "keysteward sandbox",
            "defaultDomain": "sandbox.keysteward.test",
        }
        return json_response(200, {"value": [tenant]})
    m = _SUBSCRIPTION.fullmatch(path)
    if m:
        sub = m["sub"].lower()
        if sub not in world.subscriptions:
            return error_response(404, "SubscriptionNotFound", f"The subscription '{m['sub']}' could not be found.")
        return json_response(200, subscription_json(world, sub))
    return None
