"""The retention rule, in one place, and everything that enforces it.

A version V of key K may be disabled only when all hold:
1. V is not K's current version;
2. at least the retention period has passed since V's successor was created
   (default 24 h; ``KEYSTEWARD_RETENTION_HOURS`` may raise it, never lower it);
3. no binding is pinned to V, and every versionless binding is known to have moved off V;
4. no binding that keysteward cannot update (PostgreSQL, Energy) uses V;
5. no restore point that may have been taken with V can still be restored: for every binding
   that carries a backup retention (Cosmos DB ``backupPolicy``; PostgreSQL's point-in-time
   restore window), V stays enabled from the moment the binding stopped using it until that
   moment plus the retention (``KEYSTEWARD_BACKUP_WINDOW_HOURS`` is a floor under it); a
   policy that cannot be read keeps every version the binding may have used.
The answer is never just "no": :func:`verdict` lists every blocker, with the bindings and
the time left. Only a revocation run may override the rule, explicitly (shared/runbooks.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from shared.errors import KeystewardError, NotFoundError, PermanentError
from shared.model import BackupRetention, Binding, KeyRef, KeyVersion, ServiceType
from shared.notify import Outcome

if TYPE_CHECKING:
    from shared.app import Keysteward

# RETIRE_TAG on the current version: retire old versions of this key. REVOKED_BY_TAG is set by
# revocation runs; drift repair leaves those versions alone. One vocabulary: shared/tags.py.
from shared.tags import RETIRE_TAG, RETIRED_AT_TAG, RETIRED_BY_TAG, REVOKED_BY_TAG


class BlockerKind:
    CURRENT = "current"
    RETENTION = "retention"
    PINNED = "pinned"
    VERSIONLESS = "versionless"
    READ_ONLY = "read-only"
    BACKUP = "backup"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Blocker:
    kind: str
    message: str
    resource_id: str | None = None
    time_left: timedelta | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "resourceId": self.resource_id,
            "timeLeftSeconds": int(self.time_left.total_seconds()) if self.time_left is not None else None,
        }


@dataclass(frozen=True)
class Verdict:
    version: str
    blockers: tuple[Blocker, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.blockers

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "mayDisable": self.allowed, "blockers": [b.as_dict() for b in self.blockers]}


def verdict(
    version: str,
    *,
    versions: Sequence[KeyVersion],
    bindings: Sequence[Binding],
    now: datetime,
    retention: timedelta,
    backup_window: timedelta = timedelta(0),
    follow_delay: timedelta = timedelta(hours=2),
) -> Verdict:
    """May ``version`` be disabled now? ``versions`` oldest first; ``bindings`` of this key.

    ``backup_window`` is the operator's floor under every backup retention; ``follow_delay``
    bounds how long after a version's successor was created a versionless binding that now
    reports a later version moved off it (the lag limit, ``KEYSTEWARD_LAG_ALERT_MINUTES``: a
    binding slower than that is reported as lagging).
    Pure: no I/O. Unknown facts block (a version in use cannot be proven unused).
    """
    blockers: list[Blocker] = []
    order = [v.version for v in versions]
    if version not in order:
        return Verdict(version, (Blocker(BlockerKind.UNKNOWN, f"version {version} is not a version of this key"),))
    index = order.index(version)
    # 1. the current version
    if index == len(order) - 1:
        blockers.append(Blocker(BlockerKind.CURRENT, f"{version} is the key's current version"))
    else:
        # 2. retention since the successor was created
        successor = versions[index + 1]
        if successor.created is None:
            blockers.append(Blocker(BlockerKind.UNKNOWN, f"creation time of successor {successor.version} unknown"))
        else:
            age = now - successor.created
            if age < retention:
                left = retention - age
                blockers.append(Blocker(
                    BlockerKind.RETENTION,
                    f"successor {successor.version} was created {_hours(age)} ago; retention is {_hours(retention)}"
                    f" ({_hours(left)} left)",
                    time_left=left,
                ))
            # 5. restore points taken with V, per binding
            for b in bindings:
                blocker = _backup_blocker(b, version, successor.created, now=now, floor=backup_window,
                                          follow_delay=follow_delay)
                if blocker is not None:
                    blockers.append(blocker)
    # 3 and 4. bindings
    for b in bindings:
        if not b.updatable:
            if b.effective_version is None:
                blockers.append(Blocker(BlockerKind.READ_ONLY, f"{b.service.value} {b.name} cannot be updated and "
                                        "its key version is not known", b.resource_id))
            elif b.effective_version == version:
                blockers.append(Blocker(BlockerKind.READ_ONLY, f"{b.service.value} {b.name} uses {version} and its "
                                        "key cannot be changed after creation", b.resource_id))
        elif b.pinned_version is not None:
            if b.pinned_version == version:
                blockers.append(Blocker(BlockerKind.PINNED, f"{b.service.value} {b.name} is pinned to {version}",
                                        b.resource_id))
        elif b.in_use_version is None:
            blockers.append(Blocker(BlockerKind.VERSIONLESS, f"versionless {b.service.value} {b.name}: version in use "
                                    "unknown (not reported)", b.resource_id))
        elif b.in_use_version == version:
            blockers.append(Blocker(BlockerKind.VERSIONLESS, f"versionless {b.service.value} {b.name} still uses "
                                    f"{version}", b.resource_id))
    return Verdict(version, tuple(blockers))


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h"


# ---- backups ----------------------------------------------------------------------------------

# Cosmos DB for PostgreSQL keeps point-in-time restore backups for 35 days (product document
# "Backup and restore in Azure Cosmos DB for PostgreSQL": "retained for 35 days"); its ARM
# spec (postgresqlhsc) exposes no retention property. A PostgreSQL adapter that reads one fills
# Binding.backup itself; otherwise this documented default applies. Kusto clusters and Energy
# instances expose no customer restore points that depend on a key version.
DEFAULT_BACKUP_RETENTION: dict[ServiceType, BackupRetention] = {
    ServiceType.POSTGRES: BackupRetention(timedelta(days=35), "point-in-time restore backups kept 35 days"),
}


def backup_of(binding: Binding) -> BackupRetention | None:
    """The backup retention that applies to ``binding`` (read from the resource, else the
    documented default for its service); ``None`` when its service keeps no such backups."""
    return binding.backup if binding.backup is not None else DEFAULT_BACKUP_RETENTION.get(binding.service)


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _backup_blocker(b: Binding, version: str, successor_created: datetime, *, now: datetime, floor: timedelta,
                    follow_delay: timedelta) -> Blocker | None:
    """Blocks ``version`` while restore points of ``b`` taken with it can still be restored.

    The binding stopped using ``version`` no earlier than its successor's creation: a pinned
    binding when it left the pin, a versionless one within ``follow_delay`` of the successor
    (it reports a later version now; one still on ``version``, or not reporting, is blocked as
    in use). A binding still on the version is blocked by the in-use rule; its backups are
    covered once it moves.
    """
    policy = backup_of(b)
    if policy is None:
        return None
    if b.effective_version == version or (b.versionless and b.in_use_version is None):
        return None  # still in use (or not known to have moved): the in-use rule blocks it
    if b.pinned_version is not None and b.pinned_version != version and not b.updatable:
        return None  # CMK fixed at creation on another version: never used this one
    if not policy.readable:
        return Blocker(BlockerKind.BACKUP, f"{b.name}: backup policy cannot be read ({policy.reason}); keeping"
                       f" {version}, which its restore points may need", b.resource_id)
    assert policy.window is not None  # noqa: S101 - readable means a window
    window = max(policy.window, floor)
    stopped = successor_created + (follow_delay if b.versionless else timedelta(0))
    until = stopped + window
    if now >= until:
        return None
    floor_note = f" (floor {_hours(floor)})" if floor > policy.window else ""
    return Blocker(
        BlockerKind.BACKUP,
        f"{b.name}: {policy.description}{floor_note} taken until {_day(stopped)} need it until {_day(until)}"
        f" ({_hours(until - now)} left)",
        b.resource_id,
        time_left=until - now,
    )


def restore_point_note(bindings: Sequence[Binding]) -> list[str]:
    """What a revocation does to backups, per binding with restore points (for a revoke's dry
    run): restore points taken with the key stay unusable while it is revoked."""
    notes = []
    for b in bindings:
        policy = backup_of(b)
        if policy is None:
            continue
        kept = policy.description if policy.readable else f"restore points (policy unreadable: {policy.reason})"
        notes.append(f"{b.name}: {kept} taken with this key cannot be restored while it is revoked; they become "
                     "usable again only after a restore of the key, and only while they are still retained")
    return notes


# ---- operations over the rule ---------------------------------------------------------------------


class RetentionRefused(PermanentError):
    """A disable that the rule forbids; ``verdict`` says why (HTTP 409)."""

    def __init__(self, key: KeyRef, result: Verdict) -> None:
        reasons = "; ".join(b.message for b in result.blockers)
        super().__init__(f"refused to disable {key}: {reasons}", code="RetentionRuleBlocks", status=409)
        self.key = key
        self.verdict = result


@dataclass
class KeyFacts:
    """What the rule needs about one key, read once."""

    key: KeyRef
    versions: list[KeyVersion]
    bindings: list[Binding]

    @property
    def current(self) -> KeyVersion | None:
        return self.versions[-1] if self.versions else None


def key_facts(app: Keysteward, key: KeyRef, bindings: Sequence[Binding] | None = None) -> KeyFacts:
    from shared.inventory import for_key  # noqa: PLC0415

    key = key.versionless()
    found = list(bindings) if bindings is not None else for_key(app.all_bindings(), key)
    return KeyFacts(key, app.keys.versions(key), found)


def verdict_for(app: Keysteward, facts: KeyFacts, version: str, *, evidence: bool = True) -> Verdict:
    """The verdict on live facts; ``evidence`` adds what Key Vault's audit logs say (shared/usage.py)."""
    result = verdict(version, versions=facts.versions, bindings=facts.bindings, now=app.clock.now(),
                     retention=app.settings.retention, backup_window=app.settings.backup_window,
                     follow_delay=app.settings.lag_alert)
    if not evidence or any(b.kind == BlockerKind.CURRENT for b in result.blockers):
        return result
    from shared.usage import usage_blockers  # noqa: PLC0415 - usage imports this module

    extra = usage_blockers(app, facts, version)
    return Verdict(version, result.blockers + extra) if extra else result


