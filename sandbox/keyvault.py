"""Key Vault data plane for keys, as the official SDK (azure-keyvault-keys) sees it.

Entry points used by the world: :func:`handle` answers one request for a vault host and
:func:`tick` brings time-driven behaviour up to a moment (near-expiry / expired events,
auto-rotation by rotation policy, purge of soft-deleted keys whose retention ended).

Wire behaviour follows Key Vault (api-version 7.x and 2025-07-01): the bearer challenge,
``{"error": {"code", "message", "innererror"?}}`` errors with Key Vault's codes and messages,
paged lists with an absolute ``nextLink``, unix-second attributes, soft delete with
``recoveryId`` / ``scheduledPurgeDate``, purge protection, per-vault throttling (429 +
``Retry-After``) and Event Grid's ``Microsoft.KeyVault.Key*`` events on the world's bus.

Helpers for other parts of the sandbox (seeds, ARM, admin):

- :func:`create_version` adds a key version exactly as a data-plane create would (event
  included), so keys made elsewhere behave like keys made through the SDK.
- :func:`track` re-reads one key's due times after its state was changed directly;
  :func:`reindex` does so for everything (the index also rebuilds itself when the number of
  keys changes behind its back).
- :func:`key_id` builds a key identifier from the world's vault URL mapping.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import heapq
import json
import re
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox import audit
from sandbox.clock import isoformat
from sandbox.state import Key, KeyVersion, Vault
from sandbox.wire import JsonObj, Request, Response, Router, SandboxError, error_response, json_response

if TYPE_CHECKING:
    from sandbox.world import World

# ---- constants ----------------------------------------------------------------------------

KEY_NEW_VERSION = "Microsoft.KeyVault.KeyNewVersionCreated"
KEY_NEAR_EXPIRY = "Microsoft.KeyVault.KeyNearExpiry"
KEY_EXPIRED = "Microsoft.KeyVault.KeyExpired"

# What Key Vault gives a key created without key_ops (seen in recorded service responses).
DEFAULT_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
_KNOWN_OPS = {op.lower(): op for op in (*DEFAULT_KEY_OPS, "import", "export")}
RSA_SIZES = (2048, 3072, 4096)
RSA_KTYS = ("RSA", "RSA-HSM")
DEFAULT_RETENTION_DAYS = 90
DAY = 86_400
# Key Vault's defaults and bounds for rotation policies (docs and service behaviour).
DEFAULT_NOTIFY_BEFORE_EXPIRY = "P30D"
MIN_POLICY_EXPIRY_S = 28 * DAY
MIN_TRIGGER_S = 7 * DAY
# Tags: at most 15 per object, names and values up to 256 characters.
MAX_TAGS = 15
MAX_TAG_CHARS = 256
# Paged lists: Key Vault returns at most 25 items per page and refuses larger maxresults.
MAX_PAGE = 25
_KEY_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_API_VERSION = re.compile(r"7\.\d+(?:-preview(?:\.\d+)?)?|20\d\d-\d\d-\d\d(?:-preview)?")
_LATEST_API = "2025-07-01"
# A runaway catch-up (huge clock jump with a short rotation period) stops after this many steps
# per key and tick; the next tick continues where it stopped.
_MAX_CATCH_UP_STEPS = 64
_NOT_FOUND_HELP = (
    "If you recently deleted this key you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


class KeyVaultError(SandboxError):
    """A Key Vault error; ``inner`` becomes ``error.innererror.code`` like the service sends."""

    def __init__(self, status: int, code: str, message: str, *, inner: str | None = None) -> None:
        super().__init__(status, code, message)
        self.inner = inner

    def response(self) -> Response:
        error: JsonObj = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return json_response(self.status, {"error": error})


def _bad(message: str) -> KeyVaultError:
    return KeyVaultError(400, "BadParameter", message)


def _forbidden(message: str, inner: str) -> KeyVaultError:
    return KeyVaultError(403, "Forbidden", message, inner=inner)


def _key_not_found(name: str, version: str | None = None) -> KeyVaultError:
    ident = f"{name}/{version}" if version else name
    return KeyVaultError(
        404, "KeyNotFound", f"A key with (name/id) {ident} was not found in this key vault. {_NOT_FOUND_HELP}"
    )


def _deleted_conflict(name: str) -> KeyVaultError:
    return KeyVaultError(
        409,
        "Conflict",
        f"Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
        "in this state, the key can only be recovered or purged.",
        inner="ObjectIsDeletedButRecoverable",
    )


# ---- small codecs -------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise _bad(f"Property {what} must be a base64url string.")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise _bad(f"Property {what} is not valid base64url.") from err


def _int_b64(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def _b64_int(text: Any, what: str) -> int:
    data = _unb64url(text, what)
    if not data:
        raise _bad(f"Property {what} is empty.")
    return int.from_bytes(data, "big")


_DURATION = re.compile(
    r"P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?"
)


def parse_duration(text: str) -> int:
    """An ISO-8601 duration as Key Vault accepts it (``P90D``, ``P3M``, ``P1Y10D``, ``PT48H``), in seconds.

    A year counts 365 days and a month 30 days (the sandbox does not do calendar arithmetic).
    Raises ValueError when the text is not such a duration.
    """
    raw = text.strip().upper()
    m = _DURATION.fullmatch(raw)
    if m is None or raw in ("P", "PT") or raw.endswith("T"):
        raise ValueError(f"not an ISO-8601 duration: {text!r}")
    parts = {k: int(v or 0) for k, v in m.groupdict().items()}
    days = parts["y"] * 365 + parts["mo"] * 30 + parts["w"] * 7 + parts["d"]
    return days * DAY + parts["h"] * 3600 + parts["mi"] * 60 + parts["s"]


# ---- identifiers and JSON shapes ------------------------------------------------------------


def key_id(world: World, vault_name: str, key_name: str, version: str | None = None) -> str:
    """The key identifier (``kid``) Key Vault reports; versionless when ``version`` is None."""
    base = f"{_vault_url(world, vault_name)}/keys/{key_name}"
    return f"{base}/{version}" if version else base


def _vault_url(world: World, vault_name: str) -> str:
    # vault_url_for is a replaceable attribute (loopback swaps it); give it its type once, here.
    url_for: Callable[[str], str] = world.vault_url_for
    return url_for(vault_name.lower())


def _base(world: World, vault: Vault) -> str:
    return _vault_url(world, vault.name)


def _retention_days(vault: Vault) -> int:
    days = vault.properties.get("softDeleteRetentionInDays")
    if isinstance(days, int) and not isinstance(days, bool) and days > 0:
        return days
    return DEFAULT_RETENTION_DAYS


def _soft_delete(vault: Vault) -> bool:
    # Soft delete is always on for current vaults; only an explicit false (legacy vaults) turns it off.
    return vault.properties.get("enableSoftDelete") is not False


def _recovery_level(vault: Vault) -> str:
    if not _soft_delete(vault):
        return "Purgeable"
    prefix = "Recoverable" if _retention_days(vault) >= DEFAULT_RETENTION_DAYS else "CustomizedRecoverable"
    return prefix if vault.purge_protection else f"{prefix}+Purgeable"


def _attributes(vault: Vault, kv: KeyVersion) -> JsonObj:
    attrs: JsonObj = {"enabled": kv.enabled}
    if kv.nbf is not None:
        attrs["nbf"] = kv.nbf
    if kv.exp is not None:
        attrs["exp"] = kv.exp
    attrs["created"] = kv.created
    attrs["updated"] = kv.updated
    attrs["recoveryLevel"] = _recovery_level(vault)
    # keys.json (data-plane stable 7.5) KeyAttributes.recoverableDays: "softDelete data retention
    # days. Value should be >=7 and <=90 when softDelete enabled, otherwise 0."
    attrs["recoverableDays"] = _retention_days(vault) if _soft_delete(vault) else 0
    attrs["exportable"] = False
    return attrs


def _bundle(world: World, vault: Vault, key: Key, kv: KeyVersion) -> JsonObj:
    numbers = kv.private_key.public_key().public_numbers()
    out: JsonObj = {
        "key": {
            "kid": key_id(world, vault.name, key.name, kv.version),
            "kty": kv.kty,
            "key_ops": list(kv.key_ops),
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
        },
        "attributes": _attributes(vault, kv),
    }
    if kv.tags:
        out["tags"] = dict(kv.tags)
    return out


def _deleted_fields(world: World, vault: Vault, key: Key) -> JsonObj:
    return {
        "recoveryId": f"{_base(world, vault)}/deletedkeys/{key.name}",
        "deletedDate": key.deleted_date,
        "scheduledPurgeDate": key.scheduled_purge_date,
    }


def _item(world: World, vault: Vault, key: Key, kv: KeyVersion, *, versioned: bool) -> JsonObj:
    out: JsonObj = {
        "kid": key_id(world, vault.name, key.name, kv.version if versioned else None),
        "attributes": _attributes(vault, kv),
    }
    if kv.tags:
        out["tags"] = dict(kv.tags)
    return out


def _event(world: World, vault: Vault, key: Key, kv: KeyVersion, *, event_type: str, at: int) -> JsonObj:
    """One Event Grid schema event as Key Vault publishes it to the vault's system topic."""
    return {
        "id": str(uuid.uuid4()),
        "topic": vault.id,
        "subject": key.name,
        "eventType": event_type,
        "eventTime": isoformat(datetime.fromtimestamp(at, UTC)),
        "data": {
            "Id": key_id(world, vault.name, key.name, kv.version),
            "VaultName": vault.name,
            "ObjectType": "Key",
            "ObjectName": key.name,
            "Version": kv.version,
            "NBF": kv.nbf,
            "EXP": kv.exp,
        },
        "dataVersion": "1",
        "metadataVersion": "1",
    }


