"""Seeds: a JSON description of a world, applied through the same wire path as the SDKs.

A seed document is checked in full first (:func:`compile_seed`, raising :class:`SeedError`
that names the field at fault), then applied (:func:`apply_plan`) by building the HTTP
requests the SDKs would send and passing each one to :meth:`sandbox.world.World.handle`:
ARM ``PUT`` for identities, vaults, Kusto clusters, Cosmos DB accounts,
Cosmos DB for PostgreSQL clusters and Energy instances; Key Vault ``POST /keys/{name}/create``
and ``PUT /keys/{name}/rotationpolicy``. Nothing writes to the state model directly, so a
seeded world is exactly what the handlers would have built.

Time: key versions may carry an ``age`` (ISO-8601 duration, how long before the end of
seeding the version was created). Versions are created oldest first and the sandbox clock is
advanced between them, so seeding a document with ages moves the clock forward by the largest
age; ``exp`` and ``nbf`` are offsets (``"P30D"``, ``"-P1D"``) from the clock at the end of
seeding. Throttling is switched off and LROs made instant while seeding, then restored.

Document shape (see ``sandbox/seeds/demo.json``)::

    {"subscriptions": [{"id", "name"}],
     "identities": [{"name", "subscription", "resource_group", "location"}],
     "vaults": [{"name", "subscription", "resource_group", "location", "sku",
                 "soft_delete_retention_days", "purge_protection", "rbac", "public_network_access",
                 "access_policies": [{"identity" | "object_id", "keys": [...]}],
                 "keys": [{"name", "kty", "size", "tags", "rotation_policy",
                           "versions": [{"label", "age", "exp", "nbf", "enabled", "tags"}]}]}],
     "kusto_clusters" | "cosmos_accounts" | "postgresql_clusters" | "energy_instances":
         [{"name", "subscription", "resource_group", "location", "identity", "key": "vault/key",
           "version": <label> | null, "tags"}],
     "consumers": [{"principal_id", "key": "vault/key", "version": <label>, "every_s"}]}

``identity`` is an identity's name from ``identities`` or ``"system"``; ``version`` null means
versionless (Kusto: empty ``keyVersion``; Cosmos: a versionless ``keyVaultKeyUri``, the only
form Azure takes, so Cosmos accounts must have ``version`` null). A Cosmos account may carry
``backup_policy``: its ``properties.backupPolicy`` as ARM takes it (default: periodic, 8 h).
PostgreSQL and Energy need a user-assigned identity and a pinned version. ``consumers`` are
identities nobody inventories that unwrap with one version on a schedule (sandbox time); they
are added through the admin API (``POST /sandbox/consumers``, see :mod:`sandbox.audit`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from sandbox.clock import parse_iso_duration
from sandbox.state import principal_id_for
from sandbox.wire import Request, Service

if TYPE_CHECKING:
    from sandbox.world import World

JsonObj = dict[str, Any]

ARM_HOST = "management.azure.com"
# API versions the installed SDKs send (azure-mgmt-keyvault 14.1.0, -kusto 4.0.0, -cosmosdb 10.0.0).
API_VAULT = "2026-05-15"
API_KUSTO = "2025-02-14"
API_COSMOS = "2026-03-15"
API_KEYS = "2025-07-01"
API_IDENTITY = "2023-01-31"
# Cosmos DB for PostgreSQL: the only api-version with dataEncryption (postgresqlhsc 2023-03-02-preview).
API_POSTGRES = "2023-03-02-preview"
# Data Manager for Energy: oep stable 2024-05-21 (encryption.keyVaultProperties).
API_ENERGY = "2024-05-21"

KUSTO_TYPE = "Microsoft.Kusto/clusters"
COSMOS_TYPE = "Microsoft.DocumentDB/databaseAccounts"
POSTGRES_TYPE = "Microsoft.DBforPostgreSQL/serverGroupsv2"
ENERGY_TYPE = "Microsoft.OpenEnergyPlatform/energyServices"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"

DEFAULT_KEY_PERMISSIONS = ["get", "list", "wrapKey", "unwrapKey"]
DEMO_PATH = Path(__file__).with_name("seeds") / "demo.json"

_RESOURCE_SECTIONS = {
    "kusto_clusters": KUSTO_TYPE,
    "cosmos_accounts": COSMOS_TYPE,
    "postgresql_clusters": POSTGRES_TYPE,
    "energy_instances": ENERGY_TYPE,
}
_TOP_FIELDS = {"description", "subscriptions", "identities", "vaults", "consumers", *_RESOURCE_SECTIONS}


class SeedError(ValueError):
    """The seed document is wrong; ``field`` is a path such as ``vaults[1].keys[0].size``."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