def key_status(app: Keysteward, key: KeyRef) -> dict[str, Any]:
    """Every version with its state, the bindings that use it, and its retention verdict."""
    facts = key_facts(app, key)
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
            "retention": verdict_for(app, facts, v.version).as_dict(),
        })
    from shared.usage import status_fields  # noqa: PLC0415 - usage imports this module

    return {
        "key": facts.key.uri,
        "currentVersion": current.version if current else None,
        "usageEvidence": status_fields(app, facts, versions),
        "versions": versions,
        "bindings": [
            {"resourceId": b.resource_id, "service": b.service.value, "pinnedVersion": b.pinned_version,
             "inUseVersion": b.in_use_version, "updatable": b.updatable,
             "stuck": (not b.updatable and current is not None and b.effective_version != current.version),
             **_binding_extras(b, current)}
            for b in facts.bindings
        ],
    }


def status_lines(status: dict[str, Any]) -> list[str]:
    from shared.usage import evidence_line  # noqa: PLC0415 - usage imports this module
    from shared.usage import status_lines as usage_lines  # noqa: PLC0415

    lines = [f"{status['key']}  current={status['currentVersion']}"]
    evidence = evidence_line(status)
    if evidence:
        lines.append(evidence)
    for v in status["versions"]:
        state = "enabled" if v["enabled"] else "disabled"
        mark = "*" if v["current"] else " "
        verdict_text = "may disable" if v["retention"]["mayDisable"] else "keep"
        lines.append(f" {mark} {v['version']}  {state:<8} users={len(v['usedBy'])}  {verdict_text}")
        for b in v["retention"]["blockers"]:
            lines.append(f"      - {b['message']}")
        lines.extend(usage_lines(status, v))
    stuck = [b for b in status["bindings"] if b["stuck"]]
    for b in stuck:
        lines.append(f"  stuck on an old version (cannot be updated): {b['resourceId']}")
    for b in status["bindings"]:
        if b.get("lagging"):
            lines.append(f"  lagging (still on {b['inUseVersion']}): {b['resourceId']}")
        elif b.get("inUse") == "unknown":
            lines.append(f"  version in use unknown (not reported): {b['resourceId']}")
        if b.get("backup"):
            lines.append(f"  backups: {b['backup']}: {b['resourceId']}")
    return lines


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


