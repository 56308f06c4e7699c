"""Revoke and restore: named, idempotent, journaled steps.

A *revocation* makes a key unusable on purpose (all data behind it goes dark); a
*restoration* undoes exactly what one revocation did. Both run the same five steps, each
claimed in the journal before it acts and completed after (``claim_step``/``complete_step``),
so a run interrupted anywhere is resumed by ``resume`` or by the timer's
:func:`resume_unfinished` and ends as an uninterrupted run would:

1. ``resolve``: the blast radius: every binding of the key (inventory), by version,
   subscription and service type; which of them the revocation reaches (``affected``
   ``yes``/``maybe``/``no``) and, for ``remove-access``, the *collateral*: bindings of other
   keys or versions whose identity loses its vault access too. A restore resolves the
   revocation it undoes instead.
2. ``snapshot``: what will change: which versions are enabled now, or which access policy
   entries the bound identities hold.
3. ``act``: ``disable`` disables every enabled version of the key (or the one named), with
   bounded concurrency, tagging each with :data:`REVOKED_BY_TAG` = run id and
   :data:`REVOKED_AT_TAG`; ``remove-access`` removes the bound identities' entries from the
   vault's access policy. A restore re-enables exactly the versions its revocation disabled
   (those still tagged with that run) removing the two tags, and re-adds exactly the entries it
   removed. Every item checks "already done?" first, so a repeated ``act`` writes nothing twice.
4. ``verify``: polls the affected services until each reports the change (Cosmos DB
   ``customerManagedKeyStatus``, Kusto ``state``/``stateReason``), or until
   ``settings.verify_deadline`` after ``act`` finished; each one is reported confirmed or not.
   Services that report no key status (PostgreSQL, Energy) are listed as unverifiable.
5. ``publish``: one outcome event (``KeyRevoked``/``KeyRestored``, or ``...Failed``).

Run status: ``succeeded`` when every item acted and every verifiable service confirmed;
``partially-succeeded`` when some item failed or some service did not confirm in time;
``failed`` when a step failed permanently (recorded on the step, published as an incident).

**Revocation overrides the retention guard**, explicitly: it disables versions that services
use, which is its purpose. The :data:`REVOKED_BY_TAG` tag tells retention's drift repair to
leave those versions disabled.

**Time**. A run never holds a caller for its waits. Each entry point takes a ``budget``: the
acting steps (resolve, snapshot, act) always run to completion (seconds, even for 50 versions
and hundreds of services), then ``verify`` polls only while the budget lasts, and hands the
step back (``pending``) when it runs out. The run stays ``running`` and the next ``resume``
(CLI, or the timer's :func:`resume_unfinished`) continues polling until every service
confirmed or the verify deadline passed. The HTTP triggers use a budget of zero: the caller
gets 202 once the key is revoked, well inside the platform's 230-second HTTP limit, and
verification continues on the timer. Waits go through the injected clock (``clock.sleep``):
in tests that moves the sandbox clock.

**Concurrency**. One lease per key (the versionless key URI), owned by the run, held from
its first step to its end, across pauses: two runbooks on one key never interleave. A run
paused while verification is pending keeps the lease until its verify deadline (plus
:data:`LEASE_TTL`); a run that crashed keeps it for at most :data:`LEASE_TTL`. A run that
finds the lease taken does not wait: it stays ``running`` with no step started
(``waiting="lease"``) and the next resume (oldest run first) starts it once the lease is
free, so concurrent revocations of one key run one after the other, in order of arrival.
Two instances driving the same run are kept apart by the journal's ETag-guarded step claims.

**Two-person rule** (``settings.two_person_rule``): revoking a whole key (a versionless key
URI, or ``remove-access``, which cuts an identity off the whole vault) creates the run as
``pending-approval``; it starts when a second caller (another object id) approves it.
``emergency`` skips the approval and is recorded in the run.
"""

from __future__ import annotations

import secrets
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from shared.auth import AuthError, Principal
from shared.clock import Clock
from shared.config import Settings
from shared.errors import ConfigError, NotFoundError, PermanentError, TransientError, ValidationError
from shared.inventory import Inventory, for_key
from shared.journal import (
    STEP_RESULT_MAX_CHARS,
    ConflictError,
    Journal,
    Lease,
    Run,
    Step,
    dump_json,
)
from shared.keyuri import parse_key_uri
from shared.keyvault import KeyStore
from shared.model import Binding, KeyRef, KeyVersion, ServiceType
from shared.notify import Notifier, Outcome
from shared.targets.base import Health, Target
from shared.vaultaccess import AccessEntry, VaultAccess, VaultRef
from shared.vaults import norm_vault_url

if TYPE_CHECKING:
    from shared.app import Keysteward

JsonDict = dict[str, Any]

REVOKED_BY_TAG: Final = "keysteward-revoked-by"
"""Tag on every version a revocation disabled: the run id. Retention's drift repair leaves
versions carrying it alone; restore removes it when it re-enables the version."""
REVOKED_AT_TAG: Final = "keysteward-revoked-at"
"""Tag beside :data:`REVOKED_BY_TAG`: when the version was disabled (ISO-8601 UTC)."""

MODE_DISABLE: Final = "disable"
MODE_REMOVE_ACCESS: Final = "remove-access"
MODES: Final = (MODE_DISABLE, MODE_REMOVE_ACCESS)

STEPS: Final = ("resolve", "snapshot", "act", "verify", "publish")

# The lease and a claimed step outlive the longest step: act on hundreds of versions takes
# seconds, and verify renews the lease at every poll (every VERIFY_INTERVAL).
LEASE_TTL: Final = timedelta(minutes=5)
STEP_STALE_AFTER: Final = LEASE_TTL
VERIFY_INTERVAL: Final = timedelta(seconds=30)
# Key Vault allows 15 tags per key version.
MAX_VERSION_TAGS: Final = 15
# A run's summary and its outcome event name at most this many resources or versions per list
# (with the full count): an Event Grid event is limited to 1 MB and a run record to what one
# Table entity holds; the whole lists stay on the run's steps (GET /api/runs/{id}).
SAMPLE_MAX: Final = 100
# How many of the newest finished runs a restore reads to find other revocations in force.
HELD_SCAN_LIMIT: Final = 1000
# Attempts per item of the act step on transient errors before the step is handed back.
ITEM_ATTEMPTS: Final = 3
ITEM_BACKOFF_S: Final = 1.0
# Hook phases: after the claim is recorded, after the step acted (not yet recorded), after
# the outcome is recorded.
PHASES: Final = ("claimed", "acted", "recorded")


