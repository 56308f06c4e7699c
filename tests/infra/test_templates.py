"""Offline checks of the ARM templates in ``infra/``.

No ARM engine runs here (no Bicep or Azure CLI on these machines), so these tests read the
templates as JSON and check what a deployment would otherwise only reveal in Azure: that every
parameter and variable reference resolves, that each required resource is present with its
type, api-version and the properties keysteward depends on, and that every setting the code
reads is set by the template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE_PATH = INFRA / "azuredeploy.json"
EXAMPLE_PATH = INFRA / "azuredeploy.parameters.example.json"
APP_REGISTRATION_PATH = INFRA / "app-registration.json"
CONFIG_PATH = ROOT / "shared" / "config.py"
FUNCTIONS_DIR = ROOT / "functions"

CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"

KEY_EVENTS = {
    "Microsoft.KeyVault.KeyNewVersionCreated",
    "Microsoft.KeyVault.KeyNearExpiry",
    "Microsoft.KeyVault.KeyExpired",
}
APP_ROLES = {"KeySteward.Read", "KeySteward.Revoke", "KeySteward.Restore"}

# Settings the code reads that the template must NOT set in Azure, with the reason.
NOT_IN_AZURE = {
    # Points every client at the local fake Azure; set, it would take the app off real Azure.
    "KEYSTEWARD_SANDBOX",
}
# App settings Flex Consumption rejects: the runtime and host version come from
# functionAppConfig.runtime there ("... for Flex Consumption sites is invalid").
FLEX_REJECTED = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
}

API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
PARAM_REF = re.compile(r"(?<![A-Za-z])parameters\('([^']+)'\)")
VAR_REF = re.compile(r"(?<![A-Za-z])variables\('([^']+)'\)")


# --------------------------------------------------------------------------------------
# Helpers


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: the top level must be a JSON object"
    return data


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return _load(TEMPLATE_PATH)


def _is_inner_deployment(resource: dict[str, Any]) -> bool:
    props = resource.get("properties") or {}
    return (
        resource.get("type") == "Microsoft.Resources/deployments"
        and isinstance(props.get("template"), dict)
        and (props.get("expressionEvaluationOptions") or {}).get("scope") == "inner"
    )


def _strings(node: Any, *, skip_inner: bool) -> Iterator[str]:
    """Every string (keys included) in ``node``; with ``skip_inner``, the body of a nested
    template evaluated in its own scope is left out (its references are its own), while the
    ``parameters`` handed to it, which the outer template evaluates, are kept."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, skip_inner=skip_inner)
    elif isinstance(node, dict):
        inner = skip_inner and _is_inner_deployment(node)
        for key, value in node.items():
            yield key
            if inner and key == "properties":
                for pkey, pvalue in value.items():
                    if pkey != "template":
                        yield from _strings(pvalue, skip_inner=skip_inner)
                continue
            yield from _strings(value, skip_inner=skip_inner)