# ---- the due-time index ---------------------------------------------------------------------
#
# tick() runs before every request, so it must not walk every key. Each live key has at most one
# "next due" moment (near-expiry, expiry, auto-rotation) and each deleted key a purge moment; a
# heap holds them. Entries are validated when popped (the key may have changed since), so a
# stale entry costs one pop and nothing else.

_LIVE = "live"
_PURGE = "purge"


@dataclass
class _Index:
    heap: list[tuple[int, int, str, str, str]] = field(default_factory=list)
    due: dict[tuple[str, str, str], int] = field(default_factory=dict)
    seq: int = 0
    fingerprint: tuple[int, int] = (-1, -1)

    def push(self, kind: str, vault: str, key: str, when: int | None) -> None:
        slot = (kind, vault, key)
        if when is None:
            self.due.pop(slot, None)
            return
        if self.due.get(slot) == when:
            return
        self.due[slot] = when
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, kind, vault, key))


_INDEXES: weakref.WeakKeyDictionary[World, _Index] = weakref.WeakKeyDictionary()


def _fingerprint(world: World) -> tuple[int, int]:
    total = 0
    for vault in world.vaults.values():
        total += len(vault.keys) + len(vault.deleted_keys)
    return len(world.vaults), total


def _index(world: World) -> _Index:
    idx = _INDEXES.get(world)
    if idx is None:
        idx = _INDEXES[world] = _Index()
    return idx