class StepHook(Protocol):
    """Called at each phase of each step (``run_id``, ``step``, ``phase``). Tests inject one that
    raises to play a process killed at that point; production passes none."""

    def __call__(self, run_id: str, step: str, phase: str, /) -> None: ...


@dataclass(frozen=True)
class RevokeRequest:
    """A validated revocation request (parsed at the edge)."""

    key: KeyRef
    mode: str
    reason: str
    ticket: str
    emergency: bool = False


@dataclass(frozen=True)
class RestoreRequest:
    run_id: str
    reason: str
    ticket: str


@dataclass(frozen=True)
class RunView:
    """A run with its steps, as the API and the CLI show it.

    ``waiting`` says why a running run is not progressing right now (``lease``: another run
    holds the key; ``busy``: another instance is running a step of it; ``verify``: polling
    continues on the next resume; ``approval``: waits for a second person). ``duplicate`` is
    True when a restore request found the revocation already restored by this run.
    """

    run: Run
    steps: list[Step]
    waiting: str | None = None
    duplicate: bool = False

    def as_dict(self) -> JsonDict:
        r = self.run
        return {
            "run": r.run_id,
            "kind": r.kind,
            "key": r.key,
            "status": r.status,
            "caller": {"objectId": r.caller_oid, "name": r.caller_name},
            "reason": r.reason,
            "ticket": r.ticket,
            "params": r.params,
            "result": r.result,
            "created": r.created.isoformat(),
            "updated": r.updated.isoformat(),
            "waiting": self.waiting,
            "duplicate": self.duplicate,
            "steps": [
                {
                    "index": s.index,
                    "name": s.name,
                    "status": s.status,
                    "attempt": s.attempt,
                    "started": s.started.isoformat(),
                    "finished": s.finished.isoformat() if s.finished else None,
                    "result": s.result,
                    "error": s.error,
                }
                for s in self.steps
            ],
        }


@dataclass
class _Ctx:
    run: Run
    lease: Lease
    owner: str
    budget_end: datetime
    results: dict[str, JsonDict] = field(default_factory=dict)
    finished: dict[str, datetime] = field(default_factory=dict)
    hold_until: datetime | None = None


class _HandBack(Exception):
    """A step stops early (budget spent) with its progress; the run continues on resume."""

    def __init__(self, progress: JsonDict) -> None:
        super().__init__("step handed back")
        self.progress = progress


class _Stop(Exception):
    """The drive stops without finishing the run (busy, lease lost, handed back)."""

    def __init__(self, waiting: str) -> None:
        super().__init__(waiting)
        self.waiting = waiting


class _StepFailed(Exception):
    def __init__(self, step: str, error: str) -> None:
        super().__init__(f"step {step} failed: {error}")
        self.step = step
        self.error = error


def _fits(step: str, result: JsonDict) -> JsonDict:
    """``result`` if it fits one journal record untruncated; the records of resolve, snapshot
    and act drive later steps (and a restore), so a truncated one must never be written."""
    text = dump_json(result, what=f"{step} result", limit=sys.maxsize)  # never the truncation marker
    if len(text) > STEP_RESULT_MAX_CHARS and step in ("resolve", "snapshot", "act"):
        raise PermanentError(f"the {step} result is too large for one journal record ({len(text)} characters)",
                             code="ResultTooLarge")
    return result


def _sampled(name: str, items: Iterable[str] | Mapping[str, Any]) -> JsonDict:
    """``{name: the first SAMPLE_MAX items (sorted), name + "Count": how many}``; a mapping
    keeps its values for the items it names."""
    keys = sorted(items)
    count = {f"{name}Count": len(keys)}
    if isinstance(items, Mapping):
        return {name: {k: items[k] for k in keys[:SAMPLE_MAX]}, **count}
    return {name: keys[:SAMPLE_MAX], **count}


def _targeted_principals(radius: Mapping[str, Any]) -> set[str]:
    """The identities (lower-case object ids) whose access a remove-access revocation with this
    blast radius takes away: every affected binding's and the collateral's."""
    return {str(d["principalId"]).lower() for d in [*radius.get("bindings", []), *radius.get("collateral", [])]
            if d.get("affected") != "no" and d.get("principalId")}


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _lease_key(run: Run) -> str:
    return parse_key_uri(run.key, allowed_vaults=None).versionless().uri


def _reports_key_status(target: Target) -> bool:
    """Whether a service reports key access in its resource (Cosmos DB, Kusto). The services
    whose key is fixed at creation (PostgreSQL, Energy; ``updatable`` False) document no such
    field, so a runbook cannot confirm them and lists them as unverifiable."""
    return target.updatable


def _affected(binding: Binding, version: str | None) -> str:
    """``yes``/``maybe``/``no``: whether revoking ``version`` (None: the whole key) reaches it."""
    if version is None:
        return "yes"
    if binding.pinned_version is not None:
        return "yes" if binding.pinned_version == version else "no"
    if binding.in_use_version is None:
        return "maybe"  # versionless and the service does not say which version it uses
    return "yes" if binding.in_use_version == version else "no"


def _binding_doc(binding: Binding, *, affected: str, health: str) -> JsonDict:
    return {
        "resourceId": binding.resource_id,
        "service": binding.service.value,
        "subscription": binding.subscription,
        "name": binding.name,
        "version": binding.effective_version,
        "versionless": binding.versionless,
        "principalId": binding.principal_id,
        "affected": affected,
        "health": health,
    }


def _summary(bindings: Iterable[JsonDict]) -> JsonDict:
    hit = [b for b in bindings if b["affected"] != "no"]
    return {
        "affected": len(hit),
        "byVersion": dict(Counter(str(b["version"] or "versionless") for b in hit)),
        "bySubscription": dict(Counter(str(b["subscription"]) for b in hit)),
        "byService": dict(Counter(str(b["service"]) for b in hit)),
    }


