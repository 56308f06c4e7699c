"""Simulated services over sandbox time: LRO completion and CMK use by clusters and accounts.

What happens as the sandbox clock moves (:func:`tick`, called on every request and on every
clock move):

* Due long-running operations complete (a heap keyed by due time, so nothing is scanned when
  nothing is due). An operation fails when fault injection says so (``world.lro.fail_rate``,
  seeded from ``world.seed``) or when the key it would bind cannot be used by the resource's
  identity (:func:`sandbox.state.key_access`); otherwise its patch is applied.
* Every ``service_settings.usage_interval_s`` of sandbox time, one sweep makes every
  resource with a customer-managed key "use" it through its identity. A 10,000-cluster world
  therefore pays one scan per interval, never one per request.

Outcomes of a use, per service:

* Kusto: on lost access the cluster's ``state`` becomes :data:`KUSTO_SUSPENDED_STATE` with a
  ``stateReason`` naming the cause; it returns to ``Running`` at the first successful use.
* Cosmos DB: ``customerManagedKeyStatus`` becomes the documented revoked text for the cause
  (see :data:`COSMOS_REVOKED_MESSAGES`); after access returns it goes back to
  :data:`COSMOS_CMK_CONFIRMED` only once ``service_settings.cosmos_recovery_s`` have passed.
* Kusto databases with their own key: ``suspensionDetails {suspensionStartDate}`` appears while
  the key cannot be used and goes when it can (kusto.json 2024-04-13 ``ReadWriteDatabaseProperties``).
* PostgreSQL clusters and Energy services document no status field for key access, so the
  outcome lives in simulation state only.

Simulation state kept in ``ArmResource.sim`` (never serialised; the admin API may read it):
``versionInUse`` (key version the service currently uses), ``lastUse`` (``at``, ``ok``,
``code``, ``reason``, ``version``), ``suspended`` (Kusto, key-caused), ``revoked`` and
``recoverAt`` (Cosmos), ``pendingOperation`` (id of the running LRO), ``creating``,
``stateBefore``.

Versionless bindings (Cosmos ``keyVaultKeyUri`` without a version, Kusto empty
``keyVersion``) follow a new key version only ``service_settings.versionless_lag_s`` after
that version was created; until then the version in use stays where it was, so disabling it
early revokes the service, exactly the hazard the 24-hour retention rule guards against.
"""

from __future__ import annotations

import heapq
import math
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sandbox import audit
from sandbox.clock import isoformat
from sandbox.state import AccessResult, ArmResource, Operation, key_access, principal_id_for

if TYPE_CHECKING:
    from sandbox.world import World

JsonObj = dict[str, Any]

KUSTO_CLUSTERS = "microsoft.kusto/clusters"
KUSTO_DATABASES = "microsoft.kusto/clusters/databases"
COSMOS_ACCOUNTS = "microsoft.documentdb/databaseaccounts"
POSTGRES_CLUSTERS = "microsoft.dbforpostgresql/servergroupsv2"
ENERGY_SERVICES = "microsoft.openenergyplatform/energyservices"
USER_IDENTITIES = "microsoft.managedidentity/userassignedidentities"

# Azure Cosmos DB's first-party application ("Azure Cosmos DB", app id a232010e-...). A vault
# grants it access by this id when an account uses defaultIdentity=FirstPartyIdentity; the
# sandbox uses the app id as its object id in every tenant so access policies can name it.
COSMOS_FIRST_PARTY_PRINCIPAL = "a232010e-820c-4083-83bb-3ace5fc29d0b"

# Kusto's State enum has no Suspended/Inaccessible member. ADX suspends a cluster that loses
# its key and resumes it when access returns; of the documented values, "Stopped" is the one
# that means "not serving, data kept, resumable", whereas "Unavailable" reads as a platform
# fault. ``stateReason`` says that the key is the cause.
KUSTO_SUSPENDED_STATE = "Stopped"