def reindex(world: World) -> None:
    """Rebuilds the due-time index from the world's state (after bulk changes made directly)."""
    with world.lock:
        idx = _INDEXES[world] = _Index()
        for vname, vault in world.vaults.items():
            for kname, key in vault.keys.items():
                if key.versions:
                    idx.push(_LIVE, vname, kname, _next_due(key))
            for kname, key in vault.deleted_keys.items():
                idx.push(_PURGE, vname, kname, key.scheduled_purge_date)
        idx.fingerprint = _fingerprint(world)


def track(world: World, vault_name: str, key_name: str) -> None:
    """Re-reads one key's due times (call after changing its versions, exp or policy directly)."""
    with world.lock:
        vault = world.vaults.get(vault_name.lower())
        if vault is None:
            return
        idx = _index(world)
        lname = key_name.lower()
        live = vault.keys.get(lname)
        idx.push(_LIVE, vault_name.lower(), lname, _next_due(live) if live and live.versions else None)
        gone = vault.deleted_keys.get(lname)
        idx.push(_PURGE, vault_name.lower(), lname, gone.scheduled_purge_date if gone else None)


def _count(world: World, delta: int) -> None:
    """Records a change in the number of keys made here, so only changes made elsewhere reindex."""
    idx = _index(world)
    vaults, keys = idx.fingerprint
    if vaults >= 0:
        idx.fingerprint = (vaults, keys + delta)


def _policy_action(key: Key, action: str) -> JsonObj | None:
    policy = key.rotation_policy or {}
    for entry in policy.get("lifetimeActions") or []:
        if str((entry.get("action") or {}).get("type", "")).lower() == action:
            trigger = entry.get("trigger")
            return trigger if isinstance(trigger, dict) else None
    return None


def _notify_before_s(key: Key) -> int:
    trigger = _policy_action(key, "notify")
    text = (trigger or {}).get("timeBeforeExpiry") or DEFAULT_NOTIFY_BEFORE_EXPIRY
    return parse_duration(str(text))


def _rotate_due(key: Key) -> int | None:
    trigger = _policy_action(key, "rotate")
    if not trigger:
        return None
    cur = key.current
    if trigger.get("timeAfterCreate"):
        return cur.created + parse_duration(str(trigger["timeAfterCreate"]))
    if trigger.get("timeBeforeExpiry") and cur.exp is not None:
        return cur.exp - parse_duration(str(trigger["timeBeforeExpiry"]))
    return None


def _next_due(key: Key) -> int | None:
    cur = key.current
    candidates: list[int] = []
    if cur.exp is not None:
        if (KEY_NEAR_EXPIRY, cur.version) not in key.emitted:
            candidates.append(cur.exp - _notify_before_s(key))
        if (KEY_EXPIRED, cur.version) not in key.emitted:
            candidates.append(cur.exp)
    rotate = _rotate_due(key)
    if rotate is not None:
        candidates.append(rotate)
    return max(min(candidates), cur.created) if candidates else None


def _catch_up(world: World, vault: Vault, key: Key, now: int) -> bool:
    """Replays what Key Vault would have done for ``key`` up to ``now``, in time order.

    Returns False when it stopped at the step limit with work still due.
    """
    for _ in range(_MAX_CATCH_UP_STEPS):
        due = _next_due(key)
        if due is None or due > now:
            return True
        cur = key.current
        if cur.exp is not None:
            near_at = max(cur.exp - _notify_before_s(key), cur.created)
            if near_at <= due and (KEY_NEAR_EXPIRY, cur.version) not in key.emitted:
                key.emitted.add((KEY_NEAR_EXPIRY, cur.version))
                near = _event(world, vault, key, cur, event_type=KEY_NEAR_EXPIRY, at=near_at)
                world.eventgrid.publish([near])
            if cur.exp <= due and (KEY_EXPIRED, cur.version) not in key.emitted:
                key.emitted.add((KEY_EXPIRED, cur.version))
                world.eventgrid.publish([_event(world, vault, key, cur, event_type=KEY_EXPIRED, at=cur.exp)])
        rotate = _rotate_due(key)
        if rotate is not None and max(rotate, cur.created) <= due:
            _rotate(world, vault, key, at=due)
    due = _next_due(key)
    return due is None or due > now