def _templates(root: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The template and every nested inner-scope template, each with a label."""
    yield "azuredeploy.json", root
    stack = [("azuredeploy.json", root)]
    while stack:
        label, tpl = stack.pop()
        for res in tpl.get("resources", []):
            if _is_inner_deployment(res):
                child = res["properties"]["template"]
                child_label = f"{label} > {res.get('copy', {}).get('name') or res['name']}"
                yield child_label, child
                stack.append((child_label, child))


def _resources(root: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource of the template and of its nested templates."""
    found: list[dict[str, Any]] = []
    for _label, tpl in _templates(root):
        found.extend(tpl.get("resources", []))
    return found


def _of_type(root: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [r for r in _resources(root) if r.get("type", "").lower() == rtype.lower()]


def _one(root: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = _of_type(root, rtype)
    assert len(found) == 1, f"expected exactly one {rtype}, found {len(found)}"
    return found[0]


def _resolve(template: dict[str, Any], value: Any) -> Any:
    """A template value with a bare ``[variables('x')]`` or ``[parameters('x')]`` (default)
    replaced by what it names; anything else unchanged."""
    if isinstance(value, str):
        match = re.fullmatch(r"\[variables\('([^']+)'\)\]", value)
        if match:
            return _resolve(template, template["variables"][match.group(1)])
        match = re.fullmatch(r"\[parameters\('([^']+)'\)\]", value)
        if match:
            return template["parameters"][match.group(1)].get("defaultValue")
    return value


def _role_guids(template: dict[str, Any]) -> set[str]:
    """The role definition guids the template's role assignments use, resolved through the
    ``roles`` variable and through the parameters handed to nested templates."""
    text = json.dumps(template)
    roles = template["variables"].get("roles", {})
    used = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text))
    for key, guid in roles.items():
        if f"variables('roles').{key}" in text:
            used.add(guid)
    return used


def _app_settings(template: dict[str, Any]) -> dict[str, Any]:
    configs = [
        r for r in _of_type(template, "Microsoft.Web/sites/config")
        if re.search(r"/appsettings(?:'|$)", str(r.get("name", "")))
    ]
    assert len(configs) == 1, "the site's app settings must be one Microsoft.Web/sites/config 'appsettings' resource"
    settings = configs[0]["properties"]
    assert isinstance(settings, dict)
    return settings


def _settings_read_by_code() -> set[str]:
    """Setting names from shared/config.py (env.get("X"), _number(env, "X", _bool(env, "X")
    and from the triggers' binding expressions (%X%, connection="X") in functions/*.py."""
    config = CONFIG_PATH.read_text(encoding="utf-8")
    names = set(re.findall(r'env\.get\(\s*"([A-Za-z0-9_]+)"', config))
    names |= set(re.findall(r'_number\(\s*env,\s*"([A-Za-z0-9_]+)"', config))
    names |= set(re.findall(r'_bool\(\s*env,\s*"([A-Za-z0-9_]+)"', config))
    for path in sorted(FUNCTIONS_DIR.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"%([A-Za-z0-9_]+)%", source))
        names |= set(re.findall(r'connection\s*=\s*"([A-Za-z0-9_]+)"', source))
    return names


# --------------------------------------------------------------------------------------
# Shape and references


def test_template_has_the_top_level_sections(template: dict[str, Any]) -> None:
    assert "deploymentTemplate.json" in template["$schema"]
    assert template["contentVersion"] == "1.0.0.0"
    for section in ("parameters", "resources", "outputs"):
        assert section in template, f"missing {section}"
    assert isinstance(template["parameters"], dict)
    assert isinstance(template["resources"], list)
    assert template["resources"], "no resources"


def test_every_resource_has_a_type_and_a_dated_api_version(template: dict[str, Any]) -> None:
    for res in _resources(template):
        assert res.get("type"), f"resource without type: {res.get('name')}"
        assert API_VERSION.match(str(res.get("apiVersion", ""))), f"{res['type']}: bad apiVersion {res.get('apiVersion')}"


@pytest.mark.parametrize("label", [label for label, _ in _templates(_load(TEMPLATE_PATH))])
def test_parameter_and_variable_references_resolve(template: dict[str, Any], label: str) -> None:
    tpl = dict(_templates(template))[label]
    body = {k: v for k, v in tpl.items() if k != "parameters"}
    texts = list(_strings(body, skip_inner=True))
    # Defaults may refer to other parameters; they are part of the template's own scope.
    texts += list(_strings(tpl.get("parameters", {}), skip_inner=True))
    referenced = {m for t in texts for m in PARAM_REF.findall(t)}
    declared = set(tpl.get("parameters", {}))
    assert referenced <= declared, f"{label}: undeclared parameters {sorted(referenced - declared)}"
    assert declared <= referenced, f"{label}: unused parameters {sorted(declared - referenced)}"

    variables = tpl.get("variables", {})
    declared_vars = {k for k in variables if k != "copy"} | {c["name"] for c in variables.get("copy", [])}
    used_vars = {m for t in texts for m in VAR_REF.findall(t)}
    assert used_vars <= declared_vars, f"{label}: undeclared variables {sorted(used_vars - declared_vars)}"
    assert declared_vars <= used_vars, f"{label}: unused variables {sorted(declared_vars - used_vars)}"


def _expression_problem(expr: str) -> str | None:
    """Why ``expr`` (an ARM expression without its brackets) is malformed, or None."""
    depth = 0
    in_string = False
    i = 0
    while i < len(expr):
        ch = expr[i]
        if in_string:
            if ch == "'" and expr[i + 1:i + 2] == "'":
                i += 1  # '' is an escaped quote
            elif ch == "'":
                in_string = False
        elif ch == "'":
            in_string = True
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                return "closes more than it opens"
        i += 1
    if in_string:
        return "unterminated string"
    if depth:
        return "unbalanced brackets"
    return None