class SeedApplyError(RuntimeError):
    """A request made while seeding was refused; the world keeps what was applied before it."""

    def __init__(self, what: str, status: int, body: bytes) -> None:
        super().__init__(f"seeding {what} failed with HTTP {status}: {body[:500]!r}")
        self.what = what
        self.status = status


# ---- the compiled plan ----------------------------------------------------------------------
@dataclass(frozen=True)
class IdentitySpec:
    name: str
    subscription: str
    resource_group: str
    location: str

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{IDENTITY_TYPE}/{self.name}"
        )


@dataclass(frozen=True)
class VersionSpec:
    label: str
    age: timedelta
    exp: timedelta | None
    nbf: timedelta | None
    enabled: bool
    tags: dict[str, str]


@dataclass(frozen=True)
class KeySpec:
    name: str
    kty: str
    size: int
    versions: list[VersionSpec]
    rotation_policy: JsonObj | None


@dataclass(frozen=True)
class PolicySpec:
    identity: str | None  # identity name (resolved to its principal id)
    object_id: str | None
    keys: list[str]


@dataclass(frozen=True)
class VaultSpec:
    name: str
    subscription: str
    resource_group: str
    location: str
    sku: str
    soft_delete_retention_days: int
    purge_protection: bool
    rbac: bool
    public_network_access: str
    policies: list[PolicySpec]
    keys: list[KeySpec]
    tags: dict[str, str]


@dataclass(frozen=True)
class ResourceSpec:
    type: str
    name: str
    subscription: str
    resource_group: str
    location: str
    identity: str  # identity name or "system"
    vault: str
    key: str
    version: str | None  # a version label; None = versionless
    tags: dict[str, str]
    sku: JsonObj | None
    backup_policy: JsonObj | None = None  # Cosmos DB: properties.backupPolicy as ARM takes it


@dataclass
class Plan:
    subscriptions: list[str]
    identities: list[IdentitySpec]
    vaults: list[VaultSpec]
    resources: list[ResourceSpec]
    consumers: list[ConsumerSpec] = field(default_factory=list)


@dataclass(frozen=True)
class ConsumerSpec:
    """An unknown consumer: ``principal_id`` unwraps with ``vault/key`` version ``label`` every ``every_s``."""

    principal_id: str
    vault: str
    key: str
    label: str
    every_s: float


@dataclass
class SeedResult:
    """What seeding built: version labels resolved to real version ids, and timings."""

    versions: dict[str, str] = field(default_factory=dict)  # "vault/key/label" -> version id
    key_ids: dict[str, str] = field(default_factory=dict)  # "vault/key/label" -> full key id
    identities: dict[str, JsonObj] = field(default_factory=dict)  # name -> {id, principalId, clientId}
    resources: dict[str, str] = field(default_factory=dict)  # name -> resource id
    vault_urls: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> JsonObj:
        return {
            "versions": dict(self.versions),
            "key_ids": dict(self.key_ids),
            "identities": dict(self.identities),
            "resources": dict(self.resources),
            "vault_urls": dict(self.vault_urls),
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
        }


# ---- checking ------------------------------------------------------------------------------
def _obj(raw: Any, path: str, known: set[str]) -> JsonObj:
    if not isinstance(raw, dict):
        raise SeedError(path, "must be a JSON object")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SeedError(f"{path}.{unknown[0]}", "unknown field")
    return raw


def _list(raw: JsonObj, name: str, path: str) -> list[Any]:
    value = raw.get(name, [])
    if not isinstance(value, list):
        raise SeedError(f"{path}{name}", "must be a list")
    return value


def _str(raw: JsonObj, name: str, path: str, default: str | None = None) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise SeedError(f"{path}.{name}", "must be a non-empty string")
    return value.strip()


def _tags(raw: JsonObj, path: str) -> dict[str, str]:
    tags = raw.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise SeedError(f"{path}.tags", "must map strings to strings")
    if len(tags) > 15:
        raise SeedError(f"{path}.tags", "at most 15 tags")
    return dict(tags)


def _duration(raw: JsonObj, name: str, path: str, *, signed: bool) -> timedelta | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SeedError(f"{path}.{name}", "must be an ISO-8601 duration such as P30D")
    text = value.strip()
    sign = 1
    if text.startswith("-"):
        if not signed:
            raise SeedError(f"{path}.{name}", "must not be negative")
        sign, text = -1, text[1:]
    try:
        return sign * parse_iso_duration(text)
    except ValueError as err:
        raise SeedError(f"{path}.{name}", str(err)) from None


