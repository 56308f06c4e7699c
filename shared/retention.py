"""The retention rule, in one place (pure: no I/O). :mod:`shared.retirement` enforces it.

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
the time left. Only a revocation run may override the rule, explicitly (shared/runbooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.errors import PermanentError
from shared.model import BackupRetention, Binding, KeyRef, KeyVersion, ServiceType


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


__all__ = [
    "DEFAULT_BACKUP_RETENTION", "Blocker", "BlockerKind", "KeyFacts", "RetentionRefused", "Verdict", "backup_of",
    "restore_point_note", "verdict",
]
