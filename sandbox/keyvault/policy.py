"""Key Vault data plane: key rotation policies (GET and PUT ``/keys/{name}/rotationpolicy``).

Imported before :mod:`sandbox.keyvault.keys`: ``/keys/{name}/rotationpolicy`` must match here before
``/keys/{name}/{version}`` does."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from sandbox.keyvault.common import (
    _N,
    DEFAULT_NOTIFY_BEFORE_EXPIRY,
    MIN_POLICY_EXPIRY_S,
    MIN_TRIGGER_S,
    ROUTER,
    _bad,
    _base,
    _live_key,
    _vault,
    parse_duration,
)
from sandbox.keyvault.lifecycle import track
from sandbox.state import Key, Vault
from sandbox.wire import JsonObj, Request, Response, json_response

if TYPE_CHECKING:
    from sandbox.world import World


def _policy_body(world: World, vault: Vault, key: Key) -> JsonObj:
    policy = key.rotation_policy
    if policy is None:
        # Key Vault's default policy: a Notify 30 days before expiry, not yet stored (no id/dates).
        return {
            "lifetimeActions": [
                {"trigger": {"timeBeforeExpiry": DEFAULT_NOTIFY_BEFORE_EXPIRY}, "action": {"type": "Notify"}}
            ],
            "attributes": {},
        }
    return {
        "id": f"{_base(world, vault)}/keys/{key.name}/rotationpolicy",
        "lifetimeActions": json.loads(json.dumps(policy["lifetimeActions"])),
        "attributes": dict(policy["attributes"]),
    }


# Rotation policy: GET and PUT /keys/{key-name}/rotationpolicy, body KeyRotationPolicy
# {id (read-only), lifetimeActions: [{trigger: {timeAfterCreate | timeBeforeExpiry}, action:
# {type: Rotate | Notify}}], attributes: {expiryTime, created, updated (read-only)}}, per
# azure-rest-api-specs specification/keyvault/data-plane/Microsoft.KeyVault/stable/7.5/keys.json
# (operations GetKeyRotationPolicy / UpdateKeyRotationPolicy); azure-keyvault-keys 4.11 sends
# api-version 2025-07-01 with the same shape. The rules _validated_policy applies (P7D minimum
# trigger, P28D minimum expiryTime, one action of each type, a Notify kept) come from Key Vault's
# documentation and observed behaviour, not from the spec, which states no such constraints: a guess.
@ROUTER.route("GET", rf"/keys/{_N}/rotationpolicy")
def _get_policy(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _live_key(vault, m["name"])
    return json_response(200, _policy_body(world, vault, key))


def _duration_field(raw: Any, what: str) -> int:
    if not isinstance(raw, str):
        raise _bad(f"Property {what} must be an ISO 8601 duration string.")
    try:
        return parse_duration(raw)
    except ValueError as err:
        raise _bad(f"Property {what} is not a valid ISO 8601 duration: {raw}") from err


def _validated_policy(body: JsonObj) -> tuple[list[JsonObj], str | None]:
    """Key Vault's rotation policy rules; returns normalised lifetime actions and expiryTime."""
    attributes = body.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise _bad("Property attributes must be an object.")
    expiry_text = (attributes or {}).get("expiryTime")
    expiry_s: int | None = None
    if expiry_text is not None:
        expiry_s = _duration_field(expiry_text, "attributes.expiryTime")
        if expiry_s < MIN_POLICY_EXPIRY_S:
            raise _bad("The expiryTime of a rotation policy must be at least 28 days (P28D).")
    raw_actions = body.get("lifetimeActions")
    if raw_actions is None:
        raw_actions = []
    if not isinstance(raw_actions, list):
        raise _bad("Property lifetimeActions must be a list.")
    actions: list[JsonObj] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_actions):
        where = f"lifetimeActions[{i}]"
        if not isinstance(entry, dict):
            raise _bad(f"Property {where} must be an object.")
        action = entry.get("action")
        trigger = entry.get("trigger")
        if not isinstance(action, dict) or not isinstance(trigger, dict):
            raise _bad(f"Property {where} needs an action and a trigger.")
        kind = str(action.get("type") or "").lower()
        if kind not in ("rotate", "notify"):
            raise _bad(f"Property {where}.action.type must be Rotate or Notify.")
        if kind in seen:
            raise _bad(f"A rotation policy may contain only one {kind.capitalize()} action.")
        seen.add(kind)
        after, before = trigger.get("timeAfterCreate"), trigger.get("timeBeforeExpiry")
        if (after is None) == (before is None):
            raise _bad(f"Property {where}.trigger needs exactly one of timeAfterCreate and timeBeforeExpiry.")
        if kind == "notify" and after is not None:
            raise _bad("A Notify action supports only the timeBeforeExpiry trigger.")
        field_name = "timeAfterCreate" if after is not None else "timeBeforeExpiry"
        value = after if after is not None else before
        seconds = _duration_field(value, f"{where}.trigger.{field_name}")
        if seconds < MIN_TRIGGER_S:
            raise _bad(f"Property {where}.trigger.{field_name} must be at least 7 days (P7D).")
        if expiry_s is not None and seconds > expiry_s - MIN_TRIGGER_S:
            raise _bad(
                f"Property {where}.trigger.{field_name} must leave at least 7 days before the policy's "
                "expiryTime."
            )
        action_type = "Rotate" if kind == "rotate" else "Notify"
        actions.append({"trigger": {field_name: str(value)}, "action": {"type": action_type}})
    if "notify" not in seen:
        # Key Vault keeps a Notify action in every policy; it adds the default when none is given.
        actions.append(
            {"trigger": {"timeBeforeExpiry": DEFAULT_NOTIFY_BEFORE_EXPIRY}, "action": {"type": "Notify"}}
        )
    return actions, str(expiry_text) if expiry_text is not None else None


@ROUTER.route("PUT", rf"/keys/{_N}/rotationpolicy")
def _put_policy(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _live_key(vault, m["name"])
    actions, expiry = _validated_policy(req.json_object())
    now = world.now_ts()
    created = (key.rotation_policy or {}).get("attributes", {}).get("created", now)
    attributes: JsonObj = {}
    if expiry is not None:
        attributes["expiryTime"] = expiry
    attributes["created"] = created
    attributes["updated"] = now
    key.rotation_policy = {"lifetimeActions": actions, "attributes": attributes}
    track(world, vault.name, key.name)
    return json_response(200, _policy_body(world, vault, key))