def _placement(raw: JsonObj, path: str, subscriptions: dict[str, str]) -> tuple[str, str, str]:
    sub_ref = _str(raw, "subscription", path)
    sub = subscriptions.get(sub_ref.lower())
    if sub is None:
        raise SeedError(f"{path}.subscription", f"unknown subscription {sub_ref!r}")
    return sub, _str(raw, "resource_group", path, "rg-keysteward"), _str(raw, "location", path, "westeurope")


def compile_seed(doc: Any) -> Plan:
    """Checks a seed document in full; raises :class:`SeedError` at the first problem."""
    doc = _obj(doc, "seed", _TOP_FIELDS)
    subscriptions: dict[str, str] = {}  # id or name (lower) -> id
    sub_ids: list[str] = []
    for i, item in enumerate(_list(doc, "subscriptions", "")):
        p = f"subscriptions[{i}]"
        raw = _obj(item, p, {"id", "name"})
        sub_id = _str(raw, "id", p).lower()
        sub_ids.append(sub_id)
        subscriptions[sub_id] = sub_id
        if "name" in raw:
            subscriptions[_str(raw, "name", p).lower()] = sub_id
    identities: dict[str, IdentitySpec] = {}
    for i, item in enumerate(_list(doc, "identities", "")):
        p = f"identities[{i}]"
        raw = _obj(item, p, {"name", "subscription", "resource_group", "location"})
        name = _str(raw, "name", p)
        if name.lower() in identities or name.lower() == "system":
            raise SeedError(f"{p}.name", f"duplicate or reserved identity name {name!r}")
        identities[name.lower()] = IdentitySpec(name, *_placement(raw, p, subscriptions))
    vaults: dict[str, VaultSpec] = {}
    labels: set[tuple[str, str, str]] = set()
    for i, raw in enumerate(_list(doc, "vaults", "")):
        p = f"vaults[{i}]"
        vault = _compile_vault(raw, p, subscriptions, identities)
        if vault.name.lower() in vaults:
            raise SeedError(f"{p}.name", f"duplicate vault {vault.name!r}")
        vaults[vault.name.lower()] = vault
        for key in vault.keys:
            labels.update((vault.name.lower(), key.name.lower(), v.label) for v in key.versions)
    resources: list[ResourceSpec] = []
    names: set[tuple[str, str]] = set()
    for section, rtype in _RESOURCE_SECTIONS.items():
        for i, raw in enumerate(_list(doc, section, "")):
            p = f"{section}[{i}]"
            spec = _compile_resource(
                raw,
                p,
                rtype,
                subscriptions=subscriptions,
                identities=identities,
                vaults=vaults,
                labels=labels,
            )
            if (rtype, spec.name.lower()) in names:
                raise SeedError(f"{p}.name", f"duplicate name {spec.name!r}")
            names.add((rtype, spec.name.lower()))
            resources.append(spec)
    consumers = [_compile_consumer(raw, f"consumers[{i}]", vaults, labels)
                 for i, raw in enumerate(_list(doc, "consumers", ""))]
    return Plan(sub_ids, list(identities.values()), list(vaults.values()), resources, consumers)


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _compile_consumer(
    raw: Any, p: str, vaults: dict[str, VaultSpec], labels: set[tuple[str, str, str]]
) -> ConsumerSpec:
    raw = _obj(raw, p, {"principal_id", "key", "version", "every_s"})
    principal = _str(raw, "principal_id", p)
    if not _GUID.fullmatch(principal):
        raise SeedError(f"{p}.principal_id", "must be an object id (GUID)")
    key_ref = _str(raw, "key", p)
    if key_ref.count("/") != 1:
        raise SeedError(f"{p}.key", "must be 'vault/key'")
    vault_name, key_name = key_ref.split("/")
    if vault_name.lower() not in vaults:
        raise SeedError(f"{p}.key", f"unknown key {key_ref!r}")
    label = _str(raw, "version", p)
    if (vault_name.lower(), key_name.lower(), label) not in labels:
        raise SeedError(f"{p}.version", f"unknown version label {label!r} of {key_ref}")
    every = raw.get("every_s")
    if isinstance(every, bool) or not isinstance(every, int | float) or not math.isfinite(every) or every < 1:
        raise SeedError(f"{p}.every_s", "must be a finite number of seconds, at least 1")
    return ConsumerSpec(principal.lower(), vaults[vault_name.lower()].name, key_name, label, float(every))


