"""Desired state vs actual state -> plan -> apply: keeps pinned bindings on the current version.

Level-triggered: every pass re-reads the key and the bindings and acts only on the difference,
so a duplicate event writes nothing, a stale event never moves a binding backwards (the
desired version is always the key's *current* version, read live), and a lost event is healed
by the next timer pass. Updates are started, never awaited: a later pass (the ``confirm``
work item, or the timer) reads the resources back to confirm convergence.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from shared import metrics
from shared.clock import Clock
from shared.config import Settings
from shared.errors import KeystewardError, PermanentError, TransientError
from shared.inventory import Inventory, for_key
from shared.model import Binding, KeyRef, KeyVersion, ServiceType
from shared.notify import Notifier, Outcome
from shared.usage import UsageSource, confirmation_proofs

if TYPE_CHECKING:
    # Types only: the adapters (and their SDKs) load when the app is built, not when indexed.
    from shared.keyvault import KeyStore
    from shared.targets import Target, UpdateStart

# Kusto and Cosmos report these while an operation is under way: never write on top of one.
IN_PROGRESS_STATES = frozenset({"updating", "creating", "running", "moving", "deleting", "inprogress"})
ACCEPTED_KEY_TYPES = frozenset({"RSA", "RSA-HSM"})
# Retries of a transient failure when starting one update (throttling, 5xx, dropped connection).
MAX_START_ATTEMPTS = 8
MAX_BACKOFF_S = 60.0


class ActionKind(StrEnum):
    UPDATE = "update"  # pinned to an older version: write the current one
    IN_SYNC = "in-sync"  # already on the current version
    IN_FLIGHT = "in-flight"  # an operation is running on the resource: wait, do not write
    HELD = "held"  # tagged keysteward-hold
    REJECTED = "rejected"  # the current version is not acceptable for this service
    VERSIONLESS = "versionless"  # follows the key itself; no write
    LAGGING = "lagging"  # versionless and still not on the current version after the lag limit
    READ_ONLY = "read-only"  # CMK fixed at creation (PostgreSQL, Energy)
    REVOKED = "revoked"  # the key is under a revocation, or the service reports its access revoked


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    binding: Binding
    to_version: str | None
    reason: str = ""


@dataclass
class PassResult:
    """What one reconcile pass for one key saw and did."""

    key: KeyRef
    current: KeyVersion | None
    actions: list[Action] = field(default_factory=list)
    started: list[UpdateStart] = field(default_factory=list)
    failed: list[tuple[Binding, str]] = field(default_factory=list)
    updated: list[Binding] = field(default_factory=list)  # confirmed on the current version this pass
    # resource id -> the proof a confirmed binding got: "resource-state", "audit-evidence" or "both"
    proofs: dict[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        """Updates were started or are still running: a later pass must confirm them."""
        return bool(self.started) or any(a.kind is ActionKind.IN_FLIGHT for a in self.actions)

    @property
    def converged(self) -> bool:
        return not self.pending and not self.failed and not any(
            a.kind is ActionKind.UPDATE for a in self.actions
        )

    def count(self, kind: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind is kind)


def version_problem(version: KeyVersion, service: ServiceType, *, settings: Settings, now: datetime) -> str | None:
    """Why ``service`` cannot use ``version`` now; ``None`` when it can."""
    if not version.enabled:
        return f"version {version.version} is disabled"
    if version.not_before is not None and version.not_before > now:
        return f"version {version.version} is not valid before {version.not_before.isoformat()}"
    if version.expires_on is not None and version.expires_on <= now + settings.expiry_margin:
        return f"version {version.version} expires {version.expires_on.isoformat()}, within the safety margin"
    if version.key_type is not None and version.key_type not in ACCEPTED_KEY_TYPES:
        return f"key type {version.key_type} is not RSA"
    from shared.targets import accepted_key_sizes  # noqa: PLC0415 - the adapters load when first needed

    accepted = accepted_key_sizes(service, settings.key_sizes)
    if version.key_size is not None and version.key_size not in accepted:
        sizes = ", ".join(str(s) for s in sorted(accepted))
        return f"RSA {version.key_size} is not accepted by {service.value} (accepts {sizes})"
    return None


def plan(
    *, current: KeyVersion, bindings: Sequence[Binding], settings: Settings, now: datetime,
    revoked_by: str | None = None,
) -> list[Action]:
    """The actions that bring ``bindings`` to ``current``. Pure: no I/O.

    ``revoked_by`` names a revocation run in force for the whole key: then nothing is moved
    (a new version must not bring revoked data back online; only a restore does).
    """
    actions: list[Action] = []
    target = current.version
    for b in bindings:
        if not b.updatable:
            note = "" if b.effective_version == target else f"stuck on {b.effective_version or 'unknown'}"
            actions.append(Action(ActionKind.READ_ONLY, b, None, note))
        elif b.versionless:
            # Never written (a Cosmos DB account takes no versioned key URI): only watched for lag.
            if b.in_use_version is None:
                actions.append(Action(ActionKind.VERSIONLESS, b, None, "version in use unknown (not reported)"))
            elif b.in_use_version == target:
                actions.append(Action(ActionKind.VERSIONLESS, b, None))
            elif current.created is not None and now - current.created >= settings.lag_alert:
                lag = now - current.created
                actions.append(Action(ActionKind.LAGGING, b, None, f"still on {b.in_use_version} {lag} after rotation"))
            else:
                actions.append(Action(ActionKind.VERSIONLESS, b, None, f"moving from {b.in_use_version}"))
        elif b.pinned_version == target:
            actions.append(Action(ActionKind.IN_SYNC, b, None))
        elif revoked_by is not None:
            actions.append(Action(ActionKind.REVOKED, b, target, f"key revoked by run {revoked_by}; restore first"))
        elif b.access_revoked:
            actions.append(Action(ActionKind.REVOKED, b, target,
                                  "the service reports its key access revoked and accepts no key change"))
        elif b.held(settings.hold_tag):
            actions.append(Action(ActionKind.HELD, b, target, f"held by tag {settings.hold_tag}"))
        elif (b.provisioning_state or "").lower() in IN_PROGRESS_STATES:
            actions.append(Action(ActionKind.IN_FLIGHT, b, target, f"operation in progress ({b.provisioning_state})"))
        elif (problem := version_problem(current, b.service, settings=settings, now=now)) is not None:
            actions.append(Action(ActionKind.REJECTED, b, target, problem))
        else:
            actions.append(Action(ActionKind.UPDATE, b, target))
    return actions


class WriteBudget:
    """A static client-side token bucket per subscription. No longer used by default: every
    ARM request is paced by the adaptive :class:`shared.pacing.Pacer` in the clients' pipeline,
    which learns the budget from ARM's answers. Kept as an explicit extra limit a caller may
    pass (``Reconciler(budget=...)``)."""

    def __init__(self, *, rate_per_s: float, burst: int,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._sleep = sleep
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # sub -> (tokens, at)

    def acquire(self, subscription: str) -> None:
        while True:
            with self._lock:
                now = self._monotonic()
                tokens, at = self._buckets.get(subscription, (self._burst, now))
                tokens = min(self._burst, tokens + max(0.0, now - at) * self._rate)
                if tokens >= 1.0:
                    self._buckets[subscription] = (tokens - 1.0, now)
                    return
                self._buckets[subscription] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
            metrics.current().pacing_wait(subscription, wait)
            self._sleep(wait)


class Reconciler:
    """Runs reconcile passes; every dependency is passed in."""

    def __init__(
        self,
        *,
        settings: Settings,
        keys: KeyStore,
        targets: dict[ServiceType, Target],
        inventory: Inventory,
        notifier: Notifier,
        clock: Clock,
        budget: WriteBudget | None = None,
        usage: UsageSource | None = None,
    ) -> None:
        self._settings = settings
        self._usage = usage  # audit evidence for the confirm pass (shared/usage.py); None: resource state only
        self._keys = keys
        self._targets = targets
        self._inventory = inventory
        self._notifier = notifier
        self._clock = clock
        # ARM pacing lives in the clients' pipeline (shared.pacing); this is only an extra limit.
        self._budget = budget
        self._log = structlog.get_logger("keysteward.reconcile")
        self._rng = random.Random()  # noqa: S311 - jitter for retries, not security

    def bindings_for(self, key: KeyRef, subscriptions: Sequence[str] | None = None) -> list[Binding]:
        return for_key(self._inventory.bindings(subscriptions or self._settings.subscriptions), key)

    def reconcile_key(
        self,
        key: KeyRef,
        *,
        subscriptions: Sequence[str] | None = None,
        bindings: Sequence[Binding] | None = None,
        event_id: str | None = None,
        started_before: Sequence[str] = (),
        dry_run: bool = False,
        revoked_by: str | None = None,
    ) -> PassResult:
        """One pass for ``key`` over ``subscriptions`` (default: all watched ones).

        Raises TransientError when the key or the inventory cannot be read now (the caller
        retries); failures to update single bindings are reported in the result instead.
        """
        key = key.versionless()
        now = self._clock.now()
        current = self._keys.current(key)
        found = list(bindings) if bindings is not None else self.bindings_for(key, subscriptions)
        result = PassResult(key=key, current=current, actions=plan(
            current=current, bindings=found, settings=self._settings, now=now, revoked_by=revoked_by))
        previously = {r.lower() for r in started_before}
        for action in result.actions:
            if action.kind is ActionKind.IN_SYNC and action.binding.resource_id.lower() in previously:
                result.updated.append(action.binding)
        if result.updated and self._usage is not None:
            result.proofs = confirmation_proofs(self._usage, key.with_version(current.version), result.updated)
        if not dry_run:
            self._apply(result)
        self._report(result, event_id=event_id, dry_run=dry_run)
        return result

    def _apply(self, result: PassResult) -> None:
        updates = [a for a in result.actions if a.kind is ActionKind.UPDATE]
        if not updates:
            return
        workers = max(1, min(self._settings.max_concurrency, len(updates)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keysteward-update") as pool:
            outcomes = list(pool.map(self._start_one, updates))
        for action, outcome in zip(updates, outcomes, strict=True):
            if isinstance(outcome, str):  # the reason it failed
                result.failed.append((action.binding, outcome))
            else:
                result.started.append(outcome)

    def _start_one(self, action: Action) -> UpdateStart | str:
        """Starts one update with retries on transient errors; returns the reason on failure."""
        binding, version = action.binding, action.to_version
        if version is None:
            return "no target version"
        target = self._targets[binding.service]
        last = ""
        for attempt in range(MAX_START_ATTEMPTS):
            if self._budget is not None:
                self._budget.acquire(binding.subscription)
            try:
                return target.start_update(binding, version)
            except TransientError as err:
                last = str(err)
                # 429 without Retry-After on a PATCH is not retried by the SDK: back off here,
                # exponentially with jitter so that a fleet does not retry in lockstep.
                wait = err.retry_after if err.retry_after else min(MAX_BACKOFF_S, 0.5 * 2**attempt)
                wait *= 1.0 + 0.2 * self._rng.random()
                self._log.info("update-retry", resource_id=binding.resource_id, attempt=attempt + 1,
                               wait_s=round(wait, 2), error=last)
                self._clock.sleep(wait)
            except PermanentError as err:
                return str(err)
            except KeystewardError as err:
                return str(err)
        return f"gave up after {MAX_START_ATTEMPTS} attempts: {last}"

    def _report(self, result: PassResult, *, event_id: str | None, dry_run: bool) -> None:
        current = result.current.version if result.current else None
        outcomes: list[Outcome] = []
        started = {s.binding.resource_id for s in result.started}
        failed = {b.resource_id: reason for b, reason in result.failed}
        updated = {b.resource_id for b in result.updated}
        for a in result.actions:
            b = a.binding
            step = a.kind.value
            if b.resource_id in started:
                step = "would-update" if dry_run else "update-started"
            elif b.resource_id in failed:
                step = "update-failed"
            elif b.resource_id in updated:
                step = "updated"
            self._log.info(
                "binding",
                outcome=step,
                event_id=event_id,
                key=str(result.key),
                resource_id=b.resource_id,
                service=b.service.value,
                from_version=b.effective_version,
                to_version=current,
                reason=failed.get(b.resource_id, a.reason) or None,
                proof=result.proofs.get(b.resource_id),
            )
            data = {"key": str(result.key), "resourceId": b.resource_id, "service": b.service.value,
                    "fromVersion": b.effective_version, "toVersion": current, "eventId": event_id}
            if b.resource_id in result.proofs:
                data["proof"] = result.proofs[b.resource_id]
            if dry_run:
                continue
            if step == "updated":
                outcomes.append(Outcome("BindingUpdated", b.resource_id, data))
            elif step == "update-failed":
                outcomes.append(Outcome("BindingFailed", b.resource_id, {**data, "reason": failed[b.resource_id]},
                                        "warning"))
            elif a.kind is ActionKind.HELD:
                outcomes.append(Outcome("BindingHeld", b.resource_id, {**data, "reason": a.reason}))
            elif a.kind is ActionKind.LAGGING:
                outcomes.append(Outcome("BindingLagging", b.resource_id, {**data, "reason": a.reason}, "warning"))
            elif a.kind is ActionKind.REJECTED:
                outcomes.append(Outcome("BindingRejected", b.resource_id, {**data, "reason": a.reason}, "warning"))
            elif a.kind is ActionKind.READ_ONLY and a.reason:
                outcomes.append(Outcome("BindingStuck", b.resource_id, {**data, "reason": a.reason}))
        if outcomes:
            self._notifier.publish(outcomes)
