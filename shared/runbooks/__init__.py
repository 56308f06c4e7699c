"""Revoke and restore: named, idempotent, journaled steps, and the revocation that holds.

A *revocation* makes a key unusable on purpose (all data behind it goes dark); a
*restoration* undoes exactly what one revocation did. Both run the same five steps, each
claimed in the journal before it acts and completed after, so a run interrupted anywhere is
resumed by ``resume`` or by the timer's :func:`resume_unfinished` and ends as an uninterrupted
run would:

1. ``resolve`` (:mod:`.radius`): the blast radius: every binding of the key, by version,
   subscription and service type; which of them the revocation reaches and, for
   ``remove-access``, the collateral. A restore resolves the revocation it undoes instead.
2. ``snapshot``: what will change (enabled versions, or the bound identities' access entries;
   for a whole-key revocation, the key's rotation policy too).
3. ``act`` (:mod:`.revoke`, :mod:`.restore`): ``disable`` disables every enabled version of the
   key (or the one named), tagging each with :data:`REVOKED_BY_TAG` = run id; ``remove-access``
   removes the bound identities' entries from the vault's access policy. A whole-key
   revocation also takes the rotation policy out of play. A restore re-enables exactly what its
   revocation disabled (and what the hold disabled during it), re-adds exactly the entries it
   removed, and puts the rotation policy back.
4. ``verify`` (:mod:`.verify`): polls the affected services until each reports the change, or
   until ``settings.verify_deadline`` after ``act``.
5. ``publish``: one outcome event (``KeyRevoked``/``KeyRestored``, or ``...Failed``).

The step engine (:mod:`.engine`) claims, completes, pauses and finishes runs under one lease
per key; each step returns a typed result (:mod:`.results`).

**A revocation holds until it is restored** (:mod:`.records`, :mod:`.hold`). A whole-key
revocation writes a durable record before anything else; every path that could make the key
usable or move a binding consults it and stands down, and the hold disables any version that
appears meanwhile. Only a successful restore of that run ends it.

**Runbooks need a durable journal.** Without storage, the composition root builds no
runbooks, and asking for them raises ConfigError (exit 2 on the CLI): nothing is done.

**Two-person rule** (``settings.two_person_rule``): a revocation whose *effect* is to leave the
key with no enabled version (a whole-key request, or a per-version request that disables the
last enabled one), or that removes access, waits for a second KeySteward.Revoke holder
(another object id, compared as a canonical GUID) unless ``emergency``.

**Time**: a run never holds a caller for its waits; see :class:`Runbooks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from shared.errors import PermanentError, TransientError
from shared.runbooks.deps import Deps
from shared.runbooks.facade import Runbooks
from shared.runbooks.hold import Hold, HoldAct
from shared.runbooks.model import (
    MODE_DISABLE,
    MODE_REMOVE_ACCESS,
    MODES,
    PHASES,
    SAMPLE_MAX,
    STEP_STALE_AFTER,
    STEPS,
    VERIFY_INTERVAL,
    Mode,
    RestoreRequest,
    RevokeRequest,
    RunKind,
    RunStatus,
    RunView,
    StepHook,
    StepName,
    Waiting,
)
from shared.runbooks.records import InForce, Records
from shared.tags import HELD_TAG, REVOKED_AT_TAG, REVOKED_BY_TAG


@dataclass
class ResumeReport:
    """What one resume sweep did: the runs it drove, and the runs it could not (with the error).
    The caller decides what a failure means (the timer fails its invocation so it is retried)."""

    views: list[RunView] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def resume_unfinished(runbooks: Runbooks, *, budget: timedelta = timedelta(seconds=120)) -> ResumeReport:
    """Resumes every ``running`` run, oldest first, sharing ``budget`` (of the app's clock)
    among them: the reconcile timer calls this. Runs waiting for a key's lease are retried
    here too, so queued revocations of one key run one after the other.

    A run that fails to resume (Transient/PermanentError) does not stop the others; each such
    error is logged and returned in :attr:`ResumeReport.errors`.
    """
    clock, journal = runbooks.deps.clock, runbooks.deps.journal
    log = structlog.get_logger("keysteward.runbooks")
    report = ResumeReport()
    end = clock.now() + budget
    for run in journal.list_unfinished():
        left = max(end - clock.now(), timedelta(0))
        try:
            report.views.append(runbooks.resume(run.run_id, budget=left))
        except (TransientError, PermanentError) as err:
            log.error("resume-failed", run=run.run_id, error=str(err), exc_info=True)
            report.errors[run.run_id] = str(err)
    return report


__all__ = [
    "HELD_TAG",
    "MODES",
    "MODE_DISABLE",
    "MODE_REMOVE_ACCESS",
    "PHASES",
    "REVOKED_AT_TAG",
    "REVOKED_BY_TAG",
    "SAMPLE_MAX",
    "STEPS",
    "STEP_STALE_AFTER",
    "VERIFY_INTERVAL",
    "Deps",
    "Hold",
    "HoldAct",
    "InForce",
    "Mode",
    "Records",
    "RestoreRequest",
    "ResumeReport",
    "RevokeRequest",
    "RunKind",
    "RunStatus",
    "RunView",
    "Runbooks",
    "StepHook",
    "StepName",
    "Waiting",
    "resume_unfinished",
]
