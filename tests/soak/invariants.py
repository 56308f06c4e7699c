"""The soak's invariants, as plain functions over observations, shared by the in-process soak
and the process-level soak.

Observations are deliberately neutral data (no World, no app):

- a :class:`Snapshot` of every key version (enabled, created, tags) and every CMK binding
  (as :class:`shared.model.Binding`) at one sandbox instant;
- request records: dicts with ``seq`` (optional), ``time`` (ISO-8601), ``method``, ``host``,
  ``path``, ``status`` and ``service`` (``arm``/``vault``/``admin``), the shape of the
  sandbox's request log (``/sandbox/requests``) and of the in-process recorder;
- runs as :class:`shared.journal.Run`.

Each check returns a list of violations (human-readable strings); empty means the invariant
holds. The soak fails a seed on the first non-empty list and prints the seed for replay.

I1  no version was disabled within the retention period of its replacement, while any
    binding used it, or while restore points taken with it could still be restored (each
    binding's backup retention), except by a revocation run (or by the soak itself, playing an
    operator);
I2  every pinned, updatable binding ends on its key's current version (unless held or revoked);
I3  every run ends succeeded, or failed with a reason, or is resumable and finishes on resume;
I4  re-delivering any event, or re-running any pass, makes no further write;
I5  nothing is ever deleted or purged;
I6  no request is sent to a host outside the configured vaults and ARM;
I7  while a revocation is in force, no version of its key is enabled and no binding of it is
    moved, except by its own restore.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.journal import Run
from shared.model import Binding, KeyRef, KeyVersion
from shared.retention import verdict
from shared.tags import REVOKED_BY_TAG

ARM_HOST = "management.azure.com"
WRITE_METHODS = frozenset({"PATCH", "PUT", "POST", "DELETE"})
# Key Vault and ARM operations that are reads although sent as POST (none used by keysteward
# today; listed so that a future list* call does not read as a write).
READ_POSTS = ("/listkeys", "/listconnectionstrings", "/providers/microsoft.resourcegraph/resources")
FINISHED_OK = frozenset({"succeeded", "partially-succeeded", "failed", "canceled"})


@dataclass(frozen=True)
class Snapshot:
    """Versions and bindings at one instant (``time``: the sandbox clock)."""

    time: datetime
    versions: Mapping[str, Sequence[KeyVersion]]  # versionless key URI (lower-case) -> oldest first
    bindings: Sequence[Binding]
    busy: frozenset[str] = field(default_factory=frozenset)  # resource ids with an operation running

    def version_map(self) -> dict[tuple[str, str], KeyVersion]:
        return {(k, v.version): v for k, vs in self.versions.items() for v in vs}

    def bindings_of(self, key_id: str) -> list[Binding]:
        return [b for b in self.bindings if b.key.key_id == key_id]


def key_id(ref: KeyRef) -> str:
    return ref.key_id


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---- I1 -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Disable:
    """One version that went from enabled to disabled between two snapshots."""

    key: str
    version: str
    at: datetime  # when the write happened, as well as it is known
    tags: Mapping[str, str]


def disables_between(before: Snapshot, after: Snapshot, requests: Iterable[Mapping[str, Any]] = ()) -> list[Disable]:
    """Versions enabled in ``before`` and disabled in ``after``; the time of each is the time
    of the last successful PATCH of that version among ``requests`` (the step's part of the
    request log), else ``after.time`` (the most lenient choice)."""
    last_patch: dict[tuple[str, str], datetime] = {}
    for r in requests:
        if r["method"] != "PATCH" or not 200 <= int(r["status"]) < 300 or r.get("service") != "vault":
            continue
        parts = str(r["path"]).strip("/").split("/")
        if len(parts) == 3 and parts[0] == "keys":
            last_patch[(parts[1].lower(), parts[2])] = parse_time(str(r["time"]))
    old = before.version_map()
    out: list[Disable] = []
    for (key, version), now in after.version_map().items():
        was = old.get((key, version))
        if was is None or not was.enabled or now.enabled:
            continue
        name = key.rsplit("/", 1)[-1]
        out.append(Disable(key, version, last_patch.get((name, version), after.time), dict(now.tags)))
    return out


def check_i1(
    disables: Iterable[Disable],
    after: Snapshot,
    *,
    retention: timedelta,
    revocation_runs: Iterable[str],
    external: Iterable[tuple[str, str]] = (),
    backup_window: timedelta = timedelta(0),
    follow_delay: timedelta = timedelta(hours=2),
) -> list[str]:
    """I1 for the disables of one step. A disable is allowed when the version carries
    ``keysteward-revoked-by`` naming a revocation run, when the soak itself made it
    (``external``: (key, version) pairs), or when :func:`shared.retention.verdict` allows it at
    the time of the write with the bindings as they are after the step (a binding still on the
    version after the step was on it when the version was disabled). Backup windows come with
    the bindings (``Binding.backup``); ``backup_window`` and ``follow_delay`` are keysteward's
    ``KEYSTEWARD_BACKUP_WINDOW_HOURS`` floor and lag limit (defaults: 0 and 2 h)."""
    runs = set(revocation_runs)
    outside = set(external)
    problems: list[str] = []
    for d in disables:
        if (d.key, d.version) in outside:
            continue
        by = d.tags.get(REVOKED_BY_TAG)
        if by is not None:
            if by not in runs:
                problems.append(f"I1: {d.key}/{d.version} tagged {REVOKED_BY_TAG}={by}, which is no revocation run")
            continue
        check = verdict(d.version, versions=list(after.versions.get(d.key, ())), bindings=after.bindings_of(d.key),
                        now=d.at, retention=retention, backup_window=backup_window, follow_delay=follow_delay)
        if check.blockers:
            reasons = "; ".join(b.message for b in check.blockers)
            problems.append(f"I1: {d.key}/{d.version} disabled at {d.at.isoformat()} against the rule: {reasons}")
    return problems


# ---- I2 -----------------------------------------------------------------------------------
def check_i2(snapshot: Snapshot, *, vaults: Iterable[str], hold_tag: str = "keysteward-hold") -> list[str]:
    """Every pinned, updatable binding of a configured vault is on its key's current version,
    unless it is held, or the key's current version is disabled (revoked, or staged by hand)."""
    allowed = {v.rstrip("/").lower() for v in vaults}
    problems: list[str] = []
    for b in snapshot.bindings:
        if not b.updatable or b.pinned_version is None or b.key.vault_url.lower() not in allowed:
            continue
        if b.held(hold_tag):
            continue
        versions = snapshot.versions.get(b.key.key_id)
        if not versions:
            problems.append(f"I2: {b.name} is bound to {b.key.uri}, which has no versions")
            continue
        current = versions[-1]
        if not current.enabled:
            continue  # revoked (or staged): a disabled version is never a target
        mine = next((v for v in versions if v.version == b.pinned_version), None)
        if mine is not None and not mine.enabled and REVOKED_BY_TAG in mine.tags:
            continue  # the service itself is revoked (Cosmos DB refuses key changes then)
        if b.pinned_version != current.version:
            problems.append(f"I2: {b.name} is pinned to {b.pinned_version}, not to the current "
                            f"{current.version} of {b.key.uri}")
        if b.resource_id.lower() in snapshot.busy:
            problems.append(f"I2: {b.name} still has an operation running")
    return problems