def disable_version(app: Keysteward, key: KeyRef, *, reason: str, ticket: str, caller: str) -> dict[str, Any]:
    """Guarded disable of one version; raises :class:`RetentionRefused` when the rule forbids it."""
    if key.version is None:
        raise PermanentError("disable needs a versioned key URI", code="BadRequest", status=400)
    revoked_by = app.revocation_in_force(key)
    if revoked_by is not None:
        # A revoked key changes only through its own restore (issue: "a revocation holds").
        structlog.get_logger("keysteward.retention").warning("disable-refused", key=str(key), caller=caller,
                                                             ticket=ticket, revoked_by=revoked_by)
        raise PermanentError(f"disable refused: the key is revoked by run {revoked_by}; restore that run first",
                             code="KeyRevoked", status=409)
    facts = key_facts(app, key)
    result = verdict_for(app, facts, key.version)
    log = structlog.get_logger("keysteward.retention")
    if not result.allowed:
        log.warning("disable-refused", key=str(key), caller=caller, ticket=ticket,
                    blockers=[b.kind for b in result.blockers])
        raise RetentionRefused(key, result)
    target = next(v for v in facts.versions if v.version == key.version)
    run = f"disable-{uuid.uuid4().hex[:12]}"
    if target.enabled:
        app.keys.set_enabled(key, enabled=False, tags=_merge_tags(target, {
            RETIRED_AT_TAG: app.clock.now().isoformat(), RETIRED_BY_TAG: run}))
    log.info("version-disabled", key=str(key), caller=caller, ticket=ticket, reason=reason, run=run,
             already_disabled=not target.enabled)
    app.notifier.publish([Outcome("VersionDisabled", key.uri, {
        "key": key.uri, "reason": reason, "ticket": ticket, "caller": caller, "run": run})])
    return {"key": key.uri, "disabled": True, "run": run, "alreadyDisabled": not target.enabled}


