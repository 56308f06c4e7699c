"""The restore steps: resolve (what the revocation took, from its own steps), snapshot (the
state now), act (re-enable exactly the versions it disabled, re-add exactly the entries it
removed, put its rotation policy back). Versions the hold disabled during the revocation are
re-enabled too, and listed as such (``heldVersions``).

Access policies belong to an identity in a vault, not to a key: a restore keeps the entries
that another remove-access revocation in force still targets, and hands them to that
revocation (``inheritedEntries``), whose own restore re-adds them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import structlog

from shared.errors import PermanentError
from shared.journal import Run
from shared.keyuri import norm_vault_url, parse_key_uri
from shared.runbooks.deps import Deps, parallel, with_retries
from shared.runbooks.engine import Ctx, retry_on_conflict
from shared.runbooks.model import HELD_SCAN_LIMIT, JsonDict, Mode, RunKind, RunStatus, StepName, StepStatus
from shared.runbooks.results import Acted, Radius, RestorePlan, RestoreState, VersionMark
from shared.tags import HELD_TAG, REVOKED_AT_TAG, REVOKED_BY_TAG
from shared.vaultaccess import AccessEntry

log = structlog.get_logger("keysteward.runbooks")

HOLD_STEP = "hold"
"""Name of the steps the hold records on a revocation (index 5 and up), one per act."""


def held_versions(deps: Deps, revocation_id: str) -> tuple[str, ...]:
    """The versions the hold disabled for revocation ``revocation_id`` (from its hold steps)."""
    out: set[str] = set()
    for step in deps.journal.steps(revocation_id):
        if step.name == HOLD_STEP and step.status == StepStatus.SUCCEEDED:
            out.update(str(v) for v in step.result.get("disabled", []))
    return tuple(sorted(out))


class RestoreSteps:
    """resolve, snapshot and act of a restoration (verify and publish are shared)."""

    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def _revocation(self, ctx: Ctx) -> Run:
        return self._d.journal.get_run(str(ctx.run.params["revokeRun"]))

    def resolve(self, ctx: Ctx) -> RestorePlan:
        revocation = self._revocation(ctx)
        owner = revocation.result.get("restoredBy")
        if owner not in (None, ctx.run.run_id):
            raise PermanentError(f"revocation {revocation.run_id} is restored by run {owner}", code="AlreadyRestored",
                                 status=409)
        steps = {s.name: s for s in self._d.journal.steps(revocation.run_id) if s.index < len(StepName)}

        def recorded(name: StepName) -> JsonDict:
            step = steps.get(name)
            return step.result if step is not None and step.status == StepStatus.SUCCEEDED else {}

        acted = Acted.from_journal(recorded(StepName.ACT))
        radius = Radius.from_journal(recorded(StepName.RESOLVE)) if recorded(StepName.RESOLVE) else None
        snapshot = recorded(StepName.SNAPSHOT)
        mode = Mode(revocation.params.get("mode", Mode.DISABLE))
        inherited = tuple(AccessEntry.from_dict(e) for e in revocation.result.get("inheritedEntries", []))
        held = held_versions(self._d, revocation.run_id) if mode == Mode.DISABLE else ()
        policy = snapshot.get("rotationPolicy") if acted.policy == "paused" else None
        return RestorePlan(
            revoke_run=revocation.run_id, mode=mode,
            versions=tuple(dict.fromkeys([*acted.done, *(acted.untagged or ()), *held])) if mode == Mode.DISABLE
            else (),
            untagged=(acted.untagged or ()) if mode == Mode.DISABLE else (),
            entries=(*(acted.removed or ()), *inherited) if mode == Mode.REMOVE_ACCESS else (),
            vault=acted.vault,
            bindings=radius.bindings if radius else (), collateral=radius.collateral if radius else (),
            held_versions=held, rotation_policy=dict(policy) if isinstance(policy, Mapping) else None,
        )

    def snapshot(self, ctx: Ctx) -> RestoreState:
        plan = RestorePlan.from_journal(ctx.results[StepName.RESOLVE])
        if plan.mode == Mode.DISABLE:
            key = parse_key_uri(ctx.run.key, allowed_vaults=self._d.settings.vaults).versionless()
            wanted = set(plan.versions)
            return RestoreState(versions={v.version: VersionMark(v.enabled, v.tags.get(REVOKED_BY_TAG))
                                          for v in self._d.keys.versions(key) if v.version in wanted})
        if plan.vault is None:
            return RestoreState(entries=())
        current = self._d.vaults.entries(plan.vault.ref())
        return RestoreState(entries=tuple(c for c in current if any(c.same_principal(w) for w in plan.entries)))

    def act(self, ctx: Ctx) -> Acted:
        plan = RestorePlan.from_journal(ctx.results[StepName.RESOLVE])
        acted = self._enable_versions(ctx, plan) if plan.mode == Mode.DISABLE else self._re_add(plan)
        if plan.rotation_policy is not None:
            key = parse_key_uri(ctx.run.key, allowed_vaults=self._d.settings.vaults).versionless()
            policy = plan.rotation_policy

            def put_back() -> str:
                self._d.keys.set_rotation_policy_doc(key, policy)
                return "restored"

            with_retries(self._d.clock, f"restore the rotation policy of {key}", put_back)
            return dataclasses.replace(acted, policy="restored")
        return acted

    def _re_add(self, plan: RestorePlan) -> Acted:
        if plan.vault is None:
            return Acted(done=(), added=(), failed={})
        vault = plan.vault.ref()
        held = self._held_elsewhere(vault.url, plan.revoke_run)
        kept = {e.object_id: held[e.object_id.lower()] for e in plan.entries if e.object_id.lower() in held}
        wanted = [e for e in plan.entries if e.object_id not in kept]
        current = self._d.vaults.entries(vault)
        missing = [w for w in wanted if not any(c.same_principal(w) and c.covers(w) for c in current)]

        def add() -> str:
            self._d.vaults.add(vault, missing)
            return "done"

        if kept:
            # Hand the entries to the revocations that hold them, before re-adding anything:
            # their own restore re-adds them (they never saw them, having found them removed).
            for holder in sorted(set(kept.values())):
                self._hand_over(holder, [e.as_dict() for e in plan.entries if kept.get(e.object_id) == holder])
            log.warning("restore-held", revoke_run=plan.revoke_run, held=kept)
        if missing:
            with_retries(self._d.clock, f"re-add access on {vault.name}", add)
        return Acted(done=tuple(e.object_id for e in wanted), added=tuple(missing), failed={}, held=kept)

    def _hand_over(self, revocation_id: str, entries: list[JsonDict]) -> None:
        """Records ``entries`` on revocation ``revocation_id`` (``result.inheritedEntries``, merged
        by object id), so that restoring it re-adds them too."""
        journal = self._d.journal

        def attempt() -> None:
            run = journal.get_run(revocation_id)
            known = {str(e.get("objectId", "")).lower() for e in run.result.get("inheritedEntries", [])}
            new = [e for e in entries if str(e.get("objectId", "")).lower() not in known]
            if new:
                journal.update_run(run, result={
                    **run.result, "inheritedEntries": [*run.result.get("inheritedEntries", []), *new]})

        retry_on_conflict(attempt, what=f"revocation {revocation_id}")

    def _held_elsewhere(self, vault_url: str, revocation_id: str) -> dict[str, str]:
        """Identity (lower-case object id) -> the run id of another remove-access revocation on a
        key of the same vault that is in force (running, or finished and not restored) and takes
        that identity's access away. Access policies are per identity and vault, not per key: giving
        such an identity its entry back would quietly undo that other revocation."""
        held: dict[str, str] = {}
        journal = self._d.journal
        runs = journal.list_runs(statuses={RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.RUNNING},
                                 limit=HELD_SCAN_LIMIT)
        here = norm_vault_url(vault_url)
        for run in runs:
            if (run.kind != RunKind.REVOKE or run.run_id == revocation_id
                    or run.params.get("mode") != Mode.REMOVE_ACCESS
                    or norm_vault_url(parse_key_uri(run.key, allowed_vaults=None).vault_url) != here):
                continue
            restored_by = run.result.get("restoredBy")
            if restored_by and journal.get_run(str(restored_by)).status != RunStatus.FAILED:
                continue
            resolve = next((s for s in journal.steps(run.run_id) if s.name == StepName.RESOLVE), None)
            if resolve is None or resolve.status != StepStatus.SUCCEEDED:
                continue
            for principal in Radius.from_journal(resolve.result).targeted_principals():
                held.setdefault(principal, run.run_id)
        return held

    def _enable_versions(self, ctx: Ctx, plan: RestorePlan) -> Acted:
        key = parse_key_uri(ctx.run.key, allowed_vaults=self._d.settings.vaults).versionless()
        revoke_run = plan.revoke_run
        current = {v.version: v for v in self._d.keys.versions(key)}
        untagged = set(plan.untagged)

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
            tags = {k: v for k, v in kv.tags.items() if k not in (REVOKED_BY_TAG, REVOKED_AT_TAG, HELD_TAG)}
            self._d.keys.set_enabled(kv.ref, enabled=True, tags=tags)
            return "done"

        outcomes, failed = parallel(self._d, list(plan.versions), enable)

        def having(outcome: str) -> tuple[str, ...]:
            return tuple(sorted(v for v, o in outcomes.items() if o == outcome))

        return Acted(done=having("done"), not_ours=having("not-ours"), missing=having("missing"), failed=failed,
                     held_versions=plan.held_versions or None)


__all__ = ["HOLD_STEP", "RestoreSteps", "held_versions"]
