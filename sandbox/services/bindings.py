"""Simulated services: per-world bookkeeping (pending operations, failure rolls, wake-ups) and
which key a resource is bound to through which identity (:func:`binding_for`, :func:`check_binding`)."""

from __future__ import annotations

import heapq
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sandbox.services.status import (
    COSMOS_ACCOUNTS,
    COSMOS_FIRST_PARTY_PRINCIPAL,
    ENERGY_SERVICES,
    KUSTO_CLUSTERS,
    KUSTO_DATABASES,
    POSTGRES_CLUSTERS,
    JsonObj,
)
from sandbox.state import AccessResult, ArmResource, Operation, key_access, principal_id_for

if TYPE_CHECKING:
    from sandbox.world import World


# ---- per-world simulation bookkeeping ----------------------------------------------------------
@dataclass
class _SimState:
    rng: random.Random
    ops: list[tuple[float, str]] = field(default_factory=list)  # heap of (due timestamp, op id)
    next_sweep: float | None = None


_STATES = weakref.WeakKeyDictionary["World", _SimState]()


def _state(world: World) -> _SimState:
    st = _STATES.get(world)
    if st is None:
        st = _STATES[world] = _SimState(rng=random.Random(world.seed))
    return st


def track_operation(world: World, op: Operation) -> None:
    """Registers a new operation so :func:`tick` completes it once the clock passes ``op.due``."""
    heapq.heappush(_state(world).ops, (op.due.timestamp(), op.id))


def roll_failure(world: World) -> bool:
    """Whether the next operation fails by fault injection (``world.lro.fail_rate``, seeded)."""
    rate = world.lro.fail_rate
    return rate > 0 and _state(world).rng.random() < rate


def wake_at(world: World, when: float) -> None:
    """Asks for a usage sweep no later than ``when`` (sandbox timestamp)."""
    st = _state(world)
    if st.next_sweep is None or when < st.next_sweep:
        st.next_sweep = when


# ---- key URIs and identities ------------------------------------------------------------------
_VAULT_SUFFIX = ".vault.azure.net"


def vault_name_for_url(world: World, url: str) -> tuple[str | None, str]:
    """(vault name, rest of the path) for a vault URL or key URL; name None when no vault matches.

    Real vault hosts (``{name}.vault.azure.net``) resolve by name even when the vault does not
    exist (the caller then learns ``VaultNotFound``); other hosts (loopback) resolve by
    matching ``world.vault_url_for`` of an existing vault.
    """
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if host.endswith(_VAULT_SUFFIX):
        return host[: -len(_VAULT_SUFFIX)], parts.path
    text = url.strip()
    url_for: Callable[[str], str] = world.vault_url_for
    for name in world.vaults:
        base = url_for(name).rstrip("/")
        if text.lower() == base.lower() or text.lower().startswith(base.lower() + "/"):
            return name, text[len(base) :].split("?", 1)[0] or "/"
    return None, parts.path


def parse_key_uri(world: World, uri: str) -> tuple[str | None, str, str | None] | None:
    """``https://{vault}/keys/{name}[/{version}]`` -> (vault name or None, key name, version or None).

    Returns None when the text is not a key URI at all.
    """
    if not isinstance(uri, str) or not uri.lower().startswith("https://"):
        return None
    vault, path = vault_name_for_url(world, uri)
    segs = [s for s in path.split("/") if s]
    if len(segs) not in (2, 3) or segs[0].lower() != "keys":
        return None
    return vault, segs[1], (segs[2] if len(segs) == 3 else None)


def uai_principal(world: World, identity: JsonObj | None, uai_id: str) -> str | None:
    """Principal id of user-assigned identity ``uai_id`` when it is assigned in ``identity``."""
    uais = (identity or {}).get("userAssignedIdentities") or {}
    for rid, entry in uais.items():
        if rid.lower() == uai_id.strip().lower():
            known = world.identities.get(rid.lower())
            if known and known.get("principalId"):
                return known["principalId"]
            if isinstance(entry, dict) and entry.get("principalId"):
                return str(entry["principalId"])
            return principal_id_for(rid)
    return None


def system_principal(identity: JsonObj | None) -> str | None:
    if not identity or "systemassigned" not in str(identity.get("type", "")).lower().replace(" ", ""):
        return None
    pid = identity.get("principalId")
    return str(pid) if pid else None