# customerManagedKeyStatus texts: the values of the ``CustomerManagedKeyStatus`` enum published in
# azure-rest-api-specs specification/cosmos-db/resource-manager/Microsoft.DocumentDB/stable/
# 2023-09-15/cosmos-db.json (read through its verbatim mirror, hashicorp/pandora's CosmosDB
# v2023_09_15 CustomerManagedKeyStatusConstant); 2026-03-15 types the property as a plain string. Which cause
# Azure reports with which text is the troubleshooting guide's mapping (cmk-troubleshooting-guide:
# "the key is disabled or expired" falls under 4002); a not-yet-valid key is mapped to 4002 too,
# and a deleted key or version to 4003: guesses by analogy.
COSMOS_CMK_CONFIRMED = "Access to the configured customer managed key confirmed."

_COSMOS_GUIDE = "https://learn.microsoft.com/en-us/azure/cosmos-db/cmk-troubleshooting-guide"
_COSMOS_REVOKED = "Access to your account is currently revoked"
_COSMOS_MORE = "for more details about this error and how to restore access to your account please visit"


def _cosmos_text(because: str, anchor: str, code: int) -> tuple[int, str]:
    return code, f"{_COSMOS_REVOKED} because {because}; {_COSMOS_MORE} {_COSMOS_GUIDE}{anchor} ({code})."


_UNAUTHORIZED = _cosmos_text(
    "the current default identity no longer has permission to the associated Key Vault key",
    "#default-identity-is-unauthorized-to-access-the-azure-key-vault-key", 4002)
_KEY_NOT_FOUND = _cosmos_text(
    "the correspondent key is not found on the specified Key Vault", "#azure-key-vault-resource-not-found", 4003)

# key_access cause -> (code, documented customerManagedKeyStatus text)
COSMOS_REVOKED_MESSAGES: dict[str, tuple[int, str]] = {
    "AccessDenied": _UNAUTHORIZED,
    "KeyDisabled": _UNAUTHORIZED,
    "KeyExpired": _UNAUTHORIZED,
    "KeyNotYetValid": _UNAUTHORIZED,
    "KeyNotFound": _KEY_NOT_FOUND,
    "KeyDeleted": _KEY_NOT_FOUND,
    "VersionNotFound": _KEY_NOT_FOUND,
    "VaultNotFound": _cosmos_text(
        "the correspondent Azure Key Vault was not found", "#azure-key-vault-resource-not-found", 4017),
    "NoIdentity": _cosmos_text(
        "the Azure Cosmos DB account has an undefined default identity",
        "#invalid-azure-cosmos-db-default-identity", 4015),
}
# The enum's one text without a cause or code, for any other refusal.
COSMOS_REVOKED_GENERIC = f"{_COSMOS_REVOKED}; {_COSMOS_MORE} {_COSMOS_GUIDE}"


def cosmos_revoked_status(result: AccessResult) -> str:
    """The ``customerManagedKeyStatus`` text for a refused key use."""
    known = COSMOS_REVOKED_MESSAGES.get(result.code)
    return known[1] if known is not None else COSMOS_REVOKED_GENERIC


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
    if rtype == KUSTO_CLUSTERS:
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
    if rtype == KUSTO_DATABASES:
        # A database with its own key uses it through its cluster's identity (``identity`` here,
        # see :func:`identity_of`).
        kvp = properties.get("keyVaultProperties")
        if not isinstance(kvp, dict) or not kvp.get("keyVaultUri") or not kvp.get("keyName"):
            return None
        base = str(kvp["keyVaultUri"]).rstrip("/")
        vault, _ = vault_name_for_url(world, base)
        user = kvp.get("userIdentity")
        principal = uai_principal(world, identity, str(user)) if user else system_principal(identity)
        return Binding(vault, str(kvp["keyName"]), kvp.get("keyVersion") or None, principal, base)
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


# ---- the clock's effects ----------------------------------------------------------------------
def settings_changed(world: World) -> None:
    """New service settings take effect now: the next usage sweep is rescheduled."""
    _state(world).next_sweep = None


def tick(world: World, now: datetime) -> None:
    """Completes due operations and, once per usage interval, lets every service use its key."""
    st = _state(world)
    ts = now.timestamp()
    while st.ops and st.ops[0][0] <= ts:
        _, op_id = heapq.heappop(st.ops)
        op = world.operations.get(op_id)
        if op is not None and op.status == "InProgress":
            complete_operation(world, op)
    if st.next_sweep is None or ts >= st.next_sweep:
        st.next_sweep = ts + max(1.0, world.service_settings.usage_interval_s)
        sweep(world, now)