class Runbooks:
    """Revoke, restore, approve, resume and read runs over injected dependencies."""

    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        keys: KeyStore,
        targets: Mapping[ServiceType, Target],
        inventory: Inventory,
        notifier: Notifier,
        journal: Journal,
        vault_access: VaultAccess,
        hook: StepHook | None = None,
        verify_interval: timedelta = VERIFY_INTERVAL,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._keys = keys
        self._targets = targets
        self._inventory = inventory
        self._notifier = notifier
        self._journal = journal
        self._vaults = vault_access
        self._hook = hook
        self._interval = verify_interval
        self._instance = secrets.token_hex(4)
        self._drives = 0
        self._lock = threading.Lock()
        self._log = structlog.get_logger("keysteward.runbooks")
        self._steps: dict[str, dict[str, Callable[[_Ctx], JsonDict]]] = {
            "revoke": {
                "resolve": self._revoke_resolve, "snapshot": self._revoke_snapshot, "act": self._revoke_act,
                "verify": self._verify, "publish": self._publish,
            },
            "restore": {
                "resolve": self._restore_resolve, "snapshot": self._restore_snapshot, "act": self._restore_act,
                "verify": self._verify, "publish": self._publish,
            },
        }

    # ---- reading ------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunView:
        """The run and its steps; raises NotFoundError."""
        run = self._journal.get_run(run_id)
        return RunView(run, self._journal.steps(run_id), waiting=self._waiting_of(run))

    def runs(self, key: KeyRef | None = None, *, limit: int = 100) -> list[Run]:
        """Runs newest first, of ``key`` when given (any version of it: a versioned key's runs
        are listed under the versionless key too)."""
        if key is None:
            return self._journal.list_runs(limit=limit)
        if key.version is not None:
            return self._journal.list_runs(key=key.uri, limit=limit)
        runs = self._journal.list_runs(key=key.uri, limit=limit)
        # Runs on one version of the key are indexed under the versioned URI; list them too.
        others = [r for r in self._journal.list_runs(limit=max(limit * 10, 1000))
                  if r.key.lower().startswith(key.uri.lower() + "/")]
        merged = {r.run_id: r for r in [*runs, *others]}
        return sorted(merged.values(), key=lambda r: r.created, reverse=True)[:limit]

    @staticmethod
    def _waiting_of(run: Run) -> str | None:
        if run.status == "pending-approval":
            return "approval"
        return None

    # ---- the blast radius ---------------------------------------------------------------------
    def _check_key(self, key: KeyRef) -> KeyRef:
        return parse_key_uri(key.uri, allowed_vaults=self._settings.vaults)

    def _blast_radius(self, key: KeyRef, mode: str) -> JsonDict:
        everything = self._inventory.bindings(self._settings.subscriptions)
        on_key = for_key(everything, key)
        docs = []
        for b in on_key:
            target = self._targets.get(b.service)
            health = target.health(b) if target is not None else Health.UNKNOWN
            docs.append(_binding_doc(b, affected=_affected(b, key.version), health=health))
        collateral: list[JsonDict] = []
        if mode == MODE_REMOVE_ACCESS:
            principals = {str(d["principalId"]).lower() for d in docs if d["affected"] != "no" and d["principalId"]}
            listed = {str(d["resourceId"]).lower() for d in docs if d["affected"] != "no"}
            for b in everything:
                if (b.principal_id and b.principal_id.lower() in principals
                        and b.key.vault_url == key.vault_url and b.resource_id.lower() not in listed):
                    target = self._targets.get(b.service)
                    health = target.health(b) if target is not None else Health.UNKNOWN
                    doc = _binding_doc(b, affected="collateral", health=health)
                    doc["key"] = b.key.uri
                    collateral.append(doc)
        unresolved = [d["resourceId"] for d in docs
                      if d["affected"] != "no" and not d["principalId"] and mode == MODE_REMOVE_ACCESS]
        return {
            "key": key.uri,
            "mode": mode,
            "bindings": docs,
            "collateral": collateral,
            "unresolvedIdentities": unresolved,
            "summary": _summary(docs),
        }

    def _version_state(self, key: KeyRef) -> JsonDict:
        versions = self._keys.versions(key)
        if key.version is not None:
            chosen = [v for v in versions if v.version == key.version]
            if not chosen:
                raise NotFoundError(f"{key}: no such version", code="VersionNotFound", status=404)
        else:
            chosen = versions
        if not chosen:
            raise NotFoundError(f"{key}: the key has no versions", code="KeyNotFound", status=404)
        return {
            "enabled": [v.version for v in chosen if v.enabled],
            "alreadyDisabled": [v.version for v in chosen if not v.enabled],
        }

    def _vault_for(self, key: KeyRef) -> VaultRef:
        vault = self._vaults.vault(key.vault_url)
        if vault.rbac:
            raise PermanentError(
                f"vault {vault.name} uses Azure RBAC: it has no access policy to remove; revoke with mode 'disable'",
                code="RbacVault", status=409,
            )
        return vault

    def _access_state(self, key: KeyRef, radius: JsonDict) -> JsonDict:
        vault = self._vault_for(key)
        principals = _targeted_principals(radius)
        entries = [e for e in self._vaults.entries(vault) if e.object_id.lower() in principals]
        return {
            "vault": {"url": vault.url, "subscription": vault.subscription,
                      "resourceGroup": vault.resource_group, "name": vault.name},
            "entries": [e.as_dict() for e in entries],
        }

    def _needs_approval(self, key: KeyRef, mode: str, emergency: bool) -> bool:
        whole_key = key.version is None or mode == MODE_REMOVE_ACCESS
        return self._settings.two_person_rule and whole_key and not emergency

    def plan(self, key: KeyRef, mode: str) -> JsonDict:
        """The dry run: the blast radius and what a revocation would change. Reads only.

        Raises ValidationError for a key outside KEYSTEWARD_VAULTS or an unknown mode,
        NotFoundError for a missing key or version, PermanentError (409) for ``remove-access``
        on an RBAC vault.
        """
        key = self._check_key(key)
        if mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}", field="mode")
        radius = self._blast_radius(key, mode)
        changes = self._version_state(key) if mode == MODE_DISABLE else self._access_state(key, radius)
        if mode == MODE_DISABLE:
            changes = {"disable": changes["enabled"], "alreadyDisabled": changes["alreadyDisabled"]}
        else:
            changes = {"vault": changes["vault"], "removeAccess": changes["entries"]}
        return {**radius, "dryRun": True, "changes": changes,
                "needsApproval": self._needs_approval(key, mode, emergency=False)}

    # ---- starting runs ------------------------------------------------------------------------
    def revoke(self, request: RevokeRequest, caller: Principal, *, budget: timedelta = timedelta(0)) -> RunView:
        """Records a revocation run and drives it within ``budget`` (see the module docstring).

        Raises ValidationError (bad key or mode, empty reason or ticket) and PermanentError
        (409: ``remove-access`` on an RBAC vault) before anything is recorded.
        """
        key = self._check_key(request.key)
        if request.mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}", field="mode")
        if not request.reason.strip():
            raise ValidationError("a reason is required", field="reason")
        if not request.ticket.strip():
            raise ValidationError("a ticket is required", field="ticket")
        if request.mode == MODE_REMOVE_ACCESS:
            self._vault_for(key)  # refuse an RBAC vault before recording anything
        pending = self._needs_approval(key, request.mode, request.emergency)
        run = self._journal.create_run(
            kind="revoke", key=key.uri, caller_oid=caller.object_id, caller_name=caller.name,
            reason=request.reason, ticket=request.ticket,
            params={"mode": request.mode, "emergency": request.emergency, "needsApproval": pending},
            status="pending-approval" if pending else "running",
        )
        self._log.info("run-created", run=run.run_id, kind="revoke", key=key.uri, mode=request.mode,
                       caller_oid=caller.object_id, emergency=request.emergency, status=run.status)
        if request.emergency:
            self._log.warning("emergency-revocation", run=run.run_id, key=key.uri, caller_oid=caller.object_id)
        if pending:
            return RunView(run, [], waiting="approval")
        return self._drive(run, budget)

    def approve(self, run_id: str, approver: Principal, *, budget: timedelta = timedelta(0)) -> RunView:
        """The second person's approval of a ``pending-approval`` revocation; starts it.

        Raises NotFoundError, PermanentError (409) when the run does not wait for approval,
        AuthError (403) when the approver is the requester.
        """
        run = self._journal.get_run(run_id)
        if run.kind != "revoke" or run.status != "pending-approval":
            raise PermanentError(f"run {run_id} is {run.status}: nothing to approve", code="NotPendingApproval",
                                 status=409)
        if approver.object_id.strip().lower() == run.caller_oid.strip().lower():
            raise AuthError(403, "a revocation must be approved by someone other than its requester")
        approved = {"objectId": approver.object_id, "name": approver.name, "at": _iso(self._clock.now())}
        run = self._journal.update_run(run, status="running", params={**run.params, "approvedBy": approved})
        self._log.info("run-approved", run=run_id, approver_oid=approver.object_id)
        return self._drive(run, budget)

    def restore(self, request: RestoreRequest, caller: Principal, *, budget: timedelta = timedelta(0)) -> RunView:
        """Records a restoration of revocation ``request.run_id`` and drives it within ``budget``.

        A revocation is restored at most once: a second request returns the first restore run
        (``duplicate``) and changes nothing; a new restore is allowed only if the previous one
        failed. Raises NotFoundError, PermanentError (409) when the run is not a finished
        revocation, ValidationError for an empty reason or ticket.
        """
        if not request.reason.strip():
            raise ValidationError("a reason is required", field="reason")
        if not request.ticket.strip():
            raise ValidationError("a ticket is required", field="ticket")
        revocation = self._journal.get_run(request.run_id)
        if revocation.kind != "revoke":
            raise PermanentError(f"run {request.run_id} is a {revocation.kind}, not a revocation",
                                 code="NotARevocation", status=409)
        if not revocation.finished or revocation.status == "canceled":
            raise PermanentError(f"revocation {request.run_id} is {revocation.status}: only a finished "
                                 "revocation can be restored", code="RevocationNotFinished", status=409)
        existing = self._previous_restore(revocation)
        if existing is not None:
            return existing
        run = self._journal.create_run(
            kind="restore", key=revocation.key, caller_oid=caller.object_id, caller_name=caller.name,
            reason=request.reason, ticket=request.ticket,
            params={"revokeRun": revocation.run_id, "mode": revocation.params.get("mode", MODE_DISABLE)},
        )
        for _ in range(3):
            try:
                self._journal.update_run(revocation, result={**revocation.result, "restoredBy": run.run_id})
                break
            except ConflictError:
                revocation = self._journal.get_run(revocation.run_id)
                existing = self._previous_restore(revocation)
                if existing is not None:  # another request won: ours does nothing
                    self._journal.update_run(run, status="canceled", result={"duplicateOf": existing.run.run_id})
                    return existing
        else:
            raise TransientError(f"revocation {revocation.run_id} keeps changing; retry the restore")
        self._log.info("run-created", run=run.run_id, kind="restore", key=run.key, revoke_run=revocation.run_id,
                       caller_oid=caller.object_id)
        return self._drive(run, budget)

    def _previous_restore(self, revocation: Run) -> RunView | None:
        prior = revocation.result.get("restoredBy")
        if not prior:
            return None
        try:
            previous = self._journal.get_run(str(prior))
        except NotFoundError:
            return None
        if previous.status == "failed":
            return None
        return RunView(previous, self._journal.steps(previous.run_id), duplicate=True)

    def resume(self, run_id: str, *, budget: timedelta = timedelta(0)) -> RunView:
        """Continues a run where it stopped; a finished or ``pending-approval`` run is returned
        as it is. Raises NotFoundError."""
        run = self._journal.get_run(run_id)
        if run.status != "running":
            return RunView(run, self._journal.steps(run_id), waiting=self._waiting_of(run))
        return self._drive(run, budget)

    # ---- the driver ---------------------------------------------------------------------------
    def _new_owner(self, run: Run) -> str:
        with self._lock:
            self._drives += 1
            return f"{self._instance}-{self._drives}:{run.run_id}"

    def _drive(self, run: Run, budget: timedelta) -> RunView:
        structlog.contextvars.bind_contextvars(run=run.run_id)
        lease = self._journal.acquire_lease(_lease_key(run), owner=run.run_id, ttl=LEASE_TTL)
        if lease is None:
            self._log.info("run-waiting", run=run.run_id, reason="another run holds the key's lease")
            return RunView(run, self._journal.steps(run.run_id), waiting="lease")
        ctx = _Ctx(run=run, lease=lease, owner=self._new_owner(run), budget_end=self._clock.now() + budget)
        steps = self._steps[run.kind]
        try:
            for index, name in enumerate(STEPS):
                self._step(ctx, index, name, steps[name])
                try:
                    ctx.lease = self._journal.renew_lease(ctx.lease, LEASE_TTL)
                except ConflictError as err:
                    raise _Stop("lease") from err  # lost to another run: stop before the next step
            run = self._finish(ctx)
        except _Stop as stop:
            # The lease is kept: no other run on the key may act before this one finishes.
            self._hold(ctx, stop.waiting)
            self._log.info("run-paused", run=run.run_id, waiting=stop.waiting)
            current = self._journal.get_run(run.run_id)
            return RunView(current, self._journal.steps(run.run_id), waiting=stop.waiting)
        except _StepFailed as failed:
            run = self._fail(ctx, failed)
        self._release(ctx.lease)
        return RunView(run, self._journal.steps(run.run_id))

    def _release(self, lease: Lease) -> None:
        self._journal.release_lease(lease)

    def _hold(self, ctx: _Ctx, waiting: str) -> None:
        """Keeps the key's lease for a paused run: while verification is pending, until its
        deadline (plus one lease period for the last poll); otherwise as it is (it expires
        after LEASE_TTL if nobody resumes the run)."""
        if waiting != "verify" or ctx.hold_until is None:
            return
        ttl = max(ctx.hold_until - self._clock.now(), timedelta(0)) + LEASE_TTL
        try:
            ctx.lease = self._journal.renew_lease(ctx.lease, ttl)
        except ConflictError:
            # Lost meanwhile (expired and taken): the next resume queues behind the new holder.
            self._log.warning("lease-lost", run=ctx.run.run_id)

    def _call_hook(self, run_id: str, step: str, phase: str) -> None:
        if self._hook is not None:
            self._hook(run_id, step, phase)

    def _step(self, ctx: _Ctx, index: int, name: str, body: Callable[[_Ctx], JsonDict]) -> None:
        run_id = ctx.run.run_id
        claimed = self._journal.claim_step(run_id, index, name, owner=ctx.owner, stale_after=STEP_STALE_AFTER)
        if claimed is None:
            recorded = next((s for s in self._journal.steps(run_id) if s.index == index), None)
            if recorded is None or recorded.status == "running":
                raise _Stop("busy")  # another live instance runs this step now
            if recorded.status == "failed":
                raise _StepFailed(name, recorded.error or "failed")
            ctx.results[name] = recorded.result
            if recorded.finished is not None:
                ctx.finished[name] = recorded.finished
            return
        self._call_hook(run_id, name, "claimed")
        try:
            result = _fits(name, body(ctx))
        except _HandBack as back:
            self._complete(claimed, status="pending", result=back.progress)
            raise _Stop(name) from None
        except TransientError as err:
            self._log.warning("step-retry-later", run=run_id, step=name, error=str(err))
            self._complete(claimed, status="pending", result={}, error=str(err))
            raise _Stop(name) from err
        except PermanentError as err:
            self._log.error("step-failed", run=run_id, step=name, error=str(err))
            self._complete(claimed, status="failed", result={}, error=str(err))
            raise _StepFailed(name, str(err)) from err
        self._call_hook(run_id, name, "acted")
        done = self._complete(claimed, status="succeeded", result=result)
        self._log.info("step-succeeded", run=run_id, step=name, attempt=claimed.attempt)
        ctx.results[name] = done.result
        if done.finished is not None:
            ctx.finished[name] = done.finished
        self._call_hook(run_id, name, "recorded")

    def _complete(self, step: Step, *, status: str, result: JsonDict, error: str | None = None) -> Step:
        try:
            return self._journal.complete_step(step, status=status, result=result, error=error)
        except ConflictError as err:
            # Our claim was deemed stale and another instance took the step over: its outcome counts.
            self._log.warning("step-taken-over", run=step.run_id, step=step.name)
            raise _Stop("busy") from err

    def _final_status(self, results: Mapping[str, JsonDict]) -> str:
        act = results.get("act", {})
        verify = results.get("verify", {})
        done = len(act.get("done", []))
        failed = len(act.get("failed", {})) + len(act.get("untagged", []))
        if failed and not done:
            return "failed"
        if failed or verify.get("unconfirmed") or act.get("held"):
            return "partially-succeeded"
        return "succeeded"

    def _update_run(self, run_id: str, *, status: str, result: Mapping[str, Any]) -> Run:
        for _ in range(5):
            run = self._journal.get_run(run_id)
            try:
                return self._journal.update_run(run, status=status, result={**run.result, **result})
            except ConflictError:
                continue
        raise TransientError(f"run {run_id} keeps changing; its outcome is recorded on its steps")

    def _finish(self, ctx: _Ctx) -> Run:
        status = str(ctx.results.get("publish", {}).get("status") or self._final_status(ctx.results))
        act = ctx.results.get("act", {})
        verify = ctx.results.get("verify", {})
        summary = {
            "done": len(act.get("done", [])),
            **_sampled("failed", act.get("failed", {})),
            "confirmed": len(verify.get("confirmed", {})),
            **_sampled("unconfirmed", list(verify.get("unconfirmed", {}))),
            **_sampled("unverifiable", verify.get("unverifiable", [])),
            **_sampled("held", act.get("held", {})),
        }
        run = self._update_run(ctx.run.run_id, status=status, result=summary)
        self._log.info("run-finished", run=run.run_id, kind=run.kind, status=status, **{
            k: v for k, v in summary.items() if k in ("done", "confirmed")})
        return run

    def _fail(self, ctx: _Ctx, failed: _StepFailed) -> Run:
        run = self._update_run(ctx.run.run_id, status="failed",
                               result={"failedStep": failed.step, "error": failed.error})
        kind = "RevocationFailed" if run.kind == "revoke" else "RestoreFailed"
        self._notifier.publish([Outcome(kind, run.key, {
            "run": run.run_id, "key": run.key, "step": failed.step, "error": failed.error,
            "reason": run.reason, "ticket": run.ticket, "caller": run.caller_oid}, "incident",
            event_id=f"{run.run_id}.{kind}")])
        self._log.error("run-failed", run=run.run_id, step=failed.step, error=failed.error)
        return run

    # ---- revoke steps -------------------------------------------------------------------------
    def _key_of(self, ctx: _Ctx) -> KeyRef:
        return parse_key_uri(ctx.run.key, allowed_vaults=self._settings.vaults)

    def _revoke_resolve(self, ctx: _Ctx) -> JsonDict:
        key = self._key_of(ctx)
        radius = self._blast_radius(key, str(ctx.run.params["mode"]))
        return {k: radius[k] for k in ("key", "mode", "bindings", "collateral", "unresolvedIdentities", "summary")}

    def _revoke_snapshot(self, ctx: _Ctx) -> JsonDict:
        key = self._key_of(ctx)
        if ctx.run.params["mode"] == MODE_DISABLE:
            return self._version_state(key)
        return self._access_state(key, ctx.results["resolve"])

    def _revoke_act(self, ctx: _Ctx) -> JsonDict:
        if ctx.run.params["mode"] == MODE_DISABLE:
            return self._disable_versions(ctx)
        return self._remove_access(ctx)

    def _with_retries(self, what: str, action: Callable[[], str]) -> str:
        """Runs one item with bounded retries on transient errors; a permanent error is raised."""
        for attempt in range(ITEM_ATTEMPTS):
            try:
                return action()
            except TransientError as err:
                if attempt + 1 == ITEM_ATTEMPTS:
                    raise
                wait = err.retry_after if err.retry_after else ITEM_BACKOFF_S * 2**attempt
                self._log.info("item-retry", item=what, attempt=attempt + 1, wait_s=wait, error=str(err))
                self._clock.sleep(wait)
        raise AssertionError("unreachable")

    def _parallel(self, items: Sequence[str], one: Callable[[str], str]) -> tuple[dict[str, str], dict[str, str]]:
        """Runs ``one`` per item with bounded concurrency: (item -> outcome, item -> permanent error).

        A transient error that outlasts the retries is raised (after every item ran), so the
        step is handed back and repeated: items already done are then skipped.
        """
        outcomes: dict[str, str] = {}
        failed: dict[str, str] = {}
        transient: list[TransientError] = []

        def run(item: str) -> None:
            try:
                outcomes[item] = self._with_retries(item, lambda: one(item))
            except TransientError as err:
                transient.append(err)
            except PermanentError as err:
                failed[item] = str(err)

        workers = max(1, min(self._settings.max_concurrency, len(items)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keysteward-runbook") as pool:
            for future in [pool.submit(run, item) for item in items]:
                future.result()  # re-raises anything unexpected
        if transient:
            raise TransientError(f"{len(transient)} item(s) failed transiently, e.g. {transient[0]}")
        return outcomes, failed

    def _disable_versions(self, ctx: _Ctx) -> JsonDict:
        key = self._key_of(ctx).versionless()
        run_id = ctx.run.run_id
        wanted: list[str] = list(ctx.results["snapshot"].get("enabled", []))
        current = {v.version: v for v in self._keys.versions(key)}
        stamp = _iso(self._clock.now())

        def disable(version: str) -> str:
            kv: KeyVersion | None = current.get(version)
            if kv is None:
                return "missing"
            if not kv.enabled:
                return "done" if kv.tags.get(REVOKED_BY_TAG) == run_id else "already-disabled"
            tags = {**kv.tags, REVOKED_BY_TAG: run_id, REVOKED_AT_TAG: stamp}
            if len(tags) > MAX_VERSION_TAGS:
                # Revocation comes first: disable it anyway, and say loudly that it is untagged.
                self._keys.set_enabled(kv.ref, enabled=False)
                return "untagged"
            self._keys.set_enabled(kv.ref, enabled=False, tags=tags)
            return "done"

        outcomes, failed = self._parallel(wanted, disable)
        return {
            "done": sorted(v for v, o in outcomes.items() if o == "done"),
            "alreadyDisabled": sorted(v for v, o in outcomes.items() if o == "already-disabled"),
            "missing": sorted(v for v, o in outcomes.items() if o == "missing"),
            "untagged": sorted(v for v, o in outcomes.items() if o == "untagged"),
            "failed": failed,
        }

    def _vault_of(self, snapshot: Mapping[str, Any]) -> VaultRef:
        raw = snapshot["vault"]
        return VaultRef(url=str(raw["url"]), subscription=str(raw["subscription"]),
                        resource_group=str(raw["resourceGroup"]), name=str(raw["name"]), rbac=False)

    def _remove_access(self, ctx: _Ctx) -> JsonDict:
        snapshot = ctx.results["snapshot"]
        vault = self._vault_of(snapshot)
        recorded = [AccessEntry.from_dict(e) for e in snapshot.get("entries", [])]
        current = self._vaults.entries(vault)
        # What is removed is the entry as it is now (the whole entry must go); an entry already
        # gone was removed by an earlier attempt of this step, and is restored as snapshotted.
        removed: list[AccessEntry] = []
        to_remove: list[AccessEntry] = []
        for entry in recorded:
            now = next((c for c in current if c.same_principal(entry)), None)
            if now is None:
                removed.append(entry)
            else:
                removed.append(now)
                to_remove.append(now)
        def remove() -> str:
            self._vaults.remove(vault, to_remove)
            return "done"

        self._with_retries(f"remove access on {vault.name}", remove)
        return {
            "done": [e.object_id for e in removed],
            "removed": [e.as_dict() for e in removed],
            "vault": snapshot["vault"],
            "failed": {},
        }

    # ---- restore steps ------------------------------------------------------------------------
    def _revocation(self, ctx: _Ctx) -> Run:
        return self._journal.get_run(str(ctx.run.params["revokeRun"]))

    def _restore_resolve(self, ctx: _Ctx) -> JsonDict:
        revocation = self._revocation(ctx)
        owner = revocation.result.get("restoredBy")
        if owner not in (None, ctx.run.run_id):
            raise PermanentError(f"revocation {revocation.run_id} is restored by run {owner}", code="AlreadyRestored",
                                 status=409)
        steps = {s.name: s for s in self._journal.steps(revocation.run_id)}
        act = steps.get("act")
        resolve = steps.get("resolve")
        acted = act.result if act is not None and act.status == "succeeded" else {}
        radius = resolve.result if resolve is not None and resolve.status == "succeeded" else {}
        mode = str(revocation.params.get("mode", MODE_DISABLE))
        return {
            "revokeRun": revocation.run_id,
            "mode": mode,
            "versions": acted.get("done", []) + acted.get("untagged", []) if mode == MODE_DISABLE else [],
            "untagged": acted.get("untagged", []) if mode == MODE_DISABLE else [],
            "entries": ([*acted.get("removed", []), *revocation.result.get("inheritedEntries", [])]
                        if mode == MODE_REMOVE_ACCESS else []),
            "vault": acted.get("vault"),
            "bindings": radius.get("bindings", []),
            "collateral": radius.get("collateral", []),
        }

    def _restore_snapshot(self, ctx: _Ctx) -> JsonDict:
        resolved = ctx.results["resolve"]
        if resolved["mode"] == MODE_DISABLE:
            key = self._key_of(ctx).versionless()
            wanted = set(resolved["versions"])
            state = {v.version: {"enabled": v.enabled, "revokedBy": v.tags.get(REVOKED_BY_TAG)}
                     for v in self._keys.versions(key) if v.version in wanted}
            return {"versions": state}
        if not resolved.get("vault"):
            return {"entries": []}
        vault = self._vault_of(resolved)
        current = self._vaults.entries(vault)
        wanted_entries = [AccessEntry.from_dict(e) for e in resolved["entries"]]
        present = [c.as_dict() for c in current if any(c.same_principal(w) for w in wanted_entries)]
        return {"entries": present}

    def _restore_act(self, ctx: _Ctx) -> JsonDict:
        resolved = ctx.results["resolve"]
        if resolved["mode"] == MODE_DISABLE:
            return self._enable_versions(ctx, resolved)
        if not resolved.get("vault"):
            return {"done": [], "added": [], "failed": {}}
        vault = self._vault_of(resolved)
        held = self._held_elsewhere(vault.url, str(resolved["revokeRun"]))
        recorded = [AccessEntry.from_dict(e) for e in resolved["entries"]]
        kept = {e.object_id: held[e.object_id.lower()] for e in recorded if e.object_id.lower() in held}
        wanted = [e for e in recorded if e.object_id not in kept]
        current = self._vaults.entries(vault)
        missing = [w for w in wanted if not any(c.same_principal(w) and c.covers(w) for c in current)]
        def add() -> str:
            self._vaults.add(vault, missing)
            return "done"

        if kept:
            # Hand the entries to the revocations that hold them, before re-adding anything:
            # their own restore re-adds them (they never saw them, having found them removed).
            for holder in sorted(set(kept.values())):
                self._hand_over(holder, [e.as_dict() for e in recorded if kept.get(e.object_id) == holder])
            self._log.warning("restore-held", run=ctx.run.run_id, held=kept)
        if missing:
            self._with_retries(f"re-add access on {vault.name}", add)
        return {"done": [e.object_id for e in wanted], "added": [e.as_dict() for e in missing], "failed": {},
                "held": kept}

    def _hand_over(self, revocation_id: str, entries: list[JsonDict]) -> None:
        """Records ``entries`` on revocation ``revocation_id`` (``result.inheritedEntries``, merged
        by object id), so that restoring it re-adds them too."""
        for _ in range(5):
            run = self._journal.get_run(revocation_id)
            known = {str(e.get("objectId", "")).lower() for e in run.result.get("inheritedEntries", [])}
            new = [e for e in entries if str(e.get("objectId", "")).lower() not in known]
            if not new:
                return
            try:
                self._journal.update_run(run, result={
                    **run.result, "inheritedEntries": [*run.result.get("inheritedEntries", []), *new]})
                return
            except ConflictError:
                continue
        raise TransientError(f"revocation {revocation_id} keeps changing; the restore is retried")

    def _held_elsewhere(self, vault_url: str, revocation_id: str) -> dict[str, str]:
        """Identity (lower-case object id) -> the run id of another remove-access revocation on a
        key of the same vault that is in force (running, or finished and not restored) and takes
        that identity's access away. Access policies are per identity and vault, not per key: giving
        such an identity its entry back would quietly undo that other revocation."""
        held: dict[str, str] = {}
        runs = self._journal.list_runs(statuses={"succeeded", "partially-succeeded", "running"},
                                       limit=HELD_SCAN_LIMIT)
        here = norm_vault_url(vault_url)
        for run in runs:
            if (run.kind != "revoke" or run.run_id == revocation_id
                    or run.params.get("mode") != MODE_REMOVE_ACCESS
                    or norm_vault_url(parse_key_uri(run.key, allowed_vaults=None).vault_url) != here):
                continue
            restored_by = run.result.get("restoredBy")
            if restored_by and self._journal.get_run(str(restored_by)).status != "failed":
                continue
            resolve = next((s for s in self._journal.steps(run.run_id) if s.name == "resolve"), None)
            if resolve is None or resolve.status != "succeeded":
                continue
            for principal in _targeted_principals(resolve.result):
                held.setdefault(principal, run.run_id)
        return held

    def _enable_versions(self, ctx: _Ctx, resolved: Mapping[str, Any]) -> JsonDict:
        key = self._key_of(ctx).versionless()
        revoke_run = str(resolved["revokeRun"])
        current = {v.version: v for v in self._keys.versions(key)}

        untagged = set(resolved.get("untagged", []))

        def enable(version: str) -> str:
            kv = current.get(version)
            if kv is None:
                return "missing"
            mark = kv.tags.get(REVOKED_BY_TAG)
            if mark is None and kv.enabled:
                return "done"  # already re-enabled (an earlier attempt of this step)
            ours = mark == revoke_run or (mark is None and version in untagged)
            if not ours:
                return "not-ours"  # disabled since by someone else, or marked by another revocation
            tags = {k: v for k, v in kv.tags.items() if k not in (REVOKED_BY_TAG, REVOKED_AT_TAG)}
            self._keys.set_enabled(kv.ref, enabled=True, tags=tags)
            return "done"

        outcomes, failed = self._parallel(list(resolved["versions"]), enable)
        return {
            "done": sorted(v for v, o in outcomes.items() if o == "done"),
            "notOurs": sorted(v for v, o in outcomes.items() if o == "not-ours"),
            "missing": sorted(v for v, o in outcomes.items() if o == "missing"),
            "failed": failed,
        }

    # ---- verify and publish (both kinds) --------------------------------------------------------
    def _expected(self, ctx: _Ctx) -> list[JsonDict]:
        resolved = ctx.results["resolve"]
        chosen = [b for b in resolved.get("bindings", []) if b.get("affected") == "yes"]
        expected = chosen + list(resolved.get("collateral", []))
        held = {p.lower() for p in ctx.results.get("act", {}).get("held", {})}
        return [d for d in expected if str(d.get("principalId") or "").lower() not in held]

    def _verify(self, ctx: _Ctx) -> JsonDict:
        want = Health.REVOKED if ctx.run.kind == "revoke" else Health.OK
        acted_at = ctx.finished.get("act") or self._clock.now()
        deadline = acted_at + self._settings.verify_deadline
        ctx.hold_until = deadline
        previous = self._journal.steps(ctx.run.run_id)
        progress = next((s.result for s in previous if s.name == "verify"), {})
        confirmed: dict[str, str] = dict(progress.get("confirmed", {}))
        gone: list[str] = list(progress.get("gone", []))
        unverifiable: list[str] = []
        pending: dict[str, Binding | None] = {}
        last: dict[str, str] = {}
        services = {str(d["resourceId"]): ServiceType(d["service"]) for d in self._expected(ctx)}
        for rid, service in services.items():
            target = self._targets.get(service)
            if target is None or not _reports_key_status(target):
                unverifiable.append(rid)
            elif rid not in confirmed and rid not in gone:
                pending[rid] = None
        while True:
            for rid, seen in self._observe(sorted(pending), services).items():
                if seen is None:
                    gone.append(rid)
                    del pending[rid]
                    continue
                health, text = seen
                last[rid] = text
                if health == want:
                    confirmed[rid] = _iso(self._clock.now())
                    del pending[rid]
            ctx.lease = self._journal.renew_lease(ctx.lease, LEASE_TTL)
            now = self._clock.now()
            result = {"expected": want, "deadline": _iso(deadline), "confirmed": confirmed, "gone": gone,
                      "unverifiable": unverifiable, "unconfirmed": {r: last.get(r, "") for r in pending}}
            if not pending or now >= deadline:
                return result
            wait = min(self._interval, deadline - now)
            if now + wait > ctx.budget_end:
                raise _HandBack({**result, "unconfirmed": {}, "pending": sorted(pending)})
            self._clock.sleep(wait.total_seconds())

    def _observe(self, ids: Sequence[str],
                 services: Mapping[str, ServiceType]) -> dict[str, tuple[str, str] | None]:
        """One read of each resource, with bounded concurrency: id -> (health, what the service
        says), or None when the resource is gone. A resource that cannot be read now (transient
        error) is left out: it is read again at the next poll."""
        seen: dict[str, tuple[str, str] | None] = {}

        def read(rid: str) -> None:
            target = self._targets[services[rid]]
            try:
                binding = target.get_binding(rid)
            except TransientError as err:
                self._log.info("verify-read-failed", resource_id=rid, error=str(err))
                return
            if binding is None:
                seen[rid] = None
            else:
                health = target.health(binding)
                seen[rid] = (health, binding.health or binding.state or health)

        workers = max(1, min(self._settings.max_concurrency, len(ids)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keysteward-verify") as pool:
            for future in [pool.submit(read, rid) for rid in ids]:
                future.result()
        return seen

    def _publish(self, ctx: _Ctx) -> JsonDict:
        status = self._final_status(ctx.results)
        act = ctx.results.get("act", {})
        verify = ctx.results.get("verify", {})
        run = ctx.run
        if run.kind == "revoke":
            kind, severity = "KeyRevoked", "incident"
        else:
            kind, severity = "KeyRestored", "warning"
        data = {
            "run": run.run_id, "key": run.key, "mode": run.params.get("mode"), "status": status,
            "reason": run.reason, "ticket": run.ticket, "caller": run.caller_oid,
            "emergency": bool(run.params.get("emergency")), "revokeRun": run.params.get("revokeRun"),
            **_sampled("changed", act.get("done", [])), **_sampled("failed", act.get("failed", {})),
            **_sampled("untagged", act.get("untagged", [])), **_sampled("confirmed", list(verify.get("confirmed", {}))),
            **_sampled("unconfirmed", list(verify.get("unconfirmed", {}))),
            **_sampled("unverifiable", verify.get("unverifiable", [])),
            **_sampled("held", act.get("held", {})),
        }
        self._notifier.publish([Outcome(kind, run.key, data, severity, event_id=f"{run.run_id}.{kind}")])
        return {"published": kind, "status": status}


# ---- composition ----------------------------------------------------------------------------
_CACHE: weakref.WeakKeyDictionary[Keysteward, Runbooks] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def runbooks_for(app: Keysteward, *, hook: StepHook | None = None,
                 verify_interval: timedelta = VERIFY_INTERVAL) -> Runbooks:
    """The runbooks over ``app``'s dependencies (one per app, unless a hook or interval is given).

    Raises ConfigError when ``app`` was built without a client factory (no way to reach the
    vaults' access policies).
    """
    plain = hook is None and verify_interval == VERIFY_INTERVAL
    if plain:
        with _CACHE_LOCK:
            cached = _CACHE.get(app)
        if cached is not None:
            return cached
    if app.clients is None:
        raise ConfigError("the runbooks need the app's client factory (build the app with shared.app.build)")
    made = Runbooks(
        settings=app.settings, clock=app.clock, keys=app.keys, targets=app.targets,
        inventory=app.inventory, notifier=app.notifier, journal=app.journal,
        vault_access=VaultAccess(app.clients, subscriptions=app.settings.subscriptions),
        hook=hook, verify_interval=verify_interval,
    )
    if plain:
        with _CACHE_LOCK:
            made = _CACHE.setdefault(app, made)
    return made


@dataclass
class ResumeReport:
    """What one resume sweep did: the runs it drove, and the runs it could not (with the error).
    The caller decides what a failure means (the timer fails its invocation so it is retried)."""

    views: list[RunView] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def resume_unfinished(app: Keysteward, *, budget: timedelta = timedelta(seconds=120),
                      runbooks: Runbooks | None = None) -> ResumeReport:
    """Resumes every ``running`` run, oldest first, sharing ``budget`` (of the app's clock)
    among them: the reconcile timer calls this. Runs waiting for a key's lease are retried
    here too, so queued revocations of one key run one after the other.

    A run that fails to resume (Transient/PermanentError) does not stop the others; each such
    error is logged and returned in :attr:`ResumeReport.errors`.
    """
    books = runbooks or runbooks_for(app)
    log = structlog.get_logger("keysteward.runbooks")
    report = ResumeReport()
    end = app.clock.now() + budget
    for run in app.journal.list_unfinished():
        left = max(end - app.clock.now(), timedelta(0))
        try:
            report.views.append(books.resume(run.run_id, budget=left))
        except (TransientError, PermanentError) as err:
            log.error("resume-failed", run=run.run_id, error=str(err), exc_info=True)
            report.errors[run.run_id] = str(err)
    return report


__all__ = [
    "MODES",
    "MODE_DISABLE",
    "MODE_REMOVE_ACCESS",
    "REVOKED_AT_TAG",
    "REVOKED_BY_TAG",
    "STEPS",
    "RestoreRequest",
    "ResumeReport",
    "RevokeRequest",
    "RunView",
    "Runbooks",
    "StepHook",
    "resume_unfinished",
    "runbooks_for",
]