def test_every_expression_is_well_formed(template: dict[str, Any]) -> None:
    problems = []
    for text in _strings(template, skip_inner=False):
        if text.startswith("[") and text.endswith("]") and not text.startswith("[["):
            why = _expression_problem(text[1:-1])
            if why:
                problems.append(f"{why}: {text}")
    assert not problems, "\n".join(problems)


def test_inner_templates_get_every_parameter_they_declare(template: dict[str, Any]) -> None:
    for res in _resources(template):
        if not _is_inner_deployment(res):
            continue
        handed = set(res["properties"].get("parameters", {}))
        declared = res["properties"]["template"].get("parameters", {})
        required = {k for k, v in declared.items() if "defaultValue" not in v}
        assert required <= handed, f"{res['name']}: not handed {sorted(required - handed)}"
        assert handed <= set(declared), f"{res['name']}: handed undeclared {sorted(handed - set(declared))}"


def test_copy_loops_are_named_and_counted(template: dict[str, Any]) -> None:
    for res in _resources(template):
        if "copy" in res:
            assert res["copy"].get("name") and res["copy"].get("count"), f"{res['type']}: incomplete copy"


def test_dependencies_name_resources_or_loops_of_the_template(template: dict[str, Any]) -> None:
    loops = {r["copy"]["name"] for r in template["resources"] if "copy" in r}
    for res in template["resources"]:
        for dep in res.get("dependsOn", []):
            assert dep.startswith("[") or dep in loops, f"{res['type']}: dependsOn {dep!r} is neither an id nor a loop"


# --------------------------------------------------------------------------------------
# The function app


