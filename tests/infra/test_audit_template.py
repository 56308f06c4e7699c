"""The template's usage-evidence blocks: vault audit logs to a workspace the app may read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "azuredeploy.json"
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return dict(json.loads(TEMPLATE.read_text(encoding="utf-8")))


def _inner(template: dict[str, Any], rtype: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for outer in template["resources"]:
        for r in (outer.get("properties", {}).get("template") or {}).get("resources", []):
            if r["type"] == rtype:
                out.append((outer, r))
    return out


def test_each_watched_vault_sends_audit_events_to_the_audit_workspace(template: dict[str, Any]) -> None:
    [(outer, setting)] = _inner(template, "Microsoft.Insights/diagnosticSettings")
    assert outer["condition"] == "[parameters('auditEvidence')]"
    assert outer["copy"]["count"] == "[length(parameters('watchedVaultResourceIds'))]"
    assert outer["resourceGroup"].endswith("[copyIndex()], '/')[4]]")
    assert setting["scope"] == "[format('Microsoft.KeyVault/vaults/{0}', parameters('vaultName'))]"
    assert setting["properties"]["logs"] == [{"category": "AuditEvent", "enabled": True}]
    assert outer["properties"]["parameters"]["workspaceId"]["value"] == "[variables('auditWorkspaceId')]"
    assert "Dedicated" in setting["properties"]["logAnalyticsDestinationType"]


def test_the_app_may_read_the_audit_workspace_and_knows_its_id(template: dict[str, Any]) -> None:
    assert template["variables"]["logAnalyticsReaderRole"] == LOG_ANALYTICS_READER
    [(outer, role)] = [(o, r) for o, r in _inner(template, "Microsoft.Authorization/roleAssignments")
                       if "workspaces" in r.get("scope", "")]
    assert outer["properties"]["parameters"]["roleGuid"]["value"] == "[variables('logAnalyticsReaderRole')]"
    assert outer["resourceGroup"] == "[split(variables('auditWorkspaceId'), '/')[4]]"
    assert role["properties"]["principalType"] == "ServicePrincipal"
    settings = next(r for r in template["resources"] if r["type"] == "Microsoft.Web/sites/config"
                    and "appsettings" in r["name"])["properties"]
    assert "customerId" in settings["KEYSTEWARD_AUDIT_WORKSPACE"]
    assert settings["KEYSTEWARD_AUDIT_TABLE"] == "[parameters('auditTable')]"
    assert template["parameters"]["auditTable"]["allowedValues"] == ["AZKVAuditLogs", "AzureDiagnostics"]
    # Empty: the app's own workspace; else the one the parameter names.
    assert "empty(parameters('auditWorkspaceResourceId'))" in template["variables"]["auditWorkspaceId"]