def _compile_vault(raw: Any, p: str, subscriptions: dict[str, str], identities: dict[str, IdentitySpec]) -> VaultSpec:
    raw = _obj(
        raw,
        p,
        {
            "name",
            "subscription",
            "resource_group",
            "location",
            "sku",
            "soft_delete_retention_days",
            "purge_protection",
            "rbac",
            "public_network_access",
            "access_policies",
            "keys",
            "tags",
        },
    )
    name = _str(raw, "name", p)
    sku = _str(raw, "sku", p, "standard").lower()
    if sku not in ("standard", "premium"):
        raise SeedError(f"{p}.sku", "must be standard or premium")
    retention = raw.get("soft_delete_retention_days", 90)
    if isinstance(retention, bool) or not isinstance(retention, int) or not 7 <= retention <= 90:
        raise SeedError(f"{p}.soft_delete_retention_days", "must be an integer from 7 to 90")
    flags = {}
    for flag, default in (("purge_protection", True), ("rbac", False)):
        value = raw.get(flag, default)
        if not isinstance(value, bool):
            raise SeedError(f"{p}.{flag}", "must be true or false")
        flags[flag] = value
    pna = _str(raw, "public_network_access", p, "Enabled")
    if pna not in ("Enabled", "Disabled"):
        raise SeedError(f"{p}.public_network_access", "must be Enabled or Disabled")
    policies: list[PolicySpec] = []
    for j, item in enumerate(_list(raw, "access_policies", f"{p}.")):
        pp = f"{p}.access_policies[{j}]"
        praw = _obj(item, pp, {"identity", "object_id", "keys"})
        if ("identity" in praw) == ("object_id" in praw):
            raise SeedError(pp, "give exactly one of identity or object_id")
        ident = praw.get("identity")
        if ident is not None and str(ident).lower() not in identities:
            raise SeedError(f"{pp}.identity", f"unknown identity {ident!r}")
        perms = praw.get("keys", DEFAULT_KEY_PERMISSIONS)
        if not isinstance(perms, list) or not all(isinstance(x, str) for x in perms):
            raise SeedError(f"{pp}.keys", "must be a list of key permissions")
        policies.append(
            PolicySpec(
                identity=str(ident).lower() if ident is not None else None,
                object_id=_str(praw, "object_id", pp) if "object_id" in praw else None,
                keys=list(perms),
            )
        )
    keys: list[KeySpec] = []
    seen: set[str] = set()
    for j, kraw in enumerate(_list(raw, "keys", f"{p}.")):
        key = _compile_key(kraw, f"{p}.keys[{j}]")
        if key.name.lower() in seen:
            raise SeedError(f"{p}.keys[{j}].name", f"duplicate key {key.name!r}")
        seen.add(key.name.lower())
        keys.append(key)
    sub, rg, location = _placement(raw, p, subscriptions)
    return VaultSpec(
        name=name,
        subscription=sub,
        resource_group=rg,
        location=location,
        sku=sku,
        soft_delete_retention_days=retention,
        purge_protection=flags["purge_protection"],
        rbac=flags["rbac"],
        public_network_access=pna,
        policies=policies,
        keys=keys,
        tags=_tags(raw, p),
    )


def _compile_key(raw: Any, p: str) -> KeySpec:
    raw = _obj(raw, p, {"name", "kty", "size", "versions", "rotation_policy"})
    name = _str(raw, "name", p)
    kty = _str(raw, "kty", p, "RSA")
    if kty not in ("RSA", "RSA-HSM"):
        raise SeedError(f"{p}.kty", "must be RSA or RSA-HSM")
    size = raw.get("size", 2048)
    if size not in (2048, 3072, 4096):
        raise SeedError(f"{p}.size", "must be 2048, 3072 or 4096")
    policy = raw.get("rotation_policy")
    if policy is not None and not isinstance(policy, dict):
        raise SeedError(f"{p}.rotation_policy", "must be a rotation policy object (REST shape)")
    versions: list[VersionSpec] = []
    for j, item in enumerate(_list(raw, "versions", f"{p}.") or [{}]):
        vp = f"{p}.versions[{j}]"
        vraw = _obj(item, vp, {"label", "age", "exp", "nbf", "enabled", "tags"})
        label = _str(vraw, "label", vp, f"v{j + 1}")
        if any(v.label == label for v in versions):
            raise SeedError(f"{vp}.label", f"duplicate label {label!r}")
        enabled = vraw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise SeedError(f"{vp}.enabled", "must be true or false")
        versions.append(
            VersionSpec(
                label=label,
                age=_duration(vraw, "age", vp, signed=False) or timedelta(0),
                exp=_duration(vraw, "exp", vp, signed=True),
                nbf=_duration(vraw, "nbf", vp, signed=True),
                enabled=enabled,
                tags=_tags(vraw, vp),
            )
        )
    for j in range(1, len(versions)):
        if versions[j].age > versions[j - 1].age:
            raise SeedError(f"{p}.versions[{j}].age", "versions are listed oldest first")
    return KeySpec(name, kty, size, versions, policy)