def complete_operation(world: World, op: Operation) -> None:
    """Ends ``op``: applies its patch, or fails it and leaves the resource's key settings alone."""
    res = world.resources.get(op.resource_id.lower())
    if res is None:
        op.status = "Canceled"
        op.error = {"code": "ResourceNotFound", "message": f"The resource {op.resource_id} no longer exists."}
        return
    res.sim.pop("pendingOperation", None)
    creating = bool(res.sim.pop("creating", False))
    now_ts = int(op.due.timestamp())
    failure: JsonObj | None = None
    if op.will_fail:
        failure = {
            "code": "InternalServerError",
            "message": f"The operation {op.kind} on {res.name} failed (sandbox fault injection, lro.fail_rate).",
        }
    else:
        failure = _validate_key_change(world, res, op, now_ts, creating=creating)
    if failure is not None:
        op.status = "Failed"
        op.error = failure
        _apply_failure(res, creating=creating)
    else:
        op.status = "Succeeded"
        _apply_success(world, res, op, now_ts)
    res.new_etag()


_KEY_FIELDS = ("keyVaultProperties", "keyVaultKeyUri", "defaultIdentity")


def _validate_key_change(
    world: World, res: ArmResource, op: Operation, now: int, *, creating: bool
) -> JsonObj | None:
    if not creating and not any(k in op.patch for k in _KEY_FIELDS) and not op.patch.get("_identityChanged"):
        return None
    props = {**res.properties, **{k: v for k, v in op.patch.items() if not k.startswith("_")}}
    binding = binding_for(world, res.type, props, identity_of(world, res))
    if binding is None:
        return None
    result = check_binding(world, binding, now)
    if result.ok:
        return None
    return {
        "code": result.code,
        "message": (
            f"{res.name} cannot use key '{binding.key}'"
            f"{' version ' + binding.version if binding.version else ''} in {binding.vault_base}: {result.reason}"
        ),
    }


def _apply_failure(res: ArmResource, *, creating: bool) -> None:
    rtype = res.type.lower()
    if rtype == KUSTO_CLUSTERS:
        res.properties["provisioningState"] = "Failed"
        res.properties["state"] = "Unavailable" if creating else res.sim.pop("stateBefore", "Running")
    elif rtype == COSMOS_ACCOUNTS:
        # A failed update leaves a healthy account as it was; a failed create leaves it Failed.
        res.properties["provisioningState"] = "Failed" if creating else "Succeeded"
    else:
        res.properties["provisioningState"] = "Failed"


def _apply_success(world: World, res: ArmResource, op: Operation, now: int) -> None:
    rtype = res.type.lower()
    key_changed = any(k in op.patch for k in ("keyVaultProperties", "keyVaultKeyUri"))
    res.properties.update({k: v for k, v in op.patch.items() if not k.startswith("_")})
    res.properties["provisioningState"] = "Succeeded"
    binding = binding_for(world, res.type, res.properties, identity_of(world, res))
    if key_changed or "versionInUse" not in res.sim:
        res.sim.pop("versionInUse", None)
        if binding is not None:
            result = check_binding(world, binding, now)
            if result.ok:
                res.sim["versionInUse"] = result.version
    if rtype == KUSTO_CLUSTERS:
        res.sim.pop("stateBefore", None)
        res.sim.pop("suspended", None)
        res.properties["state"] = "Running"
        res.properties["stateReason"] = None
    elif rtype == KUSTO_DATABASES:
        res.properties.pop("suspensionDetails", None)
    elif rtype == COSMOS_ACCOUNTS:
        if binding is None:
            for name in ("keyVaultKeyUriVersion", "customerManagedKeyStatus"):
                res.properties.pop(name, None)
            res.sim.pop("revoked", None)
            res.sim.pop("recoverAt", None)
        elif key_changed or not res.sim.get("revoked"):
            res.sim.pop("revoked", None)
            res.sim.pop("recoverAt", None)
            res.properties["customerManagedKeyStatus"] = COSMOS_CMK_CONFIRMED
            _set_cosmos_version(res, binding)


def _set_cosmos_version(res: ArmResource, binding: Binding) -> None:
    version = res.sim.get("versionInUse")
    if version:
        res.properties["keyVaultKeyUriVersion"] = f"{binding.vault_base}/keys/{binding.key}/{version}"