# ---- I3 -----------------------------------------------------------------------------------
def check_i3(runs: Iterable[Run]) -> list[str]:
    """Every run is finished: succeeded; failed with a recorded reason; partially succeeded
    with what failed or went unconfirmed; or canceled (a duplicate restore)."""
    problems: list[str] = []
    for run in runs:
        if run.status == "pending-approval":
            continue  # waits for a second person, not for the engine (the soak's junk runs)
        if run.status not in FINISHED_OK:
            problems.append(f"I3: run {run.run_id} ({run.kind}) is {run.status} after recovery")
        elif run.status == "failed" and not (run.result.get("error") or run.result.get("failedStep")):
            problems.append(f"I3: run {run.run_id} failed without a reason: {run.result}")
        elif run.status == "partially-succeeded" and not (
                run.result.get("failed") or run.result.get("unconfirmed") or run.result.get("held")):
            problems.append(f"I3: run {run.run_id} partially succeeded with nothing failed or unconfirmed")
    return problems


# ---- I4, I5, I6 -------------------------------------------------------------------------------
def is_write(r: Mapping[str, Any], *, accepted_only: bool = False) -> bool:
    """A write to ARM or Key Vault; with ``accepted_only``, one the service accepted (2xx):
    a refused write (4xx) changed nothing."""
    if r["method"] not in WRITE_METHODS or r.get("service") == "admin":
        return False
    if accepted_only and not 200 <= int(r["status"]) < 300:
        return False
    path = str(r["path"]).lower()
    return not (r["method"] == "POST" and path.endswith(READ_POSTS))