def _compile_resource(
    raw: Any,
    p: str,
    rtype: str,
    *,
    subscriptions: dict[str, str],
    identities: dict[str, IdentitySpec],
    vaults: dict[str, VaultSpec],
    labels: set[tuple[str, str, str]],
) -> ResourceSpec:
    raw = _obj(
        raw,
        p,
        {"name", "subscription", "resource_group", "location", "identity", "key", "version", "tags", "sku",
         "backup_policy"},
    )
    name = _str(raw, "name", p)
    sub, rg, location = _placement(raw, p, subscriptions)
    identity = _str(raw, "identity", p, "system")
    if identity.lower() != "system" and identity.lower() not in identities:
        raise SeedError(f"{p}.identity", f"unknown identity {identity!r}")
    if rtype in (POSTGRES_TYPE, ENERGY_TYPE) and identity.lower() == "system":
        raise SeedError(f"{p}.identity", "this service needs a user-assigned identity")
    key_ref = _str(raw, "key", p)
    if key_ref.count("/") != 1:
        raise SeedError(f"{p}.key", "must be 'vault/key'")
    vault_name, key_name = key_ref.split("/")
    vault = vaults.get(vault_name.lower())
    if vault is None or not any(k.name.lower() == key_name.lower() for k in vault.keys):
        raise SeedError(f"{p}.key", f"unknown key {key_ref!r}")
    version = raw.get("version")
    if version is not None and (vault_name.lower(), key_name.lower(), version) not in labels:
        raise SeedError(f"{p}.version", f"unknown version label {version!r} of {key_ref}")
    if version is None and rtype in (POSTGRES_TYPE, ENERGY_TYPE):
        raise SeedError(f"{p}.version", "this service needs a pinned version")
    if version is not None and rtype == COSMOS_TYPE:
        # Azure refuses a versioned keyVaultKeyUri on Cosmos DB accounts (see sandbox/arm/cosmos.py).
        raise SeedError(f"{p}.version", "Cosmos DB accounts take a versionless key URI: use null")
    backup = raw.get("backup_policy")
    if backup is not None and (rtype != COSMOS_TYPE or not isinstance(backup, dict)):
        raise SeedError(f"{p}.backup_policy", "must be an object (Cosmos DB accounts only)")
    sku = raw.get("sku")
    if sku is not None and not isinstance(sku, dict):
        raise SeedError(f"{p}.sku", "must be an object")
    return ResourceSpec(
        type=rtype,
        name=name,
        subscription=sub,
        resource_group=rg,
        location=location,
        identity=identity.lower(),
        vault=vault.name,
        key=key_name,
        version=version,
        tags=_tags(raw, p),
        sku=sku,
        backup_policy=backup,
    )


# ---- applying ------------------------------------------------------------------------------
def vault_url(world: World, name: str) -> str:
    """The vault's data-plane URL as the world serves it (in-process host or loopback port)."""
    # World.vault_url_for is a replaceable attribute (the loopback server swaps it), not typed.
    url_for = cast("Callable[[str], str]", world.vault_url_for)
    return url_for(name)


