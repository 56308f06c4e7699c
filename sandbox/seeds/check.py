"""Seeds: checking a seed document in full (:func:`compile_seed`) into a :class:`Plan`; a
:class:`SeedError` names the field at fault."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sandbox.clock import parse_iso_duration
from sandbox.seeds.model import (
    _RESOURCE_SECTIONS,
    _TOP_FIELDS,
    COSMOS_TYPE,
    DEFAULT_KEY_PERMISSIONS,
    ENERGY_TYPE,
    POSTGRES_TYPE,
    ConsumerSpec,
    IdentitySpec,
    JsonObj,
    KeySpec,
    Plan,
    PolicySpec,
    ResourceSpec,
    SeedError,
    VaultSpec,
    VersionSpec,
)

if TYPE_CHECKING:
    pass


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


