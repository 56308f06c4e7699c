"""The retention rule enforced: a key's status, the guarded disable of one version, and the
timer's retention sweep (recover keys deleted while in use, repair drift, retire old versions).

:class:`Retention` is built once by the composition root (:func:`shared.app.build`) from what it
uses: settings, clock, the key store, the inventory, the notifier, usage evidence, and the
revocation records (a revoked key changes only through its own restore). The rule itself is
pure and lives in :mod:`shared.retention`; audit evidence in :mod:`shared.evidence`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from shared.clock import Clock
from shared.config import Settings
from shared.errors import KeystewardError, NotFoundError, PermanentError
from shared.evidence import status_fields, usage_blockers
from shared.inventory import Inventory, by_key, for_key
from shared.keyvault import KeyStore
from shared.model import Binding, KeyRef, KeyVersion
from shared.notify import Notifier, Outcome
from shared.retention import (
    BlockerKind,
    KeyFacts,
    RetentionRefused,
    Verdict,
    backup_of,
    verdict,
)
from shared.tags import RETIRE_TAG, RETIRED_AT_TAG, RETIRED_BY_TAG, REVOKED_BY_TAG
from shared.usage import UsageSource

log = structlog.get_logger("keysteward.retention")


@dataclass
class SweepResult:
    run: str
    retired: list[str] = field(default_factory=list)  # versioned key URIs
    kept: dict[str, list[str]] = field(default_factory=dict)  # versioned URI -> reasons
    repaired: list[str] = field(default_factory=list)
    drift_alerts: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    # Keys purged while services still use them: an incident, and counted as an error.
    purged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    revoked: dict[str, str] = field(default_factory=dict)  # key URI -> the revocation run it stood down for

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "retired": self.retired, "kept": self.kept, "repaired": self.repaired,
                "driftAlerts": self.drift_alerts, "recovered": self.recovered, "purged": self.purged,
                "errors": self.errors, "revoked": self.revoked}


class Retention:
    """The retention rule over live facts."""

    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        keys: KeyStore,
        inventory: Inventory,
        notifier: Notifier,
        usage: UsageSource,
        revoked_by: Callable[[KeyRef], str | None],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._keys = keys
        self._inventory = inventory
        self._notifier = notifier
        self._usage = usage
        self._revoked_by = revoked_by

    # ---- facts and verdicts -----------------------------------------------------------------
    def key_facts(self, key: KeyRef, bindings: Sequence[Binding] | None = None) -> KeyFacts:
        """The key's versions and bindings, read once (``bindings`` when the caller read them)."""
        key = key.versionless()
        found = (list(bindings) if bindings is not None
                 else for_key(self._inventory.bindings(self._settings.subscriptions), key))
        return KeyFacts(key, self._keys.versions(key), found)

    def verdict_for(self, facts: KeyFacts, version: str, *, evidence: bool = True) -> Verdict:
        """The verdict on live facts; ``evidence`` adds what Key Vault's audit logs say (shared/evidence.py)."""
        settings = self._settings
        result = verdict(version, versions=facts.versions, bindings=facts.bindings, now=self._clock.now(),
                         retention=settings.retention, backup_window=settings.backup_window,
                         follow_delay=settings.lag_alert)
        if not evidence or any(b.kind == BlockerKind.CURRENT for b in result.blockers):
            return result
        extra = usage_blockers(self._usage, facts, version)
        return Verdict(version, result.blockers + extra) if extra else result

    def key_status(self, key: KeyRef) -> dict[str, Any]:
        """Every version with its state, the bindings that use it, and its retention verdict."""
        facts = self.key_facts(key)
        current = facts.current
        versions = []
        for v in reversed(facts.versions):
            users = [b for b in facts.bindings if b.effective_version == v.version]
            versions.append({
                "version": v.version,
                "current": current is not None and v.version == current.version,
                "enabled": v.enabled,
                "created": v.created.isoformat() if v.created else None,
                "notBefore": v.not_before.isoformat() if v.not_before else None,
                "expiresOn": v.expires_on.isoformat() if v.expires_on else None,
                "tags": dict(v.tags),
                "usedBy": [b.resource_id for b in users],
                "retention": self.verdict_for(facts, v.version).as_dict(),
            })
        return {
            "key": facts.key.uri,
            "currentVersion": current.version if current else None,
            "usageEvidence": status_fields(self._usage, facts, versions),
            "versions": versions,
            "bindings": [
                {"resourceId": b.resource_id, "service": b.service.value, "pinnedVersion": b.pinned_version,
                 "inUseVersion": b.in_use_version, "updatable": b.updatable,
                 "stuck": (not b.updatable and current is not None and b.effective_version != current.version),
                 **_binding_extras(b, current)}
                for b in facts.bindings
            ],
        }

    # ---- the guarded disable ------------------------------------------------------------------
    def disable_version(self, key: KeyRef, *, reason: str, ticket: str, caller: str) -> dict[str, Any]:
        """Guarded disable of one version; raises :class:`RetentionRefused` when the rule forbids it."""
        if key.version is None:
            raise PermanentError("disable needs a versioned key URI", code="BadRequest", status=400)
        revoked_by = self._revoked_by(key)
        if revoked_by is not None:
            # A revoked key changes only through its own restore (issue: "a revocation holds").
            log.warning("disable-refused", key=str(key), caller=caller, ticket=ticket, revoked_by=revoked_by)
            raise PermanentError(f"disable refused: the key is revoked by run {revoked_by}; restore that run first",
                                 code="KeyRevoked", status=409)
        facts = self.key_facts(key)
        result = self.verdict_for(facts, key.version)
        if not result.allowed:
            log.warning("disable-refused", key=str(key), caller=caller, ticket=ticket,
                        blockers=[b.kind for b in result.blockers])
            raise RetentionRefused(key, result)
        target = next(v for v in facts.versions if v.version == key.version)
        run = f"disable-{uuid.uuid4().hex[:12]}"
        if target.enabled:
            self._keys.set_enabled(key, enabled=False, tags=_merge_tags(target, {
                RETIRED_AT_TAG: self._clock.now().isoformat(), RETIRED_BY_TAG: run}))
        log.info("version-disabled", key=str(key), caller=caller, ticket=ticket, reason=reason, run=run,
                 already_disabled=not target.enabled)
        self._notifier.publish([Outcome("VersionDisabled", key.uri, {
            "key": key.uri, "reason": reason, "ticket": ticket, "caller": caller, "run": run})])
        return {"key": key.uri, "disabled": True, "run": run, "alreadyDisabled": not target.enabled}

    # ---- the sweep ------------------------------------------------------------------------------
    def sweep(self, *, dry_run: bool = False, retire: bool = True, repair: bool = True) -> SweepResult:
        """The timer's retention pass over every bound key in scope and every retire-managed key:
        recover soft-deleted keys in use, repair drift, retire eligible old versions.

        Never deletes or purges anything. Errors on one key are recorded and the pass goes on;
        the result lists them (and they are logged as errors), nothing is swallowed silently. A
        key purged while services still use it is an incident (``KeyPurgedInUse``) and an error.
        """
        result = SweepResult(run=f"sweep-{self._clock.now().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}")
        vaults = self._settings.vaults
        grouped = by_key(b for b in self._inventory.bindings(self._settings.subscriptions)
                         if b.key.vault_url in vaults)
        keys: dict[str, KeyRef] = {k: bs[0].key for k, bs in grouped.items()}
        for vault in vaults:
            for ref in self._keys.list_keys(vault):
                keys.setdefault(ref.key_id, ref)
        for key_id, key in sorted(keys.items()):
            try:
                used = grouped.get(key_id, [])
                if used and repair and self._recover_if_deleted(key, used, dry_run=dry_run, result=result):
                    continue
                revoked_by = self._revoked_by(key)
                if revoked_by is not None:
                    # Neither drift repair nor retirement touches a revoked key: only its restore does.
                    result.revoked[key.uri] = revoked_by
                    log.info("retention-stood-down", key=key.uri, revoked_by=revoked_by)
                    continue
                facts = self.key_facts(key, used)
                if repair:
                    self._repair_drift(facts, dry_run=dry_run, result=result)
                if retire and _is_retire_managed(facts.current):
                    self._retire(facts, dry_run=dry_run, result=result)
            except NotFoundError:
                continue  # a key listed a moment ago and gone now: nothing to protect
            except KeystewardError as err:
                result.errors.append(f"{key.uri}: {err}")
                log.error("retention-pass-error", key=key.uri, error=str(err))  # noqa: TRY400 - expected failure class, no trace
        if result.retired or result.repaired or result.recovered or result.drift_alerts:
            log.info("retention-pass", run=result.run, retired=len(result.retired), repaired=len(result.repaired),
                     recovered=len(result.recovered), alerts=len(result.drift_alerts))
        return result

    def _recover_if_deleted(self, key: KeyRef, used: Sequence[Binding], *, dry_run: bool,
                            result: SweepResult) -> bool:
        """True when the key is not readable (handled here): recovered when soft-deleted; an
        incident when purged, since the services that use it have lost it for good."""
        try:
            self._keys.current(key)
            return False
        except NotFoundError:
            pass
        deleted = self._keys.deleted(key)
        resources = [b.resource_id for b in used]
        if deleted is None:
            # Purged (or never recoverable): nothing keysteward can undo. Say so loudly, every pass,
            # until the bindings move to another key: an incident outcome and a sweep error.
            message = (f"{key.uri}: purged while {len(resources)} service(s) use it; they cannot decrypt "
                       "until given another key")
            result.purged.append(key.uri)
            result.errors.append(message)
            log.error("key-purged-in-use", key=key.uri, bindings=resources)
            self._notifier.publish([Outcome("KeyPurgedInUse", key.uri, {
                "key": key.uri, "bindings": resources, "dryRun": dry_run,
                "reason": "key was purged while services use it"}, "incident")])
            return True
        if not dry_run:
            self._keys.recover(key)
        result.recovered.append(key.uri)
        self._notifier.publish([Outcome("KeyRecovered", key.uri, {
            "key": key.uri, "bindings": resources, "dryRun": dry_run,
            "reason": "key was soft-deleted while services use it"}, "incident")])
        return True

    def _repair_drift(self, facts: KeyFacts, *, dry_run: bool, result: SweepResult) -> None:
        for v in facts.versions:
            if v.enabled or any(k.lower() == REVOKED_BY_TAG for k in v.tags):
                continue
            # Audit evidence stays out of drift repair: an outage of the workspace must not re-enable
            # every disabled version, and calls seen before a hand-made disable are not a reason to undo it.
            check = self.verdict_for(facts, v.version, evidence=False)
            # A version whose disable the rule would forbid must be enabled: anything else is drift.
            if check.allowed:
                continue
            uri = v.ref.uri
            reasons = [b.message for b in check.blockers]
            # The newest version disabled while nothing uses it is how a key is staged or revoked by
            # hand (the documented Cosmos DB revocation): report it, never undo it.
            only_current = all(b.kind == BlockerKind.CURRENT for b in check.blockers)
            if self._settings.drift_mode == "repair" and not dry_run and not only_current:
                self._keys.set_enabled(v.ref, enabled=True)
                result.repaired.append(uri)
            else:
                result.drift_alerts.append(uri)
            self._notifier.publish([Outcome("VersionDrift", uri, {
                "key": facts.key.uri, "version": v.version, "reasons": reasons,
                "action": "re-enabled" if uri in result.repaired else "alert-only"}, "incident")])

    def _retire(self, facts: KeyFacts, *, dry_run: bool, result: SweepResult) -> None:
        now = self._clock.now().isoformat()
        for v in facts.versions[:-1]:
            if not v.enabled:
                continue
            check = self.verdict_for(facts, v.version)
            if not check.allowed:
                result.kept[v.ref.uri] = [b.message for b in check.blockers]
                continue
            if not dry_run:
                self._keys.set_enabled(v.ref, enabled=False,
                                       tags=_merge_tags(v, {RETIRED_AT_TAG: now, RETIRED_BY_TAG: result.run}))
            result.retired.append(v.ref.uri)
        if result.retired and not dry_run:
            self._notifier.publish([Outcome("VersionsRetired", facts.key.uri, {
                "key": facts.key.uri, "versions": [u for u in result.retired if u.startswith(facts.key.uri)],
                "run": result.run})])


def _binding_extras(b: Binding, current: KeyVersion | None) -> dict[str, Any]:
    """Per-binding status fields: the version in use in words and the backup retention."""
    extras: dict[str, Any] = {}
    if b.versionless and b.updatable:
        extras["inUse"] = b.in_use_version or "unknown"
        extras["lagging"] = bool(current is not None and b.in_use_version is not None
                                 and b.in_use_version != current.version)
    policy = backup_of(b)
    if policy is not None:
        extras["backup"] = policy.description if policy.readable else f"policy unreadable: {policy.reason}"
        extras["backupRetentionHours"] = (int(policy.window.total_seconds() // 3600)
                                          if policy.window is not None else None)
    return extras


def _merge_tags(v: KeyVersion, extra: dict[str, str]) -> dict[str, str]:
    return {**v.tags, **extra}


def _is_retire_managed(current: KeyVersion | None) -> bool:
    if current is None:
        return False
    return any(k.lower() == RETIRE_TAG and v.strip().lower() in ("true", "yes", "1") for k, v in current.tags.items())


__all__ = ["Retention", "RetentionRefused", "SweepResult"]