def test_flex_consumption_plan(template: dict[str, Any]) -> None:
    plan = _one(template, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True  # Linux


def test_function_app_on_the_plan_with_python_311(template: dict[str, Any]) -> None:
    site = _one(template, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    assert "Microsoft.Web/serverfarms" in site["properties"]["serverFarmId"]
    assert site["properties"]["httpsOnly"] is True
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert "deploymentContainer" in storage["value"]
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert set(config["scaleAndConcurrency"]) >= {"maximumInstanceCount", "instanceMemoryMB"}


def test_function_app_runs_as_the_user_assigned_identity(template: dict[str, Any]) -> None:
    _one(template, "Microsoft.ManagedIdentity/userAssignedIdentities")
    site = _one(template, "Microsoft.Web/sites")
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["[variables('identityId')]"]
    settings = _app_settings(template)
    assert "userAssignedIdentities" in template["variables"]["identityId"]
    assert "identityId" in settings["AZURE_CLIENT_ID"] and ".clientId" in settings["AZURE_CLIENT_ID"]


def test_every_setting_the_code_reads_is_set(template: dict[str, Any]) -> None:
    read = _settings_read_by_code()
    # If the patterns stop matching (config.py rewritten), fail here rather than pass on nothing.
    assert {"KEYSTEWARD_SUBSCRIPTIONS", "KEYSTEWARD_VAULTS", "KEYSTEWARD_RETENTION_HOURS",
            "KEYSTEWARD_ROTATION_SCHEDULE", "KEYSTEWARD_WORK_QUEUE", "AzureWebJobsStorage"} <= read
    assert len(read) >= 25
    settings = _app_settings(template)
    missing = set()
    for name in sorted(read - NOT_IN_AZURE):
        if name in settings:
            continue
        # The identity-based form (AzureWebJobsStorage__accountName) serves the host and the
        # code alike (shared/config.py reads it).
        if f"{name}__accountName" in settings or f"{name}__serviceUri" in settings:
            continue
        missing.add(name)
    assert not missing, f"settings the code reads but the template does not set: {sorted(missing)}"
    for name in NOT_IN_AZURE:
        assert not settings.get(name), f"{name} must not be set in Azure"


def test_settings_that_must_have_fixed_values(template: dict[str, Any]) -> None:
    settings = _app_settings(template)
    assert settings["KEYSTEWARD_TRUST_PRINCIPAL_HEADER"] == "false"
    assert _resolve(template, settings["KEYSTEWARD_ROTATION_SCHEDULE"]) == "0 0 3 * * *"
    assert _resolve(template, settings["KEYSTEWARD_RECONCILE_SCHEDULE"]) == "0 */15 * * * *"
    assert _resolve(template, settings["KEYSTEWARD_WORK_QUEUE"]) == "keysteward-work"
    assert "ConnectionString" in settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    # Storage by identity: no account key in the app settings, the identity the code uses.
    assert "AzureWebJobsStorage" not in settings
    assert _resolve(template, settings["AzureWebJobsStorage__credential"]) == "managedidentity"
    assert "storageName" in settings["AzureWebJobsStorage__accountName"]
    assert settings["AzureWebJobsStorage__clientId"] == settings["AZURE_CLIENT_ID"]
    assert "listKeys(" not in json.dumps(template["resources"])
    rejected = FLEX_REJECTED & set(settings)
    assert not rejected, f"Flex Consumption rejects these app settings: {sorted(rejected)}"


def test_retention_can_never_be_configured_below_24_hours(template: dict[str, Any]) -> None:
    param = template["parameters"]["retentionHours"]
    assert param["minValue"] >= 24
    assert param["defaultValue"] >= 24


# --------------------------------------------------------------------------------------
# Storage and monitoring


def test_storage_holds_queues_tables_and_containers(template: dict[str, Any]) -> None:
    account = _one(template, "Microsoft.Storage/storageAccounts")
    assert account["properties"]["allowBlobPublicAccess"] is False
    assert account["properties"]["minimumTlsVersion"] == "TLS1_2"
    queues = [r["name"] for r in _of_type(template, "Microsoft.Storage/storageAccounts/queueServices/queues")]
    assert any("parameters('workQueueName')" in q for q in queues)
    assert any("variables('poisonQueueName')" in q for q in queues)
    assert template["variables"]["poisonQueueName"] == "[format('{0}-poison', parameters('workQueueName'))]"
    tables = _one(template, "Microsoft.Storage/storageAccounts/tableServices/tables")
    assert "parameters('tablePrefix')" in tables["name"]
    # Every table the app writes (shared/journal: runs, steps, leases, revocations;
    # shared/idempotency: idempotency) exists before the first event or revocation needs it.
    assert template["variables"]["journalTables"] == ["runs", "steps", "leases", "revocations", "idempotency"]
    assert "copy" in tables
    containers = {r["name"] for r in _of_type(template, "Microsoft.Storage/storageAccounts/blobServices/containers")}
    assert any("deploymentContainer" in c for c in containers)
    assert any("deadLetterContainer" in c for c in containers)


def test_workspace_based_application_insights(template: dict[str, Any]) -> None:
    _one(template, "Microsoft.OperationalInsights/workspaces")
    insights = _one(template, "Microsoft.Insights/components")
    assert "Microsoft.OperationalInsights/workspaces" in insights["properties"]["WorkspaceResourceId"]


# --------------------------------------------------------------------------------------
# Event Grid


def test_one_system_topic_per_vault_in_the_vaults_own_scope(template: dict[str, Any]) -> None:
    loop = next(r for r in template["resources"] if r.get("copy", {}).get("name") == "vaults")
    assert loop["copy"]["count"] == "[length(parameters('watchedVaultResourceIds'))]"
    assert "split(parameters('watchedVaultResourceIds')[copyIndex()], '/')[2]" in loop["subscriptionId"]
    assert "split(parameters('watchedVaultResourceIds')[copyIndex()], '/')[4]" in loop["resourceGroup"]
    assert ".location" in loop["properties"]["parameters"]["vaultLocation"]["value"]
    topic = _one(template, "Microsoft.EventGrid/systemTopics")
    assert topic["properties"]["topicType"] == "Microsoft.KeyVault.vaults"
    assert topic["location"] == "[parameters('vaultLocation')]"


def test_event_subscription_targets_the_function_with_retry_and_dead_letter(template: dict[str, Any]) -> None:
    sub = _one(template, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    props = sub["properties"]
    assert props["destination"]["endpointType"] == "AzureFunction"
    loop = next(r for r in template["resources"] if r.get("copy", {}).get("name") == "vaults")
    inner = loop["properties"]["template"]
    handed = loop["properties"]["parameters"]
    assert props["destination"]["properties"]["resourceId"] == "[parameters('functionResourceId')]"
    assert "/functions/" in handed["functionResourceId"]["value"]
    assert template["variables"]["functionName"] == "on_key_vault_event"
    # Event types: exactly the three key events, whether written inline or handed in.
    types = props["filter"]["includedEventTypes"]
    if isinstance(types, str):
        assert types == "[parameters('includedEventTypes')]"
        assert "includedEventTypes" in inner["parameters"]
        types = _resolve(template, handed["includedEventTypes"]["value"])
    assert isinstance(types, list)
    assert len(types) == len(KEY_EVENTS)
    assert set(types) == KEY_EVENTS
    assert props["retryPolicy"] == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}
    dead = props["deadLetterDestination"]
    assert dead["endpointType"] == "StorageBlob"
    assert dead["properties"]["blobContainerName"] == "[parameters('deadLetterContainer')]"
    assert _resolve(template, handed["deadLetterContainer"]["value"]) == "eventgrid-deadletter"
    assert handed["deadLetterStorageId"]["value"] == "[variables('storageId')]"


def test_optional_outcome_topic_and_its_sender_role(template: dict[str, Any]) -> None:
    topic = _one(template, "Microsoft.EventGrid/topics")
    assert topic["condition"] == "[parameters('deployOutcomeTopic')]"
    assert topic["properties"]["inputSchema"] == "EventGridSchema"
    settings = _app_settings(template)
    assert "deployOutcomeTopic" in settings["KEYSTEWARD_OUTCOME_TOPIC"]
    assert ".endpoint" in settings["KEYSTEWARD_OUTCOME_TOPIC"]
    sender = [
        r for r in _of_type(template, "Microsoft.Authorization/roleAssignments")
        if "eventGridDataSender" in json.dumps(r)
    ]
    assert len(sender) == 1
    assert sender[0]["condition"] == "[parameters('deployOutcomeTopic')]"
    assert template["variables"]["roles"]["eventGridDataSender"] == EVENTGRID_DATA_SENDER


# --------------------------------------------------------------------------------------
# Access


def test_built_in_roles_are_assigned(template: dict[str, Any]) -> None:
    used = _role_guids(template)
    for guid, label in ((CRYPTO_OFFICER, "Key Vault Crypto Officer"), (READER, "Reader"),
                        (QUEUE_DATA_CONTRIBUTOR, "Storage Queue Data Contributor"),
                        (TABLE_DATA_CONTRIBUTOR, "Storage Table Data Contributor"),
                        (BLOB_DATA_OWNER, "Storage Blob Data Owner")):
        assert guid in used, f"{label} ({guid}) is not assigned"


def test_crypto_officer_on_each_rbac_vault_and_an_access_policy_otherwise(template: dict[str, Any]) -> None:
    loop = next(r for r in template["resources"] if r.get("copy", {}).get("name") == "vaults")
    inner = loop["properties"]["template"]
    assert loop["properties"]["parameters"]["cryptoOfficerRoleGuid"]["value"] == "[variables('roles').cryptoOfficer]"
    assert template["variables"]["roles"]["cryptoOfficer"] == CRYPTO_OFFICER
    officer = next(r for r in inner["resources"] if "cryptoOfficerRoleGuid" in json.dumps(r))
    assert officer["type"] == "Microsoft.Authorization/roleAssignments"
    assert officer["condition"] == "[parameters('vaultUsesRbac')]"
    assert officer["scope"].startswith("[format('Microsoft.KeyVault/vaults/")
    policy = next(r for r in inner["resources"] if r["type"] == "Microsoft.KeyVault/vaults/accessPolicies")
    assert policy["condition"] == "[not(parameters('vaultUsesRbac'))]"
    perms = policy["properties"]["accessPolicies"][0]["permissions"]
    assert set(perms["keys"]) == {"get", "list", "update", "rotate", "recover"}
    assert set(perms) == {"keys"}, "no secret or certificate permissions"


def test_reader_on_every_watched_subscription(template: dict[str, Any]) -> None:
    loop = next(r for r in template["resources"] if r.get("copy", {}).get("name") == "readerSubscriptions")
    assert "resourceGroup" not in loop, "Reader is assigned at subscription scope"
    assert loop["subscriptionId"] == "[variables('readerSubscriptionIds')[copyIndex()]]"
    assert loop["properties"]["parameters"]["roleDefinitionGuid"]["value"] == "[variables('roles').reader]"
    assert template["variables"]["roles"]["reader"] == READER
    assert "watchedSubscriptionIds" in template["variables"]["readerSubscriptionIds"]
    assert "vaultSubscriptionIds" in template["variables"]["readerSubscriptionIds"]


def test_custom_operator_role_has_only_kusto_and_cosmos_actions(template: dict[str, Any]) -> None:
    role = _one(template, "Microsoft.Authorization/roleDefinitions")
    perms = role["properties"]["permissions"]
    assert len(perms) == 1
    actions = _resolve(template, perms[0]["actions"])
    assert isinstance(actions, list)
    assert actions
    for action in actions:
        assert "*" not in action, f"wildcard action {action}"
        assert action.startswith(("Microsoft.Kusto/", "Microsoft.DocumentDB/")), action
    assert {"Microsoft.Kusto/clusters/read", "Microsoft.Kusto/clusters/write",
            "Microsoft.DocumentDB/databaseAccounts/read", "Microsoft.DocumentDB/databaseAccounts/write"} <= set(actions)
    assert not perms[0].get("dataActions")
    assert not perms[0].get("notActions")
    # Assigned on every target subscription and resource group.
    names = {r.get("copy", {}).get("name") for r in template["resources"]}
    assert {"operatorSubscriptions", "operatorResourceGroups"} <= names
    scopes = template["variables"]["operatorScopes"]
    assert "operatorSubscriptionIds" in scopes
    assert "operatorResourceGroupIds" in scopes


def test_identity_gets_data_roles_on_its_storage(template: dict[str, Any]) -> None:
    on_storage = [
        r for r in _of_type(template, "Microsoft.Authorization/roleAssignments")
        if str(r.get("scope", "")).startswith("[format('Microsoft.Storage/storageAccounts/")
    ]
    roles = {template["variables"]["roles"][m] for r in on_storage
             for m in re.findall(r"variables\('roles'\)\.(\w+)", r["properties"]["roleDefinitionId"])}
    assert roles == {QUEUE_DATA_CONTRIBUTOR, TABLE_DATA_CONTRIBUTOR, BLOB_DATA_OWNER}
    for r in on_storage:
        assert r["properties"]["principalType"] == "ServicePrincipal"


def test_app_service_authentication_requires_entra_id(template: dict[str, Any]) -> None:
    auth = next(r for r in _of_type(template, "Microsoft.Web/sites/config") if "authsettingsV2" in r["name"])
    props = auth["properties"]
    assert props["platform"]["enabled"] is True
    validation = props["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"
    # Event Grid cannot present an Entra token; its webhook stays behind the system key only.
    assert validation["excludedPaths"] == ["/runtime/webhooks/eventgrid"]
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True
    assert aad["registration"]["clientId"] == "[parameters('authClientId')]"
    assert "authTenantId" in aad["registration"]["openIdIssuer"]


def test_app_registration_declares_the_three_app_roles() -> None:
    manifest = _load(APP_REGISTRATION_PATH)
    roles = manifest["appRoles"]
    assert {r["value"] for r in roles} == APP_ROLES
    assert len({r["id"] for r in roles}) == len(roles), "app role ids must be unique"
    auth_source = (ROOT / "shared" / "auth.py").read_text(encoding="utf-8")
    for value in APP_ROLES:
        assert f'"{value}"' in auth_source, f"{value} is not a role the code checks"


# --------------------------------------------------------------------------------------
# Outputs and the parameters example


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["outputs"]
    for name in ("functionAppName", "defaultHostname", "identityPrincipalId", "storageAccountName"):
        assert name in outputs, f"missing output {name}"
        assert outputs[name]["type"] == "string"
    assert "defaultHostName" in outputs["defaultHostname"]["value"]
    assert "principalId" in outputs["identityPrincipalId"]["value"]


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "securestring": str, "int": int, "bool": bool, "array": list, "object": dict, "secureobject": dict,
}


def test_parameters_example_matches_the_template(template: dict[str, Any]) -> None:
    example = _load(EXAMPLE_PATH)
    assert "deploymentParameters.json" in example["$schema"]
    given = example["parameters"]
    declared = template["parameters"]
    assert set(given) <= set(declared), f"example sets undeclared parameters {sorted(set(given) - set(declared))}"
    required = {name for name, spec in declared.items() if "defaultValue" not in spec}
    assert required <= set(given), f"example lacks required parameters {sorted(required - set(given))}"
    for name, entry in given.items():
        spec = declared[name]
        value = entry["value"]
        expected = _JSON_TYPES[spec["type"].lower()]
        assert isinstance(value, expected), f"{name}: {value!r} is not {spec['type']}"
        if spec["type"] == "int":
            assert not isinstance(value, bool), f"{name}: a bool is not an int"
            assert value >= spec.get("minValue", value), f"{name}: below minValue"
            assert value <= spec.get("maxValue", value), f"{name}: above maxValue"
        if "allowedValues" in spec:
            assert value in spec["allowedValues"], f"{name}: {value!r} not allowed"
        if isinstance(value, (str, list)):
            assert len(value) >= spec.get("minLength", 0), f"{name}: too short"
            assert len(value) <= spec.get("maxLength", len(value)), f"{name}: too long"


def test_example_vault_ids_and_audience_fit_the_template(template: dict[str, Any]) -> None:
    example = _load(EXAMPLE_PATH)["parameters"]
    for vault in example["watchedVaultResourceIds"]["value"]:
        parts = vault.split("/")
        assert len(parts) == 9, vault
        assert parts[1] == "subscriptions" and parts[3] == "resourceGroups", vault
        assert parts[6:8] == ["Microsoft.KeyVault", "vaults"], vault
    for rg in example["operatorResourceGroupIds"]["value"]:
        parts = rg.split("/")
        assert len(parts) == 5 and parts[3] == "resourceGroups", rg
    manifest = _load(APP_REGISTRATION_PATH)
    assert set(example["authAllowedAudiences"]["value"]) <= set(manifest["identifierUris"])


# --------------------------------------------------------------------------------------
# Alerts and the estate workbook on keysteward's metrics (shared/metrics.py)

SCHEDULED_QUERY_RULES_API = "2023-12-01"  # specification/monitor/.../stable/2023-12-01/scheduledQueryRule_API.json
WORKBOOKS_API = "2023-06-01"  # specification/applicationinsights/.../stable/2023-06-01/workbooks_API.json
ALERT_RULES = {
    "binding-not-converged",
    "run-failed-or-stuck",
    "revocation-in-force-too-long",
    "key-near-expiry-no-rotation",
    "version-kept-by-unknown-or-stuck-consumer",
    "drift-repaired",
    "key-deleted-in-use",
}
METRIC_EQ = re.compile(r'\bname\s*==\s*"([^"]+)"')
METRIC_IN = re.compile(r'\bname\s+in\s*\(([^)]*)\)')
ATTRIBUTE_REF = re.compile(r'customDimensions\["([^"]+)"\]')


def _metric_module() -> Any:
    from shared import metrics

    return metrics


def _attributes() -> set[str]:
    metrics = _metric_module()
    return {v for k, v in vars(metrics).items() if k.startswith("ATTR_")}


def _alerts(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for res in template["resources"]:
        if res["type"] == "Microsoft.Insights/scheduledQueryRules":
            m = re.fullmatch(r"\[format\('\{0\}-([a-z-]+)', variables\('appName'\)\)\]", res["name"])
            assert m, res["name"]
            out[m.group(1)] = res
    return out


def _references(query: str) -> tuple[set[str], set[str]]:
    """The metric names a KQL query selects (``name == "m"``, ``name in ("m", ...)``) and the
    attributes it reads (``customDimensions["a"]``)."""
    names = set(METRIC_EQ.findall(query))
    for group in METRIC_IN.findall(query):
        names |= set(re.findall(r'"([^"]+)"', group))
    return names, set(ATTRIBUTE_REF.findall(query))


def test_alert_rules_cover_each_condition_on_metrics_that_exist(template: dict[str, Any]) -> None:
    metrics = _metric_module()
    alerts = _alerts(template)
    assert set(alerts) == ALERT_RULES
    for name, res in alerts.items():
        assert res["apiVersion"] == SCHEDULED_QUERY_RULES_API, name
        assert res["kind"] == "LogAlert"
        assert res["condition"] == "[parameters('deployAlerts')]"
        props = res["properties"]
        # Scoped to the app's Application Insights component, where the exporter writes customMetrics.
        assert props["scopes"] == ["[variables('insightsId')]"], name
        assert props["actions"]["actionGroups"] == "[parameters('alertActionGroupIds')]"
        assert 0 <= props["severity"] <= 4
        (criterion,) = props["criteria"]["allOf"]
        assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0
        names, attrs = _references(criterion["query"].replace("''", "'"))
        assert names, f"{name}: the query names no keysteward metric"
        assert names <= metrics.METRIC_NAMES, f"{name}: unknown metrics {names - metrics.METRIC_NAMES}"
        assert attrs <= _attributes(), f"{name}: unknown attributes {attrs - _attributes()}"
    assert template["variables"]["insightsId"] == "[resourceId('Microsoft.Insights/components', variables('insightsName'))]"
    assert any(r["type"] == "Microsoft.Insights/components" and r["name"] == "[variables('insightsName')]"
               for r in template["resources"])


def test_alert_thresholds_come_from_parameters(template: dict[str, Any]) -> None:
    alerts = _alerts(template)
    expected = {
        "binding-not-converged": "alertConvergenceMinutes",
        "run-failed-or-stuck": "alertStuckRunMinutes",
        "revocation-in-force-too-long": "alertRevocationHours",
        "key-near-expiry-no-rotation": "alertExpiryDays",
    }
    for name, param in expected.items():
        query = alerts[name]["properties"]["criteria"]["allOf"][0]["query"]
        assert f"parameters('{param}')" in query and "{0}" in query, name
        assert template["parameters"][param]["type"] == "int"
    run = alerts["run-failed-or-stuck"]["properties"]["criteria"]["allOf"][0]["query"]
    assert '"failed", "partially-succeeded"' in run and "keysteward.runbook.unfinished.age" in run
    drift = alerts["drift-repaired"]["properties"]["criteria"]["allOf"][0]["query"]
    assert '"VersionDrift"' in drift
    deleted = alerts["key-deleted-in-use"]["properties"]["criteria"]["allOf"][0]["query"]
    assert '"KeyRecovered", "KeyPurgedInUse"' in deleted
    assert alerts["key-deleted-in-use"]["properties"]["severity"] == 0  # critical: data is offline or at risk
    kept = alerts["version-kept-by-unknown-or-stuck-consumer"]["properties"]["criteria"]["allOf"][0]["query"]
    assert '"read-only", "unknown", "versionless"' in kept


def test_the_estate_workbook_queries_metrics_that_exist(template: dict[str, Any]) -> None:
    metrics = _metric_module()
    (workbook,) = [r for r in template["resources"] if r["type"] == "Microsoft.Insights/workbooks"]
    assert workbook["apiVersion"] == WORKBOOKS_API
    assert workbook["kind"] == "shared"
    props = workbook["properties"]
    assert props["sourceId"] == "[variables('insightsId')]"
    assert props["category"] == "workbook" and props["displayName"]  # required by the 2023-06-01 spec
    assert props["version"] == "Notebook/1.0"
    # The workbook document, with the component's id put in where it says __INSIGHTS_ID__.
    m = re.fullmatch(r"\[replace\('(.*)', '__INSIGHTS_ID__', variables\('insightsId'\)\)\]",
                     props["serializedData"], flags=re.DOTALL)
    assert m, "serializedData must be replace('<workbook JSON>', '__INSIGHTS_ID__', variables('insightsId'))"
    data = json.loads(m.group(1).replace("''", "'"))
    assert data["fallbackResourceIds"] == ["__INSIGHTS_ID__"]
    assert data["version"] == "Notebook/1.0"
    queries = {i["name"]: i["content"]["query"] for i in data["items"] if i["type"] == 3}
    assert all(i["content"]["crossComponentResources"] == ["__INSIGHTS_ID__"] for i in data["items"] if i["type"] == 3)
    assert {"keys-versions-bindings", "lag-over-time", "runs", "bindings-by-state"} <= set(queries)
    used: set[str] = set()
    for name, query in queries.items():
        names, attrs = _references(query)
        assert names and names <= metrics.METRIC_NAMES, f"{name}: {names - metrics.METRIC_NAMES}"
        assert attrs <= _attributes(), f"{name}: unknown attributes {attrs - _attributes()}"
        used |= names
    alert_metrics = set().union(*(_references(r["properties"]["criteria"]["allOf"][0]["query"])[0]
                                  for r in _alerts(template).values()))
    # Every metric keysteward records is shown or alerted on somewhere.
    assert used | alert_metrics == set(metrics.METRIC_NAMES)
    assert queries["lag-over-time"].count("keysteward.binding.lag") == 1
    tree = next(i for i in data["items"] if i["name"] == "keys-versions-bindings")["content"]["gridSettings"]
    assert tree["hierarchySettings"]["groupBy"] == ["key"]