class _Sender:
    """Builds wire requests the way the SDKs send them and passes them to ``world.handle``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.count = 0

    def arm(self, method: str, path: str, api_version: str, body: JsonObj, what: str) -> JsonObj:
        return self._send(
            Request.build(
                method=method,
                host=ARM_HOST,
                path=path,
                query_string=f"api-version={api_version}",
                headers=self._headers(body),
                body=json.dumps(body).encode(),
                service=Service.ARM,
            ),
            what,
        )

    def vault(self, vault: str, method: str, path: str, body: JsonObj, what: str) -> JsonObj:
        host = urlsplit(vault_url(self.world, vault)).netloc
        return self._send(
            Request.build(
                method=method,
                host=host,
                path=path,
                query_string=f"api-version={API_KEYS}",
                headers=self._headers(body),
                body=json.dumps(body).encode(),
                service=Service.VAULT,
                vault=vault,
            ),
            what,
        )

    def admin(self, method: str, path: str, body: JsonObj, what: str) -> JsonObj:
        data = json.dumps(body).encode()
        req = Request.build(method=method, host="sandbox.local", path=path, query_string="",
                            headers=self._headers(body), body=data, service=Service.ADMIN, vault=None)
        return self._send(req, what)

    @staticmethod
    def _headers(body: JsonObj) -> dict[str, str]:
        return {
            "Authorization": "Bearer sandbox-seed",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Content-Length": str(len(json.dumps(body))),
            "User-Agent": "keysteward-sandbox-seed",
        }

    def _send(self, req: Request, what: str) -> JsonObj:
        self.count += 1
        resp = self.world.handle(req)
        if resp.status >= 400 or resp.drop:
            raise SeedApplyError(what, resp.status, resp.body)
        if not resp.body:
            return {}
        try:
            parsed = json.loads(resp.body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


def apply_seed(world: World, doc: Any) -> SeedResult:
    """Checks then applies a seed document (see the module docstring)."""
    return apply_plan(world, compile_seed(doc))


def load_seed_file(path: str | Path) -> Any:
    """Reads a seed file; raises :class:`SeedError` when it is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SeedError(str(path), f"cannot read the seed: {err}") from err


def apply_plan(world: World, plan: Plan) -> SeedResult:
    """Sends the plan's requests; raises :class:`SeedApplyError` on the first refusal."""
    started = time.perf_counter()
    result = SeedResult()
    send = _Sender(world)
    with world.lock:
        for sub in plan.subscriptions:
            if sub not in world.subscriptions:
                world.subscriptions.append(sub)
        saved_throttle = world.throttle.settings.enabled
        saved_lro = (world.lro.duration_s, world.lro.fail_rate)
        world.throttle.configure(enabled=False)
        world.lro.duration_s, world.lro.fail_rate = 0.0, 0.0
    try:
        _apply(world, plan, send, result)
    finally:
        with world.lock:
            world.throttle.configure(enabled=saved_throttle)
            world.lro.duration_s, world.lro.fail_rate = saved_lro
        # Operations created with zero duration complete on the next tick.
        world.tick(world.clock.now())
    result.requests = send.count
    result.elapsed_s = time.perf_counter() - started
    return result


def _apply(world: World, plan: Plan, send: _Sender, result: SeedResult) -> None:
    # Resource groups are not modelled by the sandbox's ARM: resources are placed directly.
    principals: dict[str, str] = {}
    for ident in plan.identities:
        out = send.arm("PUT", ident.id, API_IDENTITY, {"location": ident.location}, f"identity {ident.name}")
        props = out.get("properties") or {}
        principal = str(props.get("principalId") or principal_id_for(ident.id))
        principals[ident.name.lower()] = principal
        result.identities[ident.name] = {
            "id": ident.id,
            "principalId": principal,
            "clientId": props.get("clientId"),
        }
    for vault in plan.vaults:
        _put_vault(world, vault, principals, send)
        result.vault_urls[vault.name] = vault_url(world, vault.name)
    # Resources are created once every version exists, at the clock's final time.
    _create_versions(world, plan, send, result)
    identity_ids = {i.name.lower(): i.id for i in plan.identities}
    for res in plan.resources:
        rid, body, api = _resource_body(world, res, identity_ids, result)
        send.arm("PUT", rid, api, body, f"{res.type} {res.name}")
        result.resources[res.name] = rid
    for consumer in plan.consumers:
        version = result.versions[f"{consumer.vault}/{consumer.key}/{consumer.label}"]
        body = {"principal_id": consumer.principal_id, "every_s": consumer.every_s,
                "key": f"{vault_url(world, consumer.vault)}/keys/{consumer.key}/{version}"}
        send.admin("POST", "/sandbox/consumers", body, f"consumer {consumer.principal_id}")