def cosmos_principal(world: World, identity: JsonObj | None, default_identity: str | None) -> str | None:
    """The principal Cosmos uses for its key, per ``defaultIdentity``."""
    value = (default_identity or "FirstPartyIdentity").strip()
    if value.lower() == "firstpartyidentity":
        return COSMOS_FIRST_PARTY_PRINCIPAL
    if value.lower() == "systemassignedidentity":
        return system_principal(identity)
    if value.lower().startswith("userassignedidentity="):
        return uai_principal(world, identity, value.split("=", 1)[1])
    return None


@dataclass(frozen=True)
class Binding:
    """Which key a resource encrypts with, and as whom."""

    vault: str | None
    key: str
    version: str | None  # None = versionless
    principal: str | None
    vault_base: str  # the vault URL as the resource names it, without a trailing slash


def binding_for(world: World, rtype: str, properties: JsonObj, identity: JsonObj | None) -> Binding | None:
    """The CMK binding described by a resource's properties; None when it uses Microsoft keys."""
    rtype = rtype.lower()
    if rtype in (KUSTO_CLUSTERS, KUSTO_DATABASES):
        # The same keyVaultProperties on both; a database with its own key uses it through its
        # cluster's identity (``identity`` here, see :func:`identity_of`).
        kvp = properties.get("keyVaultProperties")
        if not isinstance(kvp, dict) or not kvp.get("keyVaultUri") or not kvp.get("keyName"):
            return None
        base = str(kvp["keyVaultUri"]).rstrip("/")
        vault, _ = vault_name_for_url(world, base)
        user = kvp.get("userIdentity")
        principal = uai_principal(world, identity, str(user)) if user else system_principal(identity)
        return Binding(vault, str(kvp["keyName"]), kvp.get("keyVersion") or None, principal, base)
    if rtype == COSMOS_ACCOUNTS:
        uri = properties.get("keyVaultKeyUri")
        parsed = parse_key_uri(world, uri) if uri else None
        if parsed is None:
            return None
        principal = cosmos_principal(world, identity, properties.get("defaultIdentity"))
        return Binding(parsed[0], parsed[1], parsed[2], principal, _base_of(str(uri)))
    if rtype == POSTGRES_CLUSTERS:
        # postgresqlhsc 2023-03-02-preview: dataEncryption.type AzureKeyVault | SystemAssigned.
        enc = properties.get("dataEncryption")
        if not isinstance(enc, dict) or enc.get("type") != "AzureKeyVault":
            return None
        uri = enc.get("primaryKeyUri")
        parsed = parse_key_uri(world, uri) if uri else None
        if parsed is None:
            return None
        uai = enc.get("primaryUserAssignedIdentityId")
        principal = uai_principal(world, identity, str(uai)) if uai else None
        return Binding(parsed[0], parsed[1], parsed[2], principal, _base_of(str(uri)))
    if rtype == ENERGY_SERVICES:
        # oep 2024-05-21: encryption.keyVaultProperties {keyName, keyVersion, keyVaultUri, userIdentity}.
        enc = properties.get("encryption")
        kvp = enc.get("keyVaultProperties") if isinstance(enc, dict) else None
        if not isinstance(kvp, dict) or not kvp.get("keyVaultUri") or not kvp.get("keyName"):
            return None
        base = str(kvp["keyVaultUri"]).rstrip("/")
        vault, _ = vault_name_for_url(world, base)
        user = kvp.get("userIdentity")
        principal = uai_principal(world, identity, str(user)) if user else system_principal(identity)
        return Binding(vault, str(kvp["keyName"]), kvp.get("keyVersion") or None, principal, base)
    return None


def identity_of(world: World, res: ArmResource) -> JsonObj | None:
    """The identity a resource uses its key as: its own, or for a Kusto database its cluster's."""
    if res.type.lower() == KUSTO_DATABASES:
        parent = world.resources.get(str(res.sim.get("cluster", "")).lower())
        return parent.identity if parent is not None else None
    return res.identity


def _base_of(key_uri: str) -> str:
    idx = key_uri.lower().find("/keys/")
    return key_uri[:idx].rstrip("/") if idx >= 0 else key_uri.rstrip("/")


def check_binding(world: World, binding: Binding, now: int) -> AccessResult:
    """Can the binding's identity use its key right now (versionless: the newest usable version)?"""
    if binding.vault is None:
        return AccessResult(
            False, binding.version, "VaultNotFound", f"No key vault answers at {binding.vault_base}."
        )
    return key_access(
        world.vaults,
        vault_name=binding.vault,
        key_name=binding.key,
        version=binding.version,
        principal_id=binding.principal,
        now=now,
    )