def _is_retire_managed(current: KeyVersion | None) -> bool:
    if current is None:
        return False
    return any(k.lower() == RETIRE_TAG and v.strip().lower() in ("true", "yes", "1") for k, v in current.tags.items())


@dataclass
class SweepResult:
    run: str
    retired: list[str] = field(default_factory=list)  # versioned key URIs
    kept: dict[str, list[str]] = field(default_factory=dict)  # versioned URI -> reasons
    repaired: list[str] = field(default_factory=list)
    drift_alerts: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    revoked: dict[str, str] = field(default_factory=dict)  # key URI -> the revocation run it stood down for

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "retired": self.retired, "kept": self.kept, "repaired": self.repaired,
                "driftAlerts": self.drift_alerts, "recovered": self.recovered, "errors": self.errors,
                "revoked": self.revoked}


def maintenance_pass(app: Keysteward, *, dry_run: bool = False, retire: bool = True,
                     repair: bool = True) -> SweepResult:
    """The timer's retention pass over every bound key in scope and every retire-managed key:
    recover soft-deleted keys in use, repair drift, retire eligible old versions.

    Never deletes or purges anything. Errors on one key are recorded and the pass goes on;
    the result lists them (and they are logged as errors), nothing is swallowed silently.
    """
    from shared.inventory import by_key  # noqa: PLC0415

    log = structlog.get_logger("keysteward.retention")
    result = SweepResult(run=f"sweep-{app.clock.now().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}")
    bindings = app.all_bindings()
    grouped = by_key(b for b in bindings if app.in_scope(b.key))
    keys: dict[str, KeyRef] = {k: bs[0].key for k, bs in grouped.items()}
    for vault in app.settings.vaults:
        for ref in app.keys.list_keys(vault):
            keys.setdefault(ref.key_id, ref)
    for key_id, key in sorted(keys.items()):
        try:
            used = grouped.get(key_id, [])
            if used and repair and _recover_if_deleted(app, key, used, dry_run=dry_run, result=result):
                continue
            revoked_by = app.revocation_in_force(key)
            if revoked_by is not None:
                # Neither drift repair nor retirement touches a revoked key: only its restore does.
                result.revoked[key.uri] = revoked_by
                log.info("retention-stood-down", key=key.uri, revoked_by=revoked_by)
                continue
            facts = key_facts(app, key, used)
            if repair:
                _repair_drift(app, facts, dry_run=dry_run, result=result)
            if retire and _is_retire_managed(facts.current):
                _retire(app, facts, dry_run=dry_run, result=result)
        except NotFoundError:
            continue  # a key listed a moment ago and gone now: nothing to protect
        except KeystewardError as err:
            result.errors.append(f"{key.uri}: {err}")
            log.error("retention-pass-error", key=key.uri, error=str(err))  # noqa: TRY400 - expected failure class, no trace
    if result.retired or result.repaired or result.recovered or result.drift_alerts:
        log.info("retention-pass", run=result.run, retired=len(result.retired), repaired=len(result.repaired),
                 recovered=len(result.recovered), alerts=len(result.drift_alerts))
    return result