def check_i4(requests: Iterable[Mapping[str, Any]], *, accepted_only: bool = False) -> list[str]:
    """No write among ``requests`` (what the re-delivery and the re-run sent), refused or not:
    a repeated pass must not even try. ``accepted_only`` counts only writes the service accepted."""
    return [f"I4: a repeated event or pass wrote: {r['method']} {r['host']}{r['path']} -> {r['status']}"
            for r in requests if is_write(r, accepted_only=accepted_only)]


def check_i5(requests: Iterable[Mapping[str, Any]]) -> list[str]:
    """No DELETE on ARM or Key Vault and no purge, ever (whoever sent it: the soak sends none)."""
    problems = []
    for r in requests:
        if r.get("service") == "admin":
            continue
        path = str(r["path"]).lower()
        if r["method"] == "DELETE" or "/purge" in path or (path.startswith("/deletedkeys/") and r["method"] != "GET"):
            problems.append(f"I5: {r['method']} {r['host']}{r['path']}")
    return problems


def host_of(url_or_host: str) -> str:
    text = url_or_host.split("://", 1)[-1]
    return text.split("/", 1)[0].lower()


def check_i6(requests: Iterable[Mapping[str, Any]], *, vaults: Iterable[str],
             arm_hosts: Iterable[str] = (ARM_HOST,), extra_hosts: Iterable[str] = ()) -> list[str]:
    """Every host the service sent a request to is ARM or a configured vault (``extra_hosts``:
    what a deployment mode adds on purpose, e.g. the loopback sandbox's clock endpoint)."""
    allowed = {host_of(v) for v in vaults} | {host_of(h) for h in arm_hosts} | {host_of(h) for h in extra_hosts}
    seen: dict[str, str] = {}
    for r in requests:
        host = str(r["host"]).lower()
        if host not in allowed:
            seen.setdefault(host, f"{r['method']} {r['path']}")
    return [f"I6: request to {host} outside the configured vaults and ARM (first: {first})"
            for host, first in sorted(seen.items())]


__all__ = [
    "Disable",
    "Snapshot",
    "check_i1",
    "check_i2",
    "check_i3",
    "check_i4",
    "check_i5",
    "check_i6",
    "disables_between",
    "is_write",
]


# ---- I7 -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class InForce:
    """A revocation in force through a whole step (recorded at its start and at its end, and no
    restore of it under way): its run, its key (``key_id`` form) and its mode."""

    run_id: str
    key_id: str
    mode: str


def check_i7(in_force: Iterable[InForce], *, before: Snapshot, after: Snapshot,
             requests: Iterable[Mapping[str, Any]], versions_settled: bool) -> list[str]:
    """No accepted write to a resource bound to a revoked key (no binding moved) during the step;
    when ``versions_settled`` (a timer pass ran to completion: the hold had its turn), no enabled
    version of a key under a ``disable`` revocation."""
    problems: list[str] = []
    writes = [r for r in requests if r.get("service") == "arm" and is_write(r, accepted_only=True)]
    for rev in in_force:
        bound = {b.resource_id.lower() for b in [*before.bindings_of(rev.key_id), *after.bindings_of(rev.key_id)]}
        for r in writes:
            path = str(r["path"]).lower()
            if any(path.startswith(rid) for rid in bound):
                problems.append(f"I7: {r['method']} {r['path']} moved a binding of {rev.key_id} while run "
                                f"{rev.run_id} holds it revoked")
        if versions_settled and rev.mode == "disable":
            live = [v.version for v in after.versions.get(rev.key_id, []) if v.enabled]
            if live:
                problems.append(f"I7: {rev.key_id} has enabled version(s) {live} while run {rev.run_id} "
                                "holds it revoked")
    return problems
