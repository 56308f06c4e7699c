"""The Azure CLI against the sandbox: a real client nobody here wrote, over loopback HTTPS.

``make az-check`` installs ``azure-cli`` into its own venv and runs this script with it. The
script starts a sandbox (demo estate) on loopback HTTPS and a managed-identity endpoint
(``sandbox.identity``), registers the sandbox as a custom cloud from its metadata endpoint,
signs in with ``az login --identity`` and runs a fixed set of commands. Every answer is checked
against the sandbox's own state (what Azure would answer for that estate), never against a
recorded output.

A check that fails because of a gap another part of issue 13 is closing is listed with that
point (``known gap``); it is reported, not counted as a failure, and reported as ``gap closed``
when it starts to pass. Exit status: 0 when every other check passed.

    python -m tests.az.az_check --az .run/az-venv/bin/az [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox import seeds
from sandbox.cloud import CLOUD_NAME
from sandbox.identity import IdentityEndpoint
from sandbox.server import SandboxServer
from sandbox.world import World

# api-versions sent with `az rest`: the ones keysteward (or its installed SDKs) use.
KUSTO_API = "2025-02-14"  # azure-mgmt-kusto 4.0.0
POSTGRES_API = "2023-03-02-preview"  # the first Cosmos DB for PostgreSQL version with dataEncryption
ENERGY_API = "2024-05-21"  # Microsoft.OpenEnergyPlatform stable with properties.encryption
# The operator identity the demo estate grants key management in its vaults.
OPERATOR_OBJECT_ID = "5b1c3a6e-8f0d-4c39-9a51-2f4e7d6c8b90"
OPERATOR_CLIENT_ID = "0f6c2d4e-1b3a-4c5d-8e7f-9a0b1c2d3e4f"
POLICY_PRINCIPAL = "7d1e9a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"  # a principal set-policy adds then removes


class CheckFailed(Exception):
    """A command answered, but not as Azure would."""


class AzFailed(Exception):
    """``az`` exited non-zero."""


@dataclass
class Outcome:
    label: str
    command: str
    ok: bool
    detail: str
    gap: str | None = None
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        if self.gap:
            return "gap closed" if self.ok else f"known gap ({self.gap})"
        return "pass" if self.ok else "FAIL"


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


class Run:
    """One sandbox, one identity endpoint, one az configuration directory."""

    def __init__(self, az: str, workdir: Path) -> None:
        self.az_bin = az
        self.workdir = workdir
        self.world = World(seed=29)
        self.world.throttle.configure(enabled=False)
        self.server = SandboxServer(self.world, workdir=workdir / "sandbox")
        self.identity = IdentityEndpoint(
            tenant_id=self.world.tenant_id, principal_id=OPERATOR_OBJECT_ID, client_id=OPERATOR_CLIENT_ID
        )
        self.outcomes: list[Outcome] = []
        self.env: dict[str, str] = {}
        self.commands: list[str] = []  # the az commands of the step running now

    # ---- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        self.server.start()
        seeds.apply_seed(self.world, seeds.demo_seed())
        self.identity.start()
        config = self.workdir / "az-config"
        config.mkdir(parents=True, exist_ok=True)
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        self.env = {
            **keep,
            "AZURE_CONFIG_DIR": str(config),
            "REQUESTS_CA_BUNDLE": self.server.ca_bundle,
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_SURVEY_MESSAGE": "false",
            "AZURE_CORE_NO_COLOR": "true",
            "AZURE_CORE_OUTPUT": "json",
            "AZURE_CORE_LOGIN_EXPERIENCE_V2": "off",
            "NO_PROXY": "127.0.0.1,localhost",
            **self.identity.env(),
        }
        return self

    def __exit__(self, *exc: object) -> None:
        self.identity.stop()
        self.server.stop()

    # ---- running az ---------------------------------------------------------------------------------
    def az(self, *args: str) -> Any:
        """Runs ``az args`` and returns its parsed JSON output (None when it prints nothing)."""
        self.commands.append("az " + " ".join(args))
        proc = subprocess.run(
            [self.az_bin, *args, "--only-show-errors"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if proc.returncode != 0:
            raise AzFailed(f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}")
        out = proc.stdout.strip()
        return json.loads(out) if out else None

    def step(self, label: str, fn: Callable[[], str], *, gap: str | None = None) -> None:
        started = time.monotonic()
        self.commands = []
        try:
            detail = fn()
            ok = True
        except (CheckFailed, AzFailed, KeyError, TypeError, ValueError) as err:
            detail = f"{type(err).__name__}: {err}"
            ok = False
        self.outcomes.append(Outcome(label, "; ".join(self.commands), ok, detail, gap, time.monotonic() - started))

    # ---- the estate, as the sandbox holds it ------------------------------------------------------------
    @property
    def sub(self) -> str:
        return self.world.subscriptions[0]

    def vaults_in(self, sub: str) -> dict[str, Any]:
        return {v.name: v for v in self.world.vaults.values() if v.subscription.lower() == sub}

    def resources(self, rtype: str, sub: str) -> dict[str, Any]:
        return {
            r.name: r
            for r in self.world.resources.values()
            if r.type.lower() == rtype.lower() and r.subscription.lower() == sub
        }

    def arm(self, path: str, api: str) -> str:
        return f"{self.server.arm_url}{path}?api-version={api}"


# ---- the checks ------------------------------------------------------------------------------------------
def sign_in(run: Run) -> None:
    def register() -> str:
        run.az("cloud", "register", "-n", CLOUD_NAME, "--endpoint-resource-manager", run.server.arm_url)
        run.az("cloud", "set", "-n", CLOUD_NAME)
        shown = run.az("cloud", "show", "-n", CLOUD_NAME)
        expect(shown["endpoints"]["resourceManager"].rstrip("/") == run.server.arm_url, f"resourceManager {shown['endpoints']}")
        expect(shown["suffixes"]["keyvaultDns"] == ".vault.azure.net", f"keyvaultDns {shown['suffixes']}")
        return f"cloud {CLOUD_NAME} from {run.server.arm_url}/metadata/endpoints"

    def login() -> str:
        accounts = run.az("login", "--identity")
        subs = sorted(a["id"] for a in accounts)
        expect(subs == sorted(run.world.subscriptions), f"subscriptions {subs}")
        expect({a["tenantId"] for a in accounts} == {run.world.tenant_id}, "tenant")
        expect(run.identity.tokens_issued >= 1, "no token was asked of the identity endpoint")
        run.az("account", "set", "--subscription", run.sub)
        return f"{len(subs)} subscriptions, tenant {run.world.tenant_id}"

    run.step("az cloud register (metadata endpoint)", register)
    run.step("az login --identity", login)


def key_vault(run: Run) -> None:
    vaults = run.vaults_in(run.sub)
    vault = sorted(vaults.values(), key=lambda v: v.name)[0]
    url = run.server.vault_url(vault.name)
    key_name = sorted(vault.keys.values(), key=lambda k: k.name)[0].name

    def list_vaults() -> str:
        got = run.az("keyvault", "list", "--resource-type", "vault")
        names = sorted(v["name"] for v in got)
        expect(names == sorted(vaults), f"vaults {names} != {sorted(vaults)}")
        expect(all(v["type"] == "Microsoft.KeyVault/vaults" for v in got), "type")
        return ", ".join(names)

    def show_vault() -> str:
        got = run.az("keyvault", "show", "-n", vault.name, "-g", vault.resource_group)
        props = got["properties"]
        expect(got["id"].lower() == vault.id.lower(), f"id {got['id']}")
        expect(props["vaultUri"].rstrip("/") == url.rstrip("/"), f"vaultUri {props['vaultUri']}")
        expect(props["tenantId"] == run.world.tenant_id, "tenantId")
        expect(props["enablePurgeProtection"] is True, "enablePurgeProtection")
        expect(len(props["accessPolicies"]) == len(vault.properties["accessPolicies"]), "accessPolicies")
        return f"{vault.name}: vaultUri {props['vaultUri']}, {len(props['accessPolicies'])} access policies"

    def list_keys() -> str:
        got = run.az("keyvault", "key", "list", "--id", url)
        names = sorted(k["name"] for k in got)
        expect(names == sorted(k.name for k in vault.keys.values()), f"keys {names}")
        expect(all(k["kid"].startswith(f"{url}/keys/") for k in got), "kid")
        return ", ".join(names)

    def show_key() -> str:
        got = run.az("keyvault", "key", "show", "--id", f"{url}/keys/{key_name}")
        current = vault.keys[key_name.lower()].current
        expect(got["key"]["kid"] == f"{url}/keys/{key_name}/{current.version}", f"kid {got['key']['kid']}")
        expect(got["key"]["kty"] in ("RSA", "RSA-HSM"), "kty")
        expect(got["attributes"]["enabled"] is current.enabled, "enabled")
        return got["key"]["kid"]

    def rotate() -> str:
        before = vault.keys[key_name.lower()].current.version
        got = run.az("keyvault", "key", "rotate", "--id", f"{url}/keys/{key_name}")
        after = vault.keys[key_name.lower()].current.version
        expect(after != before, "the sandbox has no new version")
        expect(got["key"]["kid"] == f"{url}/keys/{key_name}/{after}", f"kid {got['key']['kid']}")
        return f"{before} -> {after}"

    def set_attributes() -> str:
        key = vault.keys[key_name.lower()]
        oldest = min(key.versions.values(), key=lambda v: (v.created, v.version))
        got = run.az("keyvault", "key", "set-attributes", "--id", f"{url}/keys/{key_name}/{oldest.version}",
                     "--enabled", "false", "--tags", "checked-by=az")
        expect(got["attributes"]["enabled"] is False, "enabled in the answer")
        expect(key.versions[oldest.version].enabled is False, "the sandbox version is still enabled")
        expect(got["tags"] == {"checked-by": "az"}, f"tags {got.get('tags')}")
        return f"{oldest.version} disabled"

    def set_policy() -> str:
        got = run.az("keyvault", "set-policy", "-n", vault.name, "-g", vault.resource_group,
                     "--object-id", POLICY_PRINCIPAL, "--key-permissions", "get", "wrapKey", "unwrapKey")
        entry = [p for p in got["properties"]["accessPolicies"] if p["objectId"] == POLICY_PRINCIPAL]
        expect(len(entry) == 1, "no entry in the answer")
        expect(sorted(entry[0]["permissions"]["keys"]) == ["get", "unwrapKey", "wrapKey"], f"{entry[0]['permissions']}")
        held = [p for p in run.world.vaults[vault.name.lower()].properties["accessPolicies"] if p["objectId"] == POLICY_PRINCIPAL]
        expect(len(held) == 1, "the sandbox vault has no entry")
        return f"{POLICY_PRINCIPAL}: get, wrapKey, unwrapKey"

    def delete_policy() -> str:
        got = run.az("keyvault", "delete-policy", "-n", vault.name, "-g", vault.resource_group,
                     "--object-id", POLICY_PRINCIPAL)
        expect(all(p["objectId"] != POLICY_PRINCIPAL for p in got["properties"]["accessPolicies"]), "still in the answer")
        held = run.world.vaults[vault.name.lower()].properties["accessPolicies"]
        expect(all(p["objectId"] != POLICY_PRINCIPAL for p in held), "still in the sandbox vault")
        return f"{POLICY_PRINCIPAL} removed"

    run.step("az keyvault list", list_vaults)
    run.step("az keyvault show", show_vault)
    run.step("az keyvault key list", list_keys)
    run.step("az keyvault key show", show_key)
    run.step("az keyvault key rotate", rotate)
    run.step("az keyvault key set-attributes", set_attributes)
    run.step("az keyvault set-policy", set_policy)
    run.step("az keyvault delete-policy", delete_policy)


def cosmos(run: Run) -> None:
    accounts = run.resources("Microsoft.DocumentDB/databaseAccounts", run.sub)

    def list_accounts() -> str:
        got = run.az("cosmosdb", "list")
        names = sorted(a["name"] for a in got)
        expect(names == sorted(accounts), f"accounts {names}")
        return ", ".join(names)

    def show_account() -> str:
        acct = sorted(accounts.values(), key=lambda r: r.name)[0]
        got = run.az("cosmosdb", "show", "-n", acct.name, "-g", acct.resource_group)
        expect(got["keyVaultKeyUri"] == acct.properties["keyVaultKeyUri"], f"keyVaultKeyUri {got.get('keyVaultKeyUri')}")
        expect(got["defaultIdentity"] == acct.properties.get("defaultIdentity"), "defaultIdentity")
        expect(got["documentEndpoint"] == acct.properties["documentEndpoint"], "documentEndpoint")
        return f"{acct.name}: keyVaultKeyUri {got['keyVaultKeyUri']}"

    def versionless() -> str:
        got = run.az("cosmosdb", "list")
        versioned = [a["name"] for a in got if a.get("keyVaultKeyUri", "").rstrip("/").count("/") > 4]
        expect(not versioned, f"versioned keyVaultKeyUri on {versioned}")
        return "every keyVaultKeyUri is versionless"

    run.step("az cosmosdb list", list_accounts)
    run.step("az cosmosdb show", show_account)
    run.step("az cosmosdb list: keyVaultKeyUri versionless", versionless)


def rest(run: Run) -> None:
    def listing(rtype: str, api: str, check: Callable[[dict[str, Any], Any], None]) -> Callable[[], str]:
        ns, kind = rtype.split("/", 1)

        def go() -> str:
            held = run.resources(rtype, run.sub)
            got = run.az("rest", "--method", "get", "--url", run.arm(f"/subscriptions/{run.sub}/providers/{ns}/{kind}", api))
            names = sorted(r["name"] for r in got["value"])
            expect(names == sorted(held), f"{names} != {sorted(held)}")
            for item in got["value"]:
                check(item, held[item["name"]])
            return ", ".join(names)

        return go

    def kusto(item: dict[str, Any], res: Any) -> None:
        expect(item["properties"]["keyVaultProperties"] == res.properties["keyVaultProperties"], "keyVaultProperties")
        expect(item["sku"]["name"] == res.sku["name"], "sku")

    def postgres(item: dict[str, Any], res: Any) -> None:
        enc = item["properties"]["dataEncryption"]
        expect(enc["type"] in ("AzureKeyVault", "SystemAssigned"), f"dataEncryption.type {enc.get('type')}")
        expect(enc == res.properties["dataEncryption"], "dataEncryption")

    def energy(item: dict[str, Any], res: Any) -> None:
        kvp = item["properties"]["encryption"]["keyVaultProperties"]
        expect({"keyName", "keyVaultUri"} <= set(kvp), f"encryption.keyVaultProperties {kvp}")
        expect(kvp == res.properties["encryption"]["keyVaultProperties"], "keyVaultProperties")

    def kusto_databases() -> str:
        clusters = run.resources("Microsoft.Kusto/clusters", run.sub)
        cluster = sorted(clusters.values(), key=lambda r: r.name)[0]
        got = run.az("rest", "--method", "get", "--url", run.arm(f"{cluster.id}/databases", KUSTO_API))
        expect(isinstance(got.get("value"), list), "value")
        return f"{cluster.name}: {len(got['value'])} databases"

    run.step("az rest: Kusto clusters", listing("Microsoft.Kusto/clusters", KUSTO_API, kusto))
    run.step("az rest: Kusto databases", kusto_databases)
    run.step("az rest: PostgreSQL clusters (serverGroupsv2)",
             listing("Microsoft.DBforPostgreSQL/serverGroupsv2", POSTGRES_API, postgres))
    run.step("az rest: Energy services",
             listing("Microsoft.OpenEnergyPlatform/energyServices", ENERGY_API, energy))


def markdown(run: Run, az_version: str, total_s: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Run {when}; azure-cli {az_version}; Python {platform.python_version()}; {total_s:.0f} s in total.",
        "",
        "| Check | Command | Result | Seconds | Detail |",
        "|---|---|---|---|---|",
    ]
    for o in run.outcomes:
        detail = o.detail.replace("|", "\\|").replace("\n", " ")[:240]
        commands = "<br>".join(f"`{c}`" for c in o.command.replace(run.server.arm_url, "{arm}").replace("|", "\\|").split("; "))
        lines.append(f"| {o.label} | {commands} | {o.verdict} | {o.seconds:.1f} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--az", default=shutil.which("az") or "az", help="the az executable")
    parser.add_argument("--markdown", type=Path, help="also write the result table to this file")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="keysteward-az-") as tmp, Run(args.az, Path(tmp)) as run:
        version = run.az("version")["azure-cli"]
        sign_in(run)
        if all(o.ok for o in run.outcomes):
            key_vault(run)
            cosmos(run)
            rest(run)
        table = markdown(run, version, time.monotonic() - started)
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    failed = [o for o in run.outcomes if not o.ok and not o.gap]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
