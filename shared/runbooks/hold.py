"""The hold: while a revocation is in force, what it took stays taken (level-triggered).

- ``disable``: any enabled version of the key (a version created outside keysteward, by Key
  Vault's rotation policy or in the portal, or re-enabled by hand) is disabled on sight, tagged
  :data:`~shared.tags.REVOKED_BY_TAG` = the revocation's run and
  :data:`~shared.tags.HELD_TAG`, so that its restore re-enables it and says so.
- ``remove-access``: an access policy entry re-added for an identity the revocation targets is
  removed again.

It runs on the KeyNewVersionCreated event (for that key) and on every reconcile timer pass (for
every revocation in force). Each act is recorded on the revocation's run as a ``hold`` step
(index 5 and up), so the run shows it. While the revocation's restore is under way the hold
stands aside; if that restore fails, the hold resumes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import structlog

from shared.errors import PermanentError, TransientError
from shared.journal import Revocation
from shared.keyuri import parse_key_uri
from shared.model import KeyRef
from shared.runbooks.deps import Deps
from shared.runbooks.model import STEP_STALE_AFTER, JsonDict, Mode, RunStatus, StepName, StepStatus, iso
from shared.runbooks.restore import HOLD_STEP
from shared.runbooks.results import Acted, Radius
from shared.runbooks.revoke import disable_tagged
from shared.tags import HELD_TAG, REVOKED_AT_TAG
from shared.vaultaccess import AccessEntry

log = structlog.get_logger("keysteward.runbooks")

# Claims of a hold step that lose a race for an index try the next one, at most this often.
_INDEX_ATTEMPTS = 5


@dataclass(frozen=True)
class HoldAct:
    """What one pass of the hold did for one revocation."""

    run_id: str
    key: str
    disabled: tuple[str, ...] = ()
    untagged: tuple[str, ...] = ()
    removed: tuple[AccessEntry, ...] = ()

    def to_journal(self) -> JsonDict:
        return {"key": self.key, "disabled": list(self.disabled), "untagged": list(self.untagged),
                "removed": [e.as_dict() for e in self.removed]}

    @property
    def empty(self) -> bool:
        return not (self.disabled or self.untagged or self.removed)


class Hold:
    """Enforces the revocations in force (see the module docstring)."""

    def __init__(self, deps: Deps) -> None:
        self._d = deps
        self._owner = f"hold-{secrets.token_hex(4)}"

    def enforce(self, key: KeyRef | None = None) -> list[HoldAct]:
        """One pass over the revocations in force on ``key`` (every key when ``None``); returns
        what was done. A revocation that cannot be enforced now raises TransientError after the
        others were tried (the trigger is retried)."""
        records = self._d.journal.revocations(None if key is None else key.versionless().uri)
        acts: list[HoldAct] = []
        errors: list[str] = []
        for record in records:
            try:
                act = self._enforce_one(record)
            except (TransientError, PermanentError) as err:
                log.error("hold-failed", run=record.run_id, key=record.key, error=str(err))  # noqa: TRY400 - raised below
                errors.append(f"{record.run_id}: {err}")
                continue
            if act is not None and not act.empty:
                acts.append(act)
        if errors:
            raise TransientError(f"the hold could not be enforced for {len(errors)} revocation(s): {errors[0]}")
        return acts

    def _standing_aside(self, record: Revocation) -> bool:
        if not record.restoring:
            return False
        status = self._d.journal.get_run(record.restoring).status
        return status not in (RunStatus.FAILED, RunStatus.CANCELED)

    def _enforce_one(self, record: Revocation) -> HoldAct | None:
        if self._standing_aside(record):
            return None
        key = parse_key_uri(record.key, allowed_vaults=None).versionless()
        act = self._disable(record, key) if record.mode == Mode.DISABLE else self._remove(record, key)
        if act is not None and not act.empty:
            self._record(act)
            log.warning("hold-enforced", run=record.run_id, key=key.uri, disabled=list(act.disabled),
                        untagged=list(act.untagged), removed=[e.object_id for e in act.removed])
        return act

    def _disable(self, record: Revocation, key: KeyRef) -> HoldAct:
        stamp = iso(self._d.clock.now())
        disabled: list[str] = []
        untagged: list[str] = []
        for version in self._d.keys.versions(key):
            if not version.enabled:
                continue
            outcome = disable_tagged(self._d, version, record.run_id, {REVOKED_AT_TAG: stamp, HELD_TAG: "true"})
            (disabled if outcome == "done" else untagged).append(version.version or "")
        return HoldAct(record.run_id, key.uri, disabled=tuple(disabled), untagged=tuple(untagged))

    def _remove(self, record: Revocation, key: KeyRef) -> HoldAct | None:
        steps = {s.name: s for s in self._d.journal.steps(record.run_id) if s.index < len(StepName)}
        resolve, act = steps.get(StepName.RESOLVE), steps.get(StepName.ACT)
        if (resolve is None or act is None or resolve.status != StepStatus.SUCCEEDED
                or act.status != StepStatus.SUCCEEDED):
            return None  # the revocation has not acted yet: its own act step removes the access
        vault = Acted.from_journal(act.result).vault
        if vault is None:
            return None
        targeted = Radius.from_journal(resolve.result).targeted_principals()
        back = [e for e in self._d.vaults.entries(vault.ref()) if e.object_id.lower() in targeted]
        if back:
            self._d.vaults.remove(vault.ref(), back)
        return HoldAct(record.run_id, key.uri, removed=tuple(back))

    def _record(self, act: HoldAct) -> None:
        """Appends a ``hold`` step to the revocation's run (index 5 and up)."""
        journal = self._d.journal
        for _ in range(_INDEX_ATTEMPTS):
            index = max([len(StepName) - 1, *(s.index for s in journal.steps(act.run_id))]) + 1
            claimed = journal.claim_step(act.run_id, index, HOLD_STEP, owner=self._owner,
                                         stale_after=STEP_STALE_AFTER)
            if claimed is None:
                continue
            journal.complete_step(claimed, status=StepStatus.SUCCEEDED, result=act.to_journal())
            return
        raise TransientError(f"could not record the hold on run {act.run_id}: its steps keep changing")


__all__ = ["Hold", "HoldAct"]
