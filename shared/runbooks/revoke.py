"""The revoke steps: resolve (the blast radius), snapshot (what will change), act (disable
the versions, or remove the bound identities' vault access). Every item checks "already
done?" first, so a repeated ``act`` writes nothing twice.

A whole-key revocation also takes the key's rotation policy out of play: ``snapshot`` records
the policy as it is, ``act`` removes its Rotate action (Key Vault would otherwise keep
creating enabled versions), and the restore puts the recorded policy back exactly."""

from __future__ import annotations

import dataclasses
from typing import Any

import structlog

from shared.errors import NotFoundError, PermanentError
from shared.inventory import for_key
from shared.keyuri import parse_key_uri
from shared.model import Binding, KeyRef, KeyVersion
from shared.retention import restore_point_note
from shared.runbooks.deps import Deps, parallel, with_retries
from shared.runbooks.engine import Ctx
from shared.runbooks.model import MAX_VERSION_TAGS, JsonDict, Mode, StepName, iso
from shared.runbooks.radius import blast_radius
from shared.runbooks.results import AccessState, Acted, Radius, VaultDoc, VersionState
from shared.tags import REVOKED_AT_TAG, REVOKED_BY_TAG
from shared.targets.base import Health
from shared.usage import blast_radius_evidence
from shared.vaultaccess import AccessEntry, VaultRef

log = structlog.get_logger("keysteward.runbooks")


def whole_key(key: KeyRef, mode: Mode) -> bool:
    """Whether a revocation reaches the whole key: a versionless URI, or ``remove-access``
    (which cuts an identity off the whole vault)."""
    return key.version is None or mode == Mode.REMOVE_ACCESS


def has_rotate_action(policy: JsonDict | None) -> bool:
    return any(str(a.get("action", "")).lower() == "rotate" for a in (policy or {}).get("lifetimeActions") or [])


def paused(policy: JsonDict) -> JsonDict:
    """``policy`` without its Rotate action: Key Vault creates no version on its own."""
    actions = [a for a in policy.get("lifetimeActions") or [] if str(a.get("action", "")).lower() != "rotate"]
    return {**policy, "lifetimeActions": actions}


