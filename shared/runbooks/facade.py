"""The public face of the runbooks: plan (dry run), revoke, approve, restore, resume, and
reading runs. It checks requests, writes the revocation record, and hands runs to the engine.

**Time**. A run never holds a caller for its waits. Each entry point takes a ``budget``: the
acting steps always run to completion (seconds), then ``verify`` polls only while the budget
lasts and hands the step back; the next ``resume`` (CLI, or the timer) continues. Waits go
through the injected clock.

**Concurrency**. One lease per key (the versionless key URI), owned by the run, held from its
first step to its end, across pauses; a run that finds the lease taken stays ``running`` with
``waiting="lease"`` and the next resume starts it.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from shared.auth import AuthError, Principal, same_object_id
from shared.errors import NotFoundError, PermanentError, ValidationError
from shared.journal import Run
from shared.keyuri import parse_key_uri
from shared.model import KeyRef
from shared.runbooks.deps import Deps
from shared.runbooks.engine import Engine, retry_on_conflict
from shared.runbooks.model import (
    HELD_SCAN_LIMIT,
    MODES,
    VERIFY_INTERVAL,
    JsonDict,
    Mode,
    RestoreRequest,
    RevokeRequest,
    RunKind,
    RunStatus,
    RunView,
    StepHook,
    StepName,
    Waiting,
    iso,
)
from shared.runbooks.restore import RestoreSteps
from shared.runbooks.revoke import RevokeSteps, whole_key
from shared.runbooks.verify import Verifier

log = structlog.get_logger("keysteward.runbooks")


class Runbooks:
    """Revoke, restore, approve, resume and read runs over injected dependencies."""

    def __init__(self, deps: Deps, *, hook: StepHook | None = None,
                 verify_interval: timedelta = VERIFY_INTERVAL) -> None:
        """``deps`` as the composition root built them; ``hook`` and ``verify_interval`` for tests
        (a hook interrupts a run between steps; a shorter interval polls faster)."""
        self._d = deps
        journal, clock, notifier = deps.journal, deps.clock, deps.notifier
        self._journal = journal
        self._revoke = RevokeSteps(self._d)
        restore = RestoreSteps(self._d)
        verifier = Verifier(self._d, interval=verify_interval)
        self._engine = Engine(
            journal=journal, clock=clock, notifier=notifier, hook=hook, on_finished=self._on_finished,
            steps={
                RunKind.REVOKE: {StepName.RESOLVE: self._revoke.resolve, StepName.SNAPSHOT: self._revoke.snapshot,
                                 StepName.ACT: self._revoke.act, StepName.VERIFY: verifier.verify,
                                 StepName.PUBLISH: verifier.publish},
                RunKind.RESTORE: {StepName.RESOLVE: restore.resolve, StepName.SNAPSHOT: restore.snapshot,
                                  StepName.ACT: restore.act, StepName.VERIFY: verifier.verify,
                                  StepName.PUBLISH: verifier.publish},
            },
        )

    @property
    def deps(self) -> Deps:
        return self._d

    # ---- reading ------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunView:
        """The run and its steps; raises NotFoundError."""
        run = self._journal.get_run(run_id)
        return RunView(run, self._journal.steps(run_id), waiting=_waiting_of(run))

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

    # ---- checks -------------------------------------------------------------------------------
    def _needs_approval(self, key: KeyRef, mode: Mode, emergency: bool) -> bool:
        """The two-person rule judges the effect: a whole-key request, or a per-version request
        that would leave the key no enabled version (counting the versions other per-version
        revocations under way are about to disable)."""
        if not self._d.settings.two_person_rule or emergency:
            return False
        if whole_key(key, mode):
            return True
        base = key.versionless()
        enabled = {v.version for v in self._d.keys.versions(base) if v.enabled}
        prefix = base.uri.lower() + "/"
        in_flight = {r.key.rsplit("/", 1)[-1] for r in self._journal.list_runs(
            statuses={RunStatus.RUNNING, RunStatus.PENDING_APPROVAL}, limit=HELD_SCAN_LIMIT)
            if r.kind == RunKind.REVOKE and r.key.lower().startswith(prefix)}
        return not (enabled - in_flight - {key.version})

    def plan(self, key: KeyRef, mode: str) -> JsonDict:
        """The dry run: the blast radius and what a revocation would change. Reads only.

        Raises ValidationError for a key outside KEYSTEWARD_VAULTS or an unknown mode,
        NotFoundError for a missing key or version, PermanentError (409) for ``remove-access``
        on an RBAC vault.
        """
        key = self._d.check_key(key)
        chosen = _mode(mode)
        radius = self._revoke.radius(key, chosen)
        changes: JsonDict
        if chosen == Mode.DISABLE:
            state = self._revoke.version_state(key)
            changes = {"disable": list(state.enabled), "alreadyDisabled": list(state.already_disabled)}
        else:
            access = self._revoke.access_state(key, radius)
            changes = {"vault": access.vault.to_journal(), "removeAccess": [e.as_dict() for e in access.entries]}
        evidence: JsonDict = {k: radius.summary[k] for k in ("usageEvidence", "unknownIdentities", "restorePoints")
                              if k in radius.summary}
        return {**radius.to_journal(), **evidence, "dryRun": True, "changes": changes,
                "needsApproval": self._needs_approval(key, chosen, emergency=False)}

    # ---- starting runs ------------------------------------------------------------------------
    def revoke(self, request: RevokeRequest, caller: Principal, *, budget: timedelta = timedelta(0)) -> RunView:
        """Records a revocation run and drives it within ``budget``.

        Raises ValidationError (bad key or mode, empty reason or ticket) and PermanentError
        (409: ``remove-access`` on an RBAC vault) before anything is recorded.
        """
        key = self._d.check_key(request.key)
        mode = _mode(request.mode)
        if not request.reason.strip():
            raise ValidationError("a reason is required", field="reason")
        if not request.ticket.strip():
            raise ValidationError("a ticket is required", field="ticket")
        if mode == Mode.REMOVE_ACCESS:
            self._revoke.vault_for(key)  # refuse an RBAC vault before recording anything
        pending = self._needs_approval(key, mode, request.emergency)
        run = self._journal.create_run(
            kind=RunKind.REVOKE, key=key.uri, caller_oid=caller.object_id, caller_name=caller.name,
            reason=request.reason, ticket=request.ticket,
            params={"mode": str(mode), "emergency": request.emergency, "needsApproval": pending},
            status=RunStatus.PENDING_APPROVAL if pending else RunStatus.RUNNING,
        )
        log.info("run-created", run=run.run_id, kind="revoke", key=key.uri, mode=str(mode),
                 caller_oid=caller.object_id, emergency=request.emergency, status=run.status)
        if request.emergency:
            log.warning("emergency-revocation", run=run.run_id, key=key.uri, caller_oid=caller.object_id)
        if pending:
            return RunView(run, [], waiting=Waiting.APPROVAL)
        return self._drive(run, budget)

    def approve(self, run_id: str, approver: Principal, *, budget: timedelta = timedelta(0)) -> RunView:
        """The second person's approval of a ``pending-approval`` revocation; starts it.

        Raises NotFoundError, PermanentError (409) when the run does not wait for approval,
        AuthError (403) when the approver is the requester (object ids compared as GUIDs).
        """
        run = self._journal.get_run(run_id)
        if run.kind != RunKind.REVOKE or run.status != RunStatus.PENDING_APPROVAL:
            raise PermanentError(f"run {run_id} is {run.status}: nothing to approve", code="NotPendingApproval",
                                 status=409)
        if same_object_id(approver.object_id, run.caller_oid):
            raise AuthError(403, "a revocation must be approved by someone other than its requester")
        approved = {"objectId": approver.object_id, "name": approver.name, "at": iso(self._d.clock.now())}
        run = self._journal.update_run(run, status=RunStatus.RUNNING, params={**run.params, "approvedBy": approved})
        log.info("run-approved", run=run_id, approver_oid=approver.object_id)
        return self._drive(run, budget)

    def _key_holders(self, key: str, revocation_id: str) -> list[str]:
        """Other revocations in force on ``key``'s key (their run ids)."""
        base = parse_key_uri(key, allowed_vaults=None).versionless().uri
        return [r.run_id for r in self._journal.revocations(base) if r.run_id != revocation_id]

    def restore(self, request: RestoreRequest, caller: Principal, *, budget: timedelta = timedelta(0)) -> RunView:
        """Records a restoration of revocation ``request.run_id`` and drives it within ``budget``.

        A revocation is restored at most once: a second request returns the first restore run
        (``duplicate``) and changes nothing; a new restore is allowed only if the previous one
        failed. Raises NotFoundError, PermanentError (409) when the run is not a finished
        revocation or another revocation of the key is in force, ValidationError for an empty
        reason or ticket.
        """
        if not request.reason.strip():
            raise ValidationError("a reason is required", field="reason")
        if not request.ticket.strip():
            raise ValidationError("a ticket is required", field="ticket")
        revocation = self._journal.get_run(request.run_id)
        if revocation.kind != RunKind.REVOKE:
            raise PermanentError(f"run {request.run_id} is a {revocation.kind}, not a revocation",
                                 code="NotARevocation", status=409)
        if not revocation.finished or revocation.status == RunStatus.CANCELED:
            raise PermanentError(f"revocation {request.run_id} is {revocation.status}: only a finished "
                                 "revocation can be restored", code="RevocationNotFinished", status=409)
        existing = self._previous_restore(revocation)
        if existing is not None:
            return existing
        others = self._key_holders(revocation.key, revocation.run_id)
        if others:
            log.warning("restore-refused", revoke_run=revocation.run_id, held_by=others[0])
            raise PermanentError(f"restore refused: the key is also revoked by run {others[0]}, which is in force; "
                                 "restore that run first", code="KeyRevoked", status=409)
        run = self._journal.create_run(
            kind=RunKind.RESTORE, key=revocation.key, caller_oid=caller.object_id, caller_name=caller.name,
            reason=request.reason, ticket=request.ticket,
            params={"revokeRun": revocation.run_id, "mode": revocation.params.get("mode", Mode.DISABLE)},
        )

        def mark() -> RunView | None:
            current = self._journal.get_run(revocation.run_id)
            prior = self._previous_restore(current)
            if prior is not None:  # another request won: ours does nothing
                self._journal.update_run(run, status=RunStatus.CANCELED, result={"duplicateOf": prior.run.run_id})
                return prior
            self._journal.update_run(current, result={**current.result, "restoredBy": run.run_id})
            return None

        won = retry_on_conflict(mark, what=f"revocation {revocation.run_id}", attempts=3)
        if won is not None:
            return won
        self._mark_restoring(revocation, run.run_id)
        log.info("run-created", run=run.run_id, kind="restore", key=run.key, revoke_run=revocation.run_id,
                 caller_oid=caller.object_id)
        return self._drive(run, budget)

    def _mark_restoring(self, revocation: Run, restore_id: str) -> None:
        """Tells the hold to stand aside for this restore (the record stays until it succeeds)."""
        base = parse_key_uri(revocation.key, allowed_vaults=None).versionless().uri

        def attempt() -> None:
            for record in self._journal.revocations(base):
                if record.run_id == revocation.run_id:
                    self._journal.update_revocation(record, restoring=restore_id)

        retry_on_conflict(attempt, what=f"the record of revocation {revocation.run_id}")

    def _previous_restore(self, revocation: Run) -> RunView | None:
        prior = revocation.result.get("restoredBy")
        if not prior:
            return None
        try:
            previous = self._journal.get_run(str(prior))
        except NotFoundError:
            return None
        if previous.status == RunStatus.FAILED:
            return None
        return RunView(previous, self._journal.steps(previous.run_id), duplicate=True)

    def resume(self, run_id: str, *, budget: timedelta = timedelta(0)) -> RunView:
        """Continues a run where it stopped; a finished or ``pending-approval`` run is returned
        as it is. Raises NotFoundError."""
        run = self._journal.get_run(run_id)
        if run.status != RunStatus.RUNNING:
            return RunView(run, self._journal.steps(run_id), waiting=_waiting_of(run))
        return self._drive(run, budget)

    # ---- the record and the engine ----------------------------------------------------------------
    def _drive(self, run: Run, budget: timedelta) -> RunView:
        if run.kind == RunKind.REVOKE:
            key = parse_key_uri(run.key, allowed_vaults=None)
            mode = Mode(run.params.get("mode", Mode.DISABLE))
            if whole_key(key, mode):
                # The first act of a revoke, before the lease, before any change: idempotent.
                self._journal.put_revocation(key=key.versionless().uri, run_id=run.run_id, mode=str(mode))
        return self._engine.drive(run, budget)

    def _on_finished(self, run: Run) -> None:
        """A restore that finished (not failed) ends its revocation's record."""
        if run.kind != RunKind.RESTORE or run.status == RunStatus.FAILED:
            return
        base = parse_key_uri(run.key, allowed_vaults=None).versionless().uri
        revoke_run = str(run.params["revokeRun"])
        self._journal.end_revocation(key=base, run_id=revoke_run)
        log.info("revocation-ended", run=revoke_run, restore_run=run.run_id, key=base)


def _mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValidationError(f"mode must be one of {', '.join(MODES)}", field="mode")
    return Mode(mode)


def _waiting_of(run: Run) -> Waiting | None:
    return Waiting.APPROVAL if run.status == RunStatus.PENDING_APPROVAL else None


__all__ = ["Runbooks"]