def _put_vault(world: World, vault: VaultSpec, principals: dict[str, str], send: _Sender) -> None:
    policies = [
        {
            "tenantId": world.tenant_id,
            "objectId": principals[p.identity] if p.identity else p.object_id,
            "permissions": {"keys": list(p.keys), "secrets": [], "certificates": []},
        }
        for p in vault.policies
    ]
    properties: JsonObj = {
        "tenantId": world.tenant_id,
        "sku": {"family": "A", "name": vault.sku},
        "accessPolicies": policies,
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": vault.soft_delete_retention_days,
        "enableRbacAuthorization": vault.rbac,
        "publicNetworkAccess": vault.public_network_access,
    }
    if vault.purge_protection:
        # Azure refuses enablePurgeProtection=false; leaving it out is how it stays off.
        properties["enablePurgeProtection"] = True
    body = {"location": vault.location, "tags": vault.tags, "properties": properties}
    path = (
        f"/subscriptions/{vault.subscription}/resourceGroups/{vault.resource_group}"
        f"/providers/Microsoft.KeyVault/vaults/{vault.name}"
    )
    send.arm("PUT", path, API_VAULT, body, f"vault {vault.name}")


def _create_versions(world: World, plan: Plan, send: _Sender, result: SeedResult) -> None:
    """Creates every version oldest first, moving the clock so ages come out right."""
    items = [(v.age, vault, key, v) for vault in plan.vaults for key in vault.keys for v in key.versions]
    if not items:
        return
    oldest = max(age for age, *_ in items)
    start = world.clock.now()
    end = start + oldest
    # Stable sort: same-age versions keep document order, so a key's versions stay in order.
    items.sort(key=lambda item: -item[0].total_seconds())
    for age, vault, key, version in items:
        at = end - age
        if at > world.clock.now():
            world.clock.set(at)
        attributes: JsonObj = {"enabled": version.enabled}
        if version.exp is not None:
            attributes["exp"] = int((end + version.exp).timestamp())
        if version.nbf is not None:
            attributes["nbf"] = int((end + version.nbf).timestamp())
        body: JsonObj = {"kty": key.kty, "key_size": key.size, "attributes": attributes}
        if version.tags:
            body["tags"] = version.tags
        out = send.vault(vault.name, "POST", f"/keys/{key.name}/create", body, f"key {vault.name}/{key.name}")
        kid = str((out.get("key") or {}).get("kid") or "")
        ref = f"{vault.name}/{key.name}/{version.label}"
        result.key_ids[ref] = kid
        result.versions[ref] = kid.rstrip("/").rsplit("/", 1)[-1] if kid else ""
    if world.clock.now() < end:
        world.clock.set(end)
    # Policies go on last: set earlier, Key Vault would auto-rotate while the clock catches up,
    # and the seeded keys would carry versions the document never described.
    for vault in plan.vaults:
        for key in vault.keys:
            if key.rotation_policy:
                send.vault(
                    vault.name,
                    "PUT",
                    f"/keys/{key.name}/rotationpolicy",
                    key.rotation_policy,
                    f"rotation policy {vault.name}/{key.name}",
                )


def _resource_body(
    world: World, res: ResourceSpec, identity_ids: dict[str, str], result: SeedResult
) -> tuple[str, JsonObj, str]:
    base_url = vault_url(world, res.vault).rstrip("/")
    version_id = result.versions.get(f"{res.vault}/{res.key}/{res.version}", "") if res.version else ""
    uai = identity_ids.get(res.identity)
    identity: JsonObj = (
        {"type": "UserAssigned", "userAssignedIdentities": {uai: {}}} if uai else {"type": "SystemAssigned"}
    )
    base = f"/subscriptions/{res.subscription}/resourceGroups/{res.resource_group}/providers/{res.type}/{res.name}"
    key_uri = f"{base_url}/keys/{res.key}" + (f"/{version_id}" if version_id else "")
    body: JsonObj = {"location": res.location, "tags": res.tags, "identity": identity}
    if res.type == KUSTO_TYPE:
        body["sku"] = res.sku or {"name": "Standard_E8ads_v5", "tier": "Standard", "capacity": 2}
        body["properties"] = {
            "keyVaultProperties": {
                "keyName": res.key,
                "keyVersion": version_id,
                "keyVaultUri": f"{base_url}/",
                "userIdentity": uai or "",
            }
        }
        return base, body, API_KUSTO
    if res.type == COSMOS_TYPE:
        body["kind"] = "GlobalDocumentDB"
        body["properties"] = {
            "databaseAccountOfferType": "Standard",
            "locations": [{"locationName": res.location, "failoverPriority": 0, "isZoneRedundant": False}],
            "keyVaultKeyUri": key_uri,
            "defaultIdentity": f"UserAssignedIdentity={uai}" if uai else "SystemAssignedIdentity",
        }
        if res.backup_policy is not None:
            body["properties"]["backupPolicy"] = res.backup_policy
        return base, body, API_COSMOS
    if res.type == POSTGRES_TYPE:
        body["kind"] = "CosmosDBForPostgreSQL"
        body["properties"] = {
            "createMode": "Default",
            "postgresqlVersion": "16",
            "dataEncryption": {
                "primaryKeyUri": key_uri,
                "primaryUserAssignedIdentityId": uai,
                "type": "AzureKeyVault",
            },
        }
        return base, body, API_POSTGRES
    # Energy: oep 2024-05-21 EnergyServiceProperties.encryption.
    body["properties"] = {
        "dataPartitionNames": [{"name": "dp1"}],
        "encryption": {
            "keySource": "Microsoft.Keyvault",
            "keyVaultProperties": {
                "keyName": res.key,
                "keyVersion": version_id,
                "keyVaultUri": f"{base_url}/",
                "userIdentity": uai,
            },
        },
    }
    return base, body, API_ENERGY