class RevokeSteps:
    """resolve, snapshot and act of a revocation (verify and publish are shared)."""

    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def key_of(self, ctx: Ctx) -> KeyRef:
        return parse_key_uri(ctx.run.key, allowed_vaults=self._d.settings.vaults)

    def mode_of(self, ctx: Ctx) -> Mode:
        return Mode(ctx.run.params["mode"])

    # ---- shared with the dry run ----------------------------------------------------------------
    def _health(self, binding: Binding) -> str:
        target = self._d.targets.get(binding.service)
        return target.health(binding) if target is not None else Health.UNKNOWN

    def radius(self, key: KeyRef, mode: Mode) -> Radius:
        everything = self._d.inventory.bindings(self._d.settings.subscriptions)
        radius = blast_radius(everything, key, mode, self._health)
        # Restore points taken with the key stay unusable while it is revoked (issue: backups keep their key).
        notes = restore_point_note(for_key(everything, key))
        if notes:
            radius = dataclasses.replace(radius, summary={**radius.summary, "restorePoints": notes})
        if self._d.usage is None:
            return radius
        # Beside the inventory's bindings: the identities no binding accounts for that used the key
        # (or, for remove-access, the vault) in the lookback, with counts and last call.
        evidence = blast_radius_evidence(self._d.usage, key, remove_access=mode == Mode.REMOVE_ACCESS,
                                         known_principals=[b.principal_id or "" for b in everything])
        return dataclasses.replace(radius, summary={**radius.summary, **evidence})

    def version_state(self, key: KeyRef) -> VersionState:
        versions = self._d.keys.versions(key)
        if key.version is not None:
            chosen = [v for v in versions if v.version == key.version]
            if not chosen:
                raise NotFoundError(f"{key}: no such version", code="VersionNotFound", status=404)
        else:
            chosen = versions
        if not chosen:
            raise NotFoundError(f"{key}: the key has no versions", code="KeyNotFound", status=404)
        return VersionState(enabled=tuple(v.version for v in chosen if v.enabled),
                            already_disabled=tuple(v.version for v in chosen if not v.enabled))

    def vault_for(self, key: KeyRef) -> VaultRef:
        vault = self._d.vaults.vault(key.vault_url)
        if vault.rbac:
            raise PermanentError(
                f"vault {vault.name} uses Azure RBAC: it has no access policy to remove; revoke with mode 'disable'",
                code="RbacVault", status=409,
            )
        return vault

    def access_state(self, key: KeyRef, radius: Radius) -> AccessState:
        vault = self.vault_for(key)
        principals = radius.targeted_principals()
        entries = tuple(e for e in self._d.vaults.entries(vault) if e.object_id.lower() in principals)
        return AccessState(vault=VaultDoc.of(vault), entries=entries)

    # ---- the steps ------------------------------------------------------------------------------
    def resolve(self, ctx: Ctx) -> Radius:
        return self.radius(self.key_of(ctx), self.mode_of(ctx))

    def snapshot(self, ctx: Ctx) -> VersionState | AccessState:
        key = self.key_of(ctx)
        mode = self.mode_of(ctx)
        policy = self._d.keys.rotation_policy_doc(key.versionless()) if whole_key(key, mode) else None
        if mode == Mode.DISABLE:
            state = self.version_state(key)
            return VersionState(state.enabled, state.already_disabled, policy)
        access = self.access_state(key, Radius.from_journal(ctx.results[StepName.RESOLVE]))
        return AccessState(access.vault, access.entries, policy)

    def act(self, ctx: Ctx) -> Acted:
        policy = self._pause_rotation(ctx)
        acted = self._disable_versions(ctx) if self.mode_of(ctx) == Mode.DISABLE else self._remove_access(ctx)
        return dataclasses.replace(acted, policy=policy)

    def _pause_rotation(self, ctx: Ctx) -> str | None:
        raw = ctx.results[StepName.SNAPSHOT].get("rotationPolicy")
        policy: JsonDict | None = dict(raw) if isinstance(raw, dict) else None
        if policy is None or not has_rotate_action(policy):
            return None
        key = self.key_of(ctx).versionless()

        def pause() -> str:
            current = self._d.keys.rotation_policy_doc(key)
            if has_rotate_action(current):
                self._d.keys.set_rotation_policy_doc(key, paused(policy))
            return "paused"

        with_retries(self._d.clock, f"pause the rotation policy of {key}", pause)
        log.warning("rotation-policy-paused", run=ctx.run.run_id, key=key.uri)
        return "paused"

    def _disable_versions(self, ctx: Ctx) -> Acted:
        key = self.key_of(ctx).versionless()
        run_id = ctx.run.run_id
        wanted = list(VersionState.from_journal(ctx.results[StepName.SNAPSHOT]).enabled)
        current = {v.version: v for v in self._d.keys.versions(key)}
        stamp = iso(self._d.clock.now())

        def disable(version: str) -> str:
            kv: KeyVersion | None = current.get(version)
            if kv is None:
                return "missing"
            if not kv.enabled:
                return "done" if kv.tags.get(REVOKED_BY_TAG) == run_id else "already-disabled"
            return disable_tagged(self._d, kv, run_id, {REVOKED_AT_TAG: stamp})

        outcomes, failed = parallel(self._d, wanted, disable)

        def having(outcome: str) -> tuple[str, ...]:
            return tuple(sorted(v for v, o in outcomes.items() if o == outcome))

        return Acted(done=having("done"), already_disabled=having("already-disabled"), missing=having("missing"),
                     untagged=having("untagged"), failed=failed)

    def _remove_access(self, ctx: Ctx) -> Acted:
        snapshot = AccessState.from_journal(ctx.results[StepName.SNAPSHOT])
        vault = snapshot.vault.ref()
        current = self._d.vaults.entries(vault)
        # What is removed is the entry as it is now (the whole entry must go); an entry already
        # gone was removed by an earlier attempt of this step, and is restored as snapshotted.
        removed: list[AccessEntry] = []
        to_remove: list[AccessEntry] = []
        for entry in snapshot.entries:
            now = next((c for c in current if c.same_principal(entry)), None)
            removed.append(entry if now is None else now)
            if now is not None:
                to_remove.append(now)

        def remove() -> str:
            self._d.vaults.remove(vault, to_remove)
            return "done"

        with_retries(self._d.clock, f"remove access on {vault.name}", remove)
        return Acted(done=tuple(e.object_id for e in removed), removed=tuple(removed), vault=snapshot.vault,
                     failed={})


def disable_tagged(deps: Deps, kv: KeyVersion, run_id: str, extra: dict[str, Any]) -> str:
    """Disables ``kv`` tagged with :data:`REVOKED_BY_TAG` = ``run_id`` and ``extra``: ``done``, or
    ``untagged`` when Key Vault's tag limit leaves no room (revocation comes first: it is disabled
    anyway, and the caller says loudly that it is untagged)."""
    tags = {**kv.tags, REVOKED_BY_TAG: run_id, **{k: str(v) for k, v in extra.items()}}
    if len(tags) > MAX_VERSION_TAGS:
        deps.keys.set_enabled(kv.ref, enabled=False)
        return "untagged"
    deps.keys.set_enabled(kv.ref, enabled=False, tags=tags)
    return "done"
