"""The vocabulary of the runbooks: kinds, statuses, modes, steps and waiting reasons as enums
(``StrEnum``: their wire values are the strings the journal and the API always used), the
validated requests, the run view, and the constants every part of the engine shares."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from shared.journal import Run, Step
from shared.model import KeyRef

JsonDict = dict[str, Any]


class RunKind(StrEnum):
    REVOKE = "revoke"
    RESTORE = "restore"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partially-succeeded"
    FAILED = "failed"
    PENDING_APPROVAL = "pending-approval"
    CANCELED = "canceled"


class Mode(StrEnum):
    DISABLE = "disable"
    REMOVE_ACCESS = "remove-access"


class StepName(StrEnum):
    RESOLVE = "resolve"
    SNAPSHOT = "snapshot"
    ACT = "act"
    VERIFY = "verify"
    PUBLISH = "publish"


class Waiting(StrEnum):
    """Why a running run is not progressing right now, when no step is handed back."""

    LEASE = "lease"  # another run holds the key's lease
    BUSY = "busy"  # another instance runs a step of this run now
    APPROVAL = "approval"  # waits for a second person (two-person rule)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


MODE_DISABLE: Final = Mode.DISABLE
MODE_REMOVE_ACCESS: Final = Mode.REMOVE_ACCESS
MODES: Final = tuple(m.value for m in Mode)
STEPS: Final = tuple(s.value for s in StepName)
ACTING_STEPS: Final = (StepName.RESOLVE, StepName.SNAPSHOT, StepName.ACT)
IN_FORCE_STATUSES: Final = frozenset({RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED})

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
# ETag-guarded read-modify-write of a run: attempts before giving up (TransientError).
CONFLICT_ATTEMPTS: Final = 5
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

    ``waiting`` says why a running run is not progressing right now: a :class:`Waiting` reason
    (``lease``, ``busy``, ``approval``), or the :class:`StepName` that was handed back and goes
    on at the next resume (``verify``: polling continues; another step: it met a transient
    error and is retried). ``duplicate`` is True when a restore request found the revocation
    already restored by this run.
    """

    run: Run
    steps: list[Step]
    waiting: Waiting | StepName | None = None
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
            "waiting": None if self.waiting is None else str(self.waiting),
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


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def sampled(name: str, items: Iterable[str] | Mapping[str, Any]) -> JsonDict:
    """``{name: the first SAMPLE_MAX items (sorted), name + "Count": how many}``; a mapping
    keeps its values for the items it names."""
    keys = sorted(items)
    count = {f"{name}Count": len(keys)}
    if isinstance(items, Mapping):
        return {name: {k: items[k] for k in keys[:SAMPLE_MAX]}, **count}
    return {name: keys[:SAMPLE_MAX], **count}