# ---- fleets for benchmarks -----------------------------------------------------------------
def generate_fleet(
    n_clusters: int,
    n_accounts: int,
    n_subscriptions: int = 1,
    *,
    versions: int = 2,
    pinned_fraction: float = 1.0,
    location: str = "westeurope",
) -> JsonObj:
    """A seed with ``n_clusters`` Kusto clusters and ``n_accounts`` Cosmos accounts spread
    round-robin over ``n_subscriptions`` subscriptions, all on one key (``kv-fleet/cmk-fleet``)
    through one user-assigned identity. The first ``pinned_fraction`` of clusters pin the
    oldest version; the rest are versionless. Cosmos accounts are always versionless (Azure
    takes no versioned key URI on them)."""
    if n_subscriptions < 1:
        raise ValueError("n_subscriptions must be at least 1")
    if versions < 1:
        raise ValueError("versions must be at least 1")
    subs = [f"00000000-0000-0000-0000-{i + 1:012x}" for i in range(n_subscriptions)]
    version_specs = [{"label": f"v{i + 1}", "age": f"P{(versions - i) * 10}D", "exp": "P365D"} for i in range(versions)]
    doc: JsonObj = {
        "description": f"fleet: {n_clusters} clusters, {n_accounts} accounts, {n_subscriptions} subs",
        "subscriptions": [{"id": s, "name": f"fleet-{i + 1}"} for i, s in enumerate(subs)],
        "identities": [
            {
                "name": "uai-fleet",
                "subscription": subs[0],
                "resource_group": "rg-fleet-security",
                "location": location,
            }
        ],
        "vaults": [
            {
                "name": "kv-fleet",
                "subscription": subs[0],
                "resource_group": "rg-fleet-security",
                "location": location,
                "access_policies": [{"identity": "uai-fleet", "keys": DEFAULT_KEY_PERMISSIONS}],
                "keys": [{"name": "cmk-fleet", "size": 3072, "versions": version_specs}],
            }
        ],
    }
    pinned_clusters = int(n_clusters * pinned_fraction)
    doc["kusto_clusters"] = [
        {
            "name": f"adxfleet{i:05d}",
            "subscription": subs[i % n_subscriptions],
            "resource_group": f"rg-fleet-data-{i % n_subscriptions}",
            "location": location,
            "identity": "uai-fleet",
            "key": "kv-fleet/cmk-fleet",
            "version": "v1" if i < pinned_clusters else None,
        }
        for i in range(n_clusters)
    ]
    doc["cosmos_accounts"] = [
        {
            "name": f"cosmos-fleet-{i:05d}",
            "subscription": subs[i % n_subscriptions],
            "resource_group": f"rg-fleet-data-{i % n_subscriptions}",
            "location": location,
            "identity": "uai-fleet",
            "key": "kv-fleet/cmk-fleet",
            "version": None,
        }
        for i in range(n_accounts)
    ]
    return doc


def demo_seed() -> JsonObj:
    """The bundled demo estate (``sandbox/seeds/demo.json``)."""
    doc = load_seed_file(DEMO_PATH)
    if not isinstance(doc, dict):
        raise SeedError(str(DEMO_PATH), "must be a JSON object")
    return doc


def seed_summary(result: SeedResult, when: datetime) -> str:
    return (
        f"seeded {len(result.resources)} resources, {len(result.versions)} key versions "
        f"with {result.requests} requests in {result.elapsed_s:.2f}s; clock at {when.isoformat()}"
    )
