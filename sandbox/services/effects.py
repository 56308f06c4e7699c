"""Simulated services: the clock's effects (:func:`tick`): operations completing, the periodic
sweep in which every resource uses its key, and each service's outcome of a use."""

from __future__ import annotations

import heapq
import math
from datetime import datetime
from typing import TYPE_CHECKING

from sandbox import audit
from sandbox.clock import isoformat
from sandbox.services.bindings import Binding, _state, binding_for, check_binding, identity_of, wake_at
from sandbox.services.status import (
    COSMOS_ACCOUNTS,
    COSMOS_CMK_CONFIRMED,
    ENERGY_SERVICES,
    KUSTO_CLUSTERS,
    KUSTO_DATABASES,
    KUSTO_SUSPENDED_STATE,
    POSTGRES_CLUSTERS,
    JsonObj,
    cosmos_revoked_status,
)
from sandbox.state import AccessResult, ArmResource, Operation

if TYPE_CHECKING:
    from sandbox.world import World


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