def tick(world: World, now: datetime) -> None:
    """Emits due expiry events, auto-rotates by policy and purges expired soft-deleted keys.

    Costs a heap peek (plus one pass over the vault table, to notice keys added or removed
    without this module) when nothing is due.
    """
    idx = _index(world)
    if idx.fingerprint != _fingerprint(world):
        reindex(world)
        idx = _index(world)
    ts = int(now.timestamp())
    deferred: list[tuple[str, str, int]] = []
    while idx.heap and idx.heap[0][0] <= ts:
        when, _seq, kind, vname, kname = heapq.heappop(idx.heap)
        slot = (kind, vname, kname)
        if idx.due.get(slot) != when:
            continue  # superseded by a later reschedule
        del idx.due[slot]
        vault = world.vaults.get(vname)
        if vault is None:
            continue
        if kind == _PURGE:
            gone = vault.deleted_keys.get(kname)
            if gone is not None and gone.scheduled_purge_date is not None:
                if gone.scheduled_purge_date <= ts:
                    del vault.deleted_keys[kname]
                    _count(world, -1)
                else:
                    idx.push(_PURGE, vname, kname, gone.scheduled_purge_date)
            continue
        key = vault.keys.get(kname)
        if key is None or not key.versions:
            continue
        if _catch_up(world, vault, key, ts):
            idx.push(_LIVE, vname, kname, _next_due(key))
        else:
            deferred.append((vname, kname, ts))
    for vname, kname, when in deferred:
        # Left for the next tick, so one enormous clock jump cannot hold the lock indefinitely.
        idx.push(_LIVE, vname, kname, when)


# ---- key versions ---------------------------------------------------------------------------


def _new_version(
    world: World,
    vault: Vault,
    name: str,
    *,
    kty: str,
    private_key: rsa.RSAPrivateKey,
    key_ops: list[str],
    enabled: bool,
    nbf: int | None,
    exp: int | None,
    tags: dict[str, str],
    at: int,
) -> tuple[Key, KeyVersion]:
    lname = name.lower()
    if lname in vault.deleted_keys:
        raise _deleted_conflict(name)
    key = vault.keys.get(lname)
    if key is None:
        key = vault.keys[lname] = Key(name=name)
        _count(world, +1)
    version = uuid.uuid4().hex
    kv = KeyVersion(
        version=version,
        kty=kty,
        private_key=private_key,
        key_ops=key_ops,
        enabled=enabled,
        created=at,
        updated=at,
        nbf=nbf,
        exp=exp,
        tags=tags,
    )
    key.versions[version] = kv
    world.eventgrid.publish([_event(world, vault, key, kv, event_type=KEY_NEW_VERSION, at=at)])
    track(world, vault.name, lname)
    return key, kv


def create_version(
    world: World,
    vault: Vault,
    name: str,
    *,
    kty: str = "RSA",
    size: int = 2048,
    key_ops: list[str] | None = None,
    enabled: bool = True,
    nbf: int | None = None,
    exp: int | None = None,
    tags: dict[str, str] | None = None,
    private_key: rsa.RSAPrivateKey | None = None,
) -> KeyVersion:
    """Adds a version to key ``name`` (creating the key) like ``POST /keys/{name}/create``.

    Publishes KeyNewVersionCreated. Raises :class:`KeyVaultError` (400) on a bad name, type,
    size or operation and (409) when the name is soft-deleted. ``private_key`` reuses given
    material instead of generating it (seeding many keys quickly).
    """
    with world.lock:
        _check_name(name)
        if kty not in RSA_KTYS:
            raise _bad(f"The key type {kty} is not supported by this vault; use RSA or RSA-HSM.")
        if private_key is None:
            if size not in RSA_SIZES:
                raise _bad(f"The key size {size} is not supported; use 2048, 3072 or 4096.")
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=size)
        ops = _ops(key_ops) if key_ops is not None else list(DEFAULT_KEY_OPS)
        _, kv = _new_version(
            world,
            vault,
            name,
            kty=kty,
            private_key=private_key,
            key_ops=ops,
            enabled=enabled,
            nbf=nbf,
            exp=exp,
            tags=dict(tags or {}),
            at=world.now_ts(),
        )
        return kv


def _rotate(world: World, vault: Vault, key: Key, *, at: int) -> KeyVersion:
    """A new version like the current one (type, size, operations, tags); exp from the policy."""
    cur = key.current
    policy_expiry = ((key.rotation_policy or {}).get("attributes") or {}).get("expiryTime")
    exp = at + parse_duration(str(policy_expiry)) if policy_expiry else None
    _, kv = _new_version(
        world,
        vault,
        key.name,
        kty=cur.kty,
        private_key=rsa.generate_private_key(public_exponent=65537, key_size=cur.size),
        key_ops=list(cur.key_ops),
        enabled=True,
        nbf=None,
        exp=exp,
        tags=dict(cur.tags),
        at=at,
    )
    return kv


