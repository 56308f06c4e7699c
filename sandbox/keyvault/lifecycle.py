"""Key Vault data plane: time-driven behaviour (the due-time index and :func:`tick`) and key versions
(:func:`create_version`, rotation)."""

from __future__ import annotations

import heapq
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.keyvault.common import (
    _MAX_CATCH_UP_STEPS,
    DEFAULT_KEY_OPS,
    DEFAULT_NOTIFY_BEFORE_EXPIRY,
    KEY_EXPIRED,
    KEY_NEAR_EXPIRY,
    KEY_NEW_VERSION,
    RSA_KTYS,
    RSA_SIZES,
    _bad,
    _check_name,
    _deleted_conflict,
    _event,
    _ops,
    parse_duration,
)
from sandbox.state import Key, KeyVersion, Vault
from sandbox.wire import JsonObj

if TYPE_CHECKING:
    from sandbox.world import World

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