_KEY_USERS = frozenset({KUSTO_CLUSTERS, KUSTO_DATABASES, COSMOS_ACCOUNTS, POSTGRES_CLUSTERS, ENERGY_SERVICES})


def sweep(world: World, now: datetime) -> None:
    """One round of key use by every resource with a CMK (skipping those mid-operation)."""
    ts = int(now.timestamp())
    for res in world.resources.values():
        if res.type.lower() not in _KEY_USERS:
            continue
        if res.sim.get("pendingOperation"):
            continue
        binding = binding_for(world, res.type, res.properties, identity_of(world, res))
        if binding is None:
            continue
        use_key(world, res, binding, ts)


def use_key(world: World, res: ArmResource, binding: Binding, now: int) -> AccessResult:
    """``res`` uses its key once at ``now``; updates its status fields and simulation state."""
    result = _use(world, res, binding, now)
    # The unwrap the service just made is in its vault's audit log, with the version it used.
    audit.record_use(world, vault=binding.vault, key=binding.key, principal=binding.principal, result=result, at=now)
    res.sim["lastUse"] = {
        "at": isoformat(datetime.fromtimestamp(now, tz=world.clock.now().tzinfo)),
        "ok": result.ok,
        "code": result.code,
        "reason": result.reason,
        "version": result.version,
    }
    rtype = res.type.lower()
    if rtype == KUSTO_CLUSTERS:
        if result.ok:
            if res.sim.pop("suspended", False):
                res.properties["state"] = "Running"
                res.properties["stateReason"] = None
        elif not res.sim.get("suspended"):
            res.sim["suspended"] = True
            res.properties["state"] = KUSTO_SUSPENDED_STATE
            res.properties["stateReason"] = (
                f"The cluster is suspended: it cannot access its customer-managed key "
                f"'{binding.key}' in {binding.vault_base} ({result.code}: {result.reason})"
            )
    elif rtype == KUSTO_DATABASES:
        # kusto.json 2024-04-13: ReadWriteDatabaseProperties.suspensionDetails {suspensionStartDate}
        # is present while the database is suspended (a database loses its own key -> suspended).
        if result.ok:
            res.properties.pop("suspensionDetails", None)
        elif not res.properties.get("suspensionDetails"):
            res.properties["suspensionDetails"] = {
                "suspensionStartDate": isoformat(datetime.fromtimestamp(now, tz=world.clock.now().tzinfo))
            }
    elif rtype == COSMOS_ACCOUNTS:
        if result.ok:
            _set_cosmos_version(res, binding)
            if res.sim.get("revoked"):
                recover_at = float(
                    res.sim.setdefault("recoverAt", now + world.service_settings.cosmos_recovery_s)
                )
                if now >= recover_at:
                    res.sim.pop("revoked", None)
                    res.sim.pop("recoverAt", None)
                    res.properties["customerManagedKeyStatus"] = COSMOS_CMK_CONFIRMED
                else:
                    wake_at(world, math.ceil(recover_at))
            else:
                res.properties["customerManagedKeyStatus"] = COSMOS_CMK_CONFIRMED
        else:
            res.sim["revoked"] = True
            res.sim.pop("recoverAt", None)
            res.properties["customerManagedKeyStatus"] = cosmos_revoked_status(result)
    return result


def _use(world: World, res: ArmResource, binding: Binding, now: int) -> AccessResult:
    if binding.version or binding.vault is None:
        result = check_binding(world, binding, now)
        if result.ok:
            res.sim["versionInUse"] = result.version
        return result
    in_use = res.sim.get("versionInUse")
    vault = world.vaults.get(binding.vault.lower())
    key = vault.keys.get(binding.key.lower()) if vault else None
    if key is not None:
        lag = world.service_settings.versionless_lag_s
        order = list(key.versions)
        newest = None
        for kv in reversed(key.versions.values()):
            if kv.enabled and kv.valid_at(now) and kv.created + lag <= now:
                newest = kv.version
                break
        if in_use not in key.versions or (newest is not None and order.index(newest) > order.index(in_use)):
            in_use = newest
    fixed = Binding(binding.vault, binding.key, in_use, binding.principal, binding.vault_base)
    result = check_binding(world, fixed, now)
    if result.ok:
        res.sim["versionInUse"] = result.version
    return result