def _recover_if_deleted(app: Keysteward, key: KeyRef, used: Sequence[Binding], *, dry_run: bool,
                        result: SweepResult) -> bool:
    try:
        app.keys.current(key)
        return False
    except NotFoundError:
        pass
    deleted = app.keys.deleted(key)
    if deleted is None:
        return True  # gone for good (purged): nothing keysteward can do; the alert below says so
    if not dry_run:
        app.keys.recover(key)
    result.recovered.append(key.uri)
    app.notifier.publish([Outcome("KeyRecovered", key.uri, {
        "key": key.uri, "bindings": [b.resource_id for b in used], "dryRun": dry_run,
        "reason": "key was soft-deleted while services use it"}, "incident")])
    return True


def _repair_drift(app: Keysteward, facts: KeyFacts, *, dry_run: bool, result: SweepResult) -> None:
    for v in facts.versions:
        if v.enabled or any(k.lower() == REVOKED_BY_TAG for k in v.tags):
            continue
        # Audit evidence stays out of drift repair: an outage of the workspace must not re-enable
        # every disabled version, and calls seen before a hand-made disable are not a reason to undo it.
        check = verdict_for(app, facts, v.version, evidence=False)
        # A version whose disable the rule would forbid must be enabled: anything else is drift.
        if check.allowed:
            continue
        uri = v.ref.uri
        reasons = [b.message for b in check.blockers]
        # The newest version disabled while nothing uses it is how a key is staged or revoked by
        # hand (the documented Cosmos DB revocation): report it, never undo it.
        only_current = all(b.kind == BlockerKind.CURRENT for b in check.blockers)
        if app.settings.drift_mode == "repair" and not dry_run and not only_current:
            app.keys.set_enabled(v.ref, enabled=True)
            result.repaired.append(uri)
        else:
            result.drift_alerts.append(uri)
        app.notifier.publish([Outcome("VersionDrift", uri, {
            "key": facts.key.uri, "version": v.version, "reasons": reasons,
            "action": "re-enabled" if uri in result.repaired else "alert-only"}, "incident")])


def _retire(app: Keysteward, facts: KeyFacts, *, dry_run: bool, result: SweepResult) -> None:
    now = app.clock.now().isoformat()
    for v in facts.versions[:-1]:
        if not v.enabled:
            continue
        check = verdict_for(app, facts, v.version)
        if not check.allowed:
            result.kept[v.ref.uri] = [b.message for b in check.blockers]
            continue
        if not dry_run:
            app.keys.set_enabled(v.ref, enabled=False,
                                 tags=_merge_tags(v, {RETIRED_AT_TAG: now, RETIRED_BY_TAG: result.run}))
        result.retired.append(v.ref.uri)
    if result.retired and not dry_run:
        app.notifier.publish([Outcome("VersionsRetired", facts.key.uri, {
            "key": facts.key.uri, "versions": [u for u in result.retired if u.startswith(facts.key.uri)],
            "run": result.run})])