# ---- request validation ---------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not _KEY_NAME.fullmatch(name):
        raise _bad(f"The request URI contains an invalid name: {name}")


def _ops(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(op, str) for op in raw):
        raise _bad("Property key_ops must be a list of strings.")
    out: list[str] = []
    for op in raw:
        known = _KNOWN_OPS.get(op.lower())
        if known is None:
            raise _bad(f"Invalid key operation: {op}.")
        if known not in out:
            out.append(known)
    return out


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise _bad("Property tags must be an object of string values.")
    if len(raw) > MAX_TAGS:
        raise _bad(f"The number of tags ({len(raw)}) exceeds the maximum of {MAX_TAGS}.")
    for name, value in raw.items():
        if not name or len(name) > MAX_TAG_CHARS or len(value) > MAX_TAG_CHARS:
            raise _bad(f"Tag names and values must be 1-{MAX_TAG_CHARS} characters (tag {name[:40]!r}).")
    return dict(raw)


def _ts(raw: Any, what: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _bad(f"Property attributes.{what} must be a number of seconds since 1970-01-01T00:00:00Z.")
    return int(raw)


@dataclass
class _AttrPatch:
    enabled: bool | None = None
    nbf: int | None = None
    exp: int | None = None


def _attr_patch(raw: Any) -> _AttrPatch:
    if raw is None:
        return _AttrPatch()
    if not isinstance(raw, dict):
        raise _bad("Property attributes must be an object.")
    enabled = raw.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise _bad("Property attributes.enabled must be a boolean.")
    return _AttrPatch(enabled=enabled, nbf=_ts(raw.get("nbf"), "nbf"), exp=_ts(raw.get("exp"), "exp"))


def _vault(world: World, req: Request) -> Vault:
    vault = world.vaults.get((req.vault or "").lower())
    if vault is None:  # handle() drops such requests before routing; this keeps handlers total
        raise KeyVaultError(404, "VaultNotFound", f"The vault {req.vault} does not exist.")
    return vault


def _live_key(vault: Vault, name: str) -> Key:
    _check_name(name)
    key = vault.keys.get(name.lower())
    if key is None or not key.versions:
        raise _key_not_found(name)
    return key


def _version(key: Key, version: str, name: str) -> KeyVersion:
    if not version:
        return key.current
    kv = key.versions.get(version.lower())
    if kv is None:
        raise _key_not_found(name, version)
    return kv


def _deleted_key(vault: Vault, name: str) -> Key:
    _check_name(name)
    key = vault.deleted_keys.get(name.lower())
    if key is None:
        raise KeyVaultError(404, "KeyNotFound", f"Deleted Key not found: {name}")
    return key


def _page_size(req: Request) -> int:
    raw = req.query.get("maxresults")
    if raw in (None, ""):
        return MAX_PAGE
    try:
        size = int(str(raw))
    except ValueError as err:
        raise _bad(f"The value '{raw}' is not valid for parameter maxresults.") from err
    if not 1 <= size <= MAX_PAGE:
        raise _bad(f"The value of parameter maxresults must be between 1 and {MAX_PAGE}.")
    return size


def _page(
    world: World,
    vault: Vault,
    req: Request,
    *,
    path: str,
    markers: list[str],
    render: Callable[[str], JsonObj],
    sorted_markers: bool,
) -> Response:
    """One page of the items named by ``markers``, after the ``$skiptoken`` marker, with a nextLink.

    The token names the last item of the previous page rather than an offset, so items added or
    removed between pages neither repeat nor vanish. ``sorted_markers`` says the markers are in
    order (names), which lets a page continue even when its marker item went away. Only the
    page's own items are rendered, so a page costs the same in a vault of 10 or 10,000 keys.
    """
    size = _page_size(req)
    token = req.query.get("$skiptoken") or ""
    start = 0
    if token:
        try:
            marker = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except (binascii.Error, ValueError) as err:
            raise _bad("The $skiptoken parameter is not valid.") from err
        if sorted_markers:
            start = bisect.bisect_right(markers, marker)
        else:
            start = markers.index(marker) + 1 if marker in markers else len(markers)
    chunk = markers[start : start + size]
    body: JsonObj = {"value": [render(m) for m in chunk], "nextLink": None}
    if start + size < len(markers):
        api = req.query.get("api-version", _LATEST_API)
        query = f"api-version={api}&$skiptoken={_b64url(chunk[-1].encode())}&maxresults={size}"
        body["nextLink"] = f"{_base(world, vault)}{path}?{query}"
    return json_response(200, body)


# ---- routes ---------------------------------------------------------------------------------

ROUTER = Router(case_insensitive=True)
_N = r"(?P<name>[^/]+)"
_V = r"(?P<version>[^/]*)"


@ROUTER.route("GET", r"/keys")
def _list_keys(world: World, req: Request, _m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    names = sorted(lname for lname, key in vault.keys.items() if key.versions)

    def render(lname: str) -> JsonObj:
        key = vault.keys[lname]
        return _item(world, vault, key, key.current, versioned=False)

    return _page(world, vault, req, path="/keys", markers=names, render=render, sorted_markers=True)


@ROUTER.route("POST", rf"/keys/{_N}/create")
def _create(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    name = m["name"]
    _check_name(name)
    body = req.json_object()
    kty = body.get("kty")
    if kty not in RSA_KTYS:
        raise _bad(f"The key type {kty} is not supported by this sandbox vault; use RSA or RSA-HSM.")
    size = body.get("key_size", 2048)
    if size is None:
        size = 2048
    if isinstance(size, bool) or not isinstance(size, int) or size not in RSA_SIZES:
        raise _bad(f"The key size {size} is not supported for {kty} keys; use 2048, 3072 or 4096.")
    exponent = body.get("public_exponent")
    if exponent is not None and exponent != 65537:
        raise _bad("Only the public exponent 65537 is supported.")
    if body.get("crv") is not None:
        raise _bad("Property crv applies to EC keys only.")
    ops = _ops(body["key_ops"]) if body.get("key_ops") is not None else list(DEFAULT_KEY_OPS)
    attrs = _attr_patch(body.get("attributes"))
    tags = _tags(body.get("tags"))
    if name.lower() in vault.deleted_keys:
        raise _deleted_conflict(name)
    key, kv = _new_version(
        world,
        vault,
        name,
        kty=str(kty),
        private_key=rsa.generate_private_key(public_exponent=65537, key_size=size),
        key_ops=ops,
        enabled=True if attrs.enabled is None else attrs.enabled,
        nbf=attrs.nbf,
        exp=attrs.exp,
        tags=tags,
        at=world.now_ts(),
    )
    return json_response(200, _bundle(world, vault, key, kv))


def _jwk_private_key(jwk: JsonObj) -> rsa.RSAPrivateKey:
    if jwk.get("key_hsm") is not None:
        raise _bad("Importing HSM-protected key material (BYOK) is not supported by the sandbox.")
    n = _b64_int(jwk.get("n"), "key.n")
    e = _b64_int(jwk.get("e"), "key.e")
    if jwk.get("d") is None:
        raise _bad("The key to import must contain its private part (key.d).")
    d = _b64_int(jwk.get("d"), "key.d")
    if jwk.get("p") is not None and jwk.get("q") is not None:
        p, q = _b64_int(jwk["p"], "key.p"), _b64_int(jwk["q"], "key.q")
    else:
        try:
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
        except ValueError as err:
            raise _bad("The RSA key parameters are not consistent.") from err
    dmp1 = _b64_int(jwk["dp"], "key.dp") if jwk.get("dp") is not None else rsa.rsa_crt_dmp1(d, p)
    dmq1 = _b64_int(jwk["dq"], "key.dq") if jwk.get("dq") is not None else rsa.rsa_crt_dmq1(d, q)
    iqmp = _b64_int(jwk["qi"], "key.qi") if jwk.get("qi") is not None else rsa.rsa_crt_iqmp(p, q)
    try:
        numbers = rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n))
        return numbers.private_key()
    except (ValueError, TypeError) as err:
        raise _bad(f"The RSA key parameters are not valid: {err}") from err


@ROUTER.route("PUT", rf"/keys/{_N}")
def _import(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    name = m["name"]
    _check_name(name)
    body = req.json_object()
    jwk = body.get("key")
    if not isinstance(jwk, dict):
        raise _bad("Property key is required and must be a JSON Web Key.")
    kty = jwk.get("kty")
    if kty not in RSA_KTYS:
        raise _bad(f"The key type {kty} is not supported by this sandbox vault; use RSA or RSA-HSM.")
    hsm = body.get("Hsm")
    if hsm is not None and not isinstance(hsm, bool):
        raise _bad("Property Hsm must be a boolean.")
    private_key = _jwk_private_key(jwk)
    if private_key.key_size not in RSA_SIZES:
        raise _bad(f"The key size {private_key.key_size} is not supported; use 2048, 3072 or 4096.")
    ops = _ops(jwk["key_ops"]) if jwk.get("key_ops") is not None else list(DEFAULT_KEY_OPS)
    attrs = _attr_patch(body.get("attributes"))
    tags = _tags(body.get("tags"))
    key, kv = _new_version(
        world,
        vault,
        name,
        kty="RSA-HSM" if hsm or kty == "RSA-HSM" else "RSA",
        private_key=private_key,
        key_ops=ops,
        enabled=True if attrs.enabled is None else attrs.enabled,
        nbf=attrs.nbf,
        exp=attrs.exp,
        tags=tags,
        at=world.now_ts(),
    )
    return json_response(200, _bundle(world, vault, key, kv))


def _get(world: World, req: Request, name: str, version: str) -> Response:
    vault = _vault(world, req)
    key = _live_key(vault, name)
    kv = _version(key, version, name)
    if not kv.enabled:
        raise _forbidden("Operation get is not allowed on a disabled key.", "KeyDisabled")
    return json_response(200, _bundle(world, vault, key, kv))


@ROUTER.route("GET", rf"/keys/{_N}/versions")
def _list_versions(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    _check_name(m["name"])
    # Key Vault answers an empty list (not 404) for a key that does not exist.
    key = vault.keys.get(m["name"].lower()) or Key(name=m["name"])

    def render(version: str) -> JsonObj:
        return _item(world, vault, key, key.versions[version], versioned=True)

    path = f"/keys/{m['name']}/versions"
    return _page(world, vault, req, path=path, markers=list(key.versions), render=render, sorted_markers=False)


@ROUTER.route("POST", rf"/keys/{_N}/rotate")
def _rotate_route(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    name = m["name"]
    _check_name(name)
    if name.lower() in vault.deleted_keys and name.lower() not in vault.keys:
        raise _deleted_conflict(name)
    key = _live_key(vault, name)
    kv = _rotate(world, vault, key, at=world.now_ts())
    return json_response(200, _bundle(world, vault, key, kv))


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


@ROUTER.route("GET", rf"/keys/{_N}/{_V}")
def _get_version(world: World, req: Request, m: re.Match[str]) -> Response:
    return _get(world, req, m["name"], m["version"])


@ROUTER.route("GET", rf"/keys/{_N}")
def _get_latest(world: World, req: Request, m: re.Match[str]) -> Response:
    return _get(world, req, m["name"], "")


def _update(world: World, req: Request, name: str, version: str) -> Response:
    vault = _vault(world, req)
    key = _live_key(vault, name)
    kv = _version(key, version, name)
    body = req.json_object() if req.body else {}
    # Validate everything before touching state, so a bad field changes nothing.
    ops = _ops(body["key_ops"]) if body.get("key_ops") is not None else None
    attrs = _attr_patch(body.get("attributes"))
    tags = _tags(body["tags"]) if "tags" in body and body["tags"] is not None else None
    if ops is not None:
        kv.key_ops = ops
    if attrs.enabled is not None:
        kv.enabled = attrs.enabled
    if attrs.nbf is not None:
        kv.nbf = attrs.nbf
    if attrs.exp is not None:
        kv.exp = attrs.exp
    if tags is not None:
        kv.tags = tags
    kv.updated = world.now_ts()
    track(world, vault.name, key.name)
    return json_response(200, _bundle(world, vault, key, kv))


@ROUTER.route("PATCH", rf"/keys/{_N}/{_V}")
def _update_version(world: World, req: Request, m: re.Match[str]) -> Response:
    return _update(world, req, m["name"], m["version"])


@ROUTER.route("PATCH", rf"/keys/{_N}")
def _update_latest(world: World, req: Request, m: re.Match[str]) -> Response:
    return _update(world, req, m["name"], "")


@ROUTER.route("DELETE", rf"/keys/{_N}")
def _delete(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _live_key(vault, m["name"])
    lname = key.name.lower()
    body = _bundle(world, vault, key, key.current)
    del vault.keys[lname]
    if _soft_delete(vault):
        now = world.now_ts()
        key.deleted_date = now
        key.scheduled_purge_date = now + _retention_days(vault) * DAY
        vault.deleted_keys[lname] = key
        body.update(_deleted_fields(world, vault, key))
    else:
        _count(world, -1)
    track(world, vault.name, lname)
    return json_response(200, body)


# ---- cryptographic operations ----------------------------------------------------------------

def _oaep_sha1() -> padding.AsymmetricPadding:
    # RSA-OAEP is defined by JWA (RFC 7518) with SHA-1; the sandbox must match what clients send.
    sha1 = hashes.SHA1()  # noqa: S303 - RSA-OAEP is SHA-1 by definition; nothing here protects data
    return padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)


def _oaep_sha256() -> padding.AsymmetricPadding:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


_PADDINGS: dict[str, Callable[[], padding.AsymmetricPadding]] = {
    "RSA-OAEP": _oaep_sha1,
    "RSA-OAEP-256": _oaep_sha256,
    "RSA1_5": padding.PKCS1v15,
}
# The public half of each pair is refused outside the nbf/exp window; the private half still
# works there so data protected while the key was valid stays recoverable (Key Vault docs).
_OPS = {
    "wrapkey": ("wrapKey", True),
    "encrypt": ("encrypt", True),
    "unwrapkey": ("unwrapKey", False),
    "decrypt": ("decrypt", False),
}


@ROUTER.route("POST", rf"/keys/{_N}/{_V}/(?P<op>wrapkey|unwrapkey|encrypt|decrypt)")
def _crypto(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    name = m["name"]
    key = _live_key(vault, name)
    kv = _version(key, m["version"], name)
    op, public = _OPS[m["op"].lower()]
    body = req.json_object()
    alg = body.get("alg")
    if alg not in _PADDINGS:
        raise _bad(f"Invalid algorithm: {alg}. Use RSA-OAEP, RSA-OAEP-256 or RSA1_5.")
    value = _unb64url(body.get("value"), "value")
    if not kv.enabled:
        raise _forbidden(f"Operation {op} is not allowed on a disabled key.", "KeyDisabled")
    if op not in kv.key_ops:
        raise _forbidden(f"Operation {op} is not permitted on this key.", "KeyOperationForbidden")
    now = world.now_ts()
    if public and kv.nbf is not None and now < kv.nbf:
        raise _forbidden(f"Operation {op} is not allowed before the key's activation date.", "KeyNotYetValid")
    if public and kv.exp is not None and now >= kv.exp:
        raise _forbidden(f"Operation {op} is not allowed on an expired key.", "KeyExpired")
    pad = _PADDINGS[str(alg)]()
    if public:
        try:
            result = kv.private_key.public_key().encrypt(value, pad)
        except ValueError as err:
            raise _bad(f"The value is too long for {alg} with a {kv.size}-bit key.") from err
    else:
        try:
            result = kv.private_key.decrypt(value, pad)
        except ValueError as err:
            raise _bad(f"Operation {op} failed: the value could not be decrypted with {alg}.") from err
    kid = key_id(world, vault.name, key.name, kv.version)
    return json_response(200, {"kid": kid, "value": _b64url(result)})


# ---- deleted keys ---------------------------------------------------------------------------


@ROUTER.route("GET", r"/deletedkeys")
def _list_deleted(world: World, req: Request, _m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    names = sorted(lname for lname, key in vault.deleted_keys.items() if key.versions)

    def render(lname: str) -> JsonObj:
        key = vault.deleted_keys[lname]
        out = _item(world, vault, key, key.current, versioned=False)
        out.update(_deleted_fields(world, vault, key))
        return out

    return _page(
        world, vault, req, path="/deletedkeys", markers=names, render=render, sorted_markers=True
    )


@ROUTER.route("GET", rf"/deletedkeys/{_N}")
def _get_deleted(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _deleted_key(vault, m["name"])
    body = _bundle(world, vault, key, key.current)
    body.update(_deleted_fields(world, vault, key))
    return json_response(200, body)


@ROUTER.route("DELETE", rf"/deletedkeys/{_N}")
def _purge(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _deleted_key(vault, m["name"])
    if vault.purge_protection:
        raise KeyVaultError(
            403,
            "Forbidden",
            'Operation "purge" is not allowed because purge protection is enabled for this vault. '
            "Key Vault service will automatically purge it after the retention period has passed.",
        )
    del vault.deleted_keys[key.name.lower()]
    _count(world, -1)
    track(world, vault.name, key.name)
    return Response(status=204)


@ROUTER.route("POST", rf"/deletedkeys/{_N}/recover")
def _recover(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _deleted_key(vault, m["name"])
    lname = key.name.lower()
    del vault.deleted_keys[lname]
    key.deleted_date = None
    key.scheduled_purge_date = None
    vault.keys[lname] = key
    track(world, vault.name, lname)
    return json_response(200, _bundle(world, vault, key, key.current))


# ---- the front door -------------------------------------------------------------------------

_CREATES = re.compile(r"/keys/[^/]+/(?:create|rotate)/?", re.IGNORECASE)
_IMPORT = re.compile(r"/keys/[^/]+/?", re.IGNORECASE)


def _is_create(req: Request) -> bool:
    """Creates, imports and rotations share Key Vault's smaller 'create' throttling budget."""
    if req.method == "POST":
        return _CREATES.fullmatch(req.path) is not None
    return req.method == "PUT" and _IMPORT.fullmatch(req.path) is not None


def _challenge(world: World) -> Response:
    return error_response(
        401,
        "Unauthorized",
        "AKV10000: Request is missing a Bearer or PoP token.",
        {
            "WWW-Authenticate": (
                f'Bearer authorization="https://login.microsoftonline.com/{world.tenant_id}", '
                'resource="https://vault.azure.net"'
            )
        },
    )


def handle(world: World, req: Request) -> Response:
    """Answers one data-plane request for the vault named by ``req.vault``.

    An unknown vault behaves like a DNS failure (the connection is dropped). A request without
    a bearer token gets Key Vault's 401 challenge; any bearer token is accepted.
    """
    if (req.vault or "").lower() not in world.vaults:
        return Response(status=0, drop=True)
    auth = req.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() not in ("bearer", "pop") or not token.strip():
        return _challenge(world)
    api = req.query.get("api-version")
    if not api:
        return error_response(400, "BadParameter", "The api-version query parameter is missing.")
    if not _API_VERSION.fullmatch(api):
        return error_response(
            400,
            "BadParameter",
            f"The specified version ({api}) is not recognized. Consider using the latest supported version "
            f"({_LATEST_API}).",
        )
    granted, retry_after = world.throttle.vault(
        req.vault or "", create=_is_create(req), now=world.clock.timestamp()
    )
    if not granted:
        return error_response(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. "
            f"Retry after {retry_after} seconds.",
            {"Retry-After": str(retry_after)},
        )
    try:
        resp = ROUTER.dispatch(world, req, not_found=_no_route)
    except SandboxError as err:
        resp = err.response()  # what World._dispatch would answer; refused calls are logged too
    audit.record_request(world, req, resp)  # the vault's AuditEvent log (sandbox/audit.py)
    return resp


def _no_route(req: Request) -> Response:
    return error_response(400, "BadParameter", f"The request URI {req.path} is not a Key Vault operation.")
