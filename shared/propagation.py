"""Propagation: moving every binding of a key to its current version.

A new version (an event) or the timer's safety net starts a reconcile pass per key
(:class:`~shared.reconcile.Reconciler` plans and starts the updates). A key bound in several
subscriptions fans out as one work item per subscription (Storage queue); a pass whose updates
are still running enqueues a confirm pass, until they finish or the attempts run out. A burst
of events for one key coalesces into one pass (:func:`shared.idempotency.covers`).

Built once by the composition root (:func:`shared.app.build`); the revocation check comes from
the caller (a revoked key's bindings are never moved).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from shared.config import Settings
from shared.errors import KeystewardError, ValidationError
from shared.events import KeyVaultEvent
from shared.idempotency import IdempotencyStore, PassMark, covers
from shared.inventory import Inventory, bindings_of_key, by_key
from shared.keyuri import parse_key_uri
from shared.keyvault import KeyStore
from shared.model import Binding, KeyRef, ServiceType
from shared.notify import Notifier, Outcome
from shared.reconcile import PassResult, Reconciler
from shared.rotation import RotationResult
from shared.targets.base import Target
from shared.workqueue import MAX_CONFIRM_ATTEMPTS, WorkItem, WorkQueue, confirm_delay

RevokedBy = Callable[[KeyRef], str | None]

# A work item carries its bindings' ids when there are at most this many: reading each costs
# one ARM read, while finding them again costs at least one list call per service type (and a
# page per 100 resources of the subscription). More than this: the item reads its
# subscription's bindings of the key through the inventory's filtered path instead.
MAX_CARRIED_RESOURCES = 16


@dataclass
class EventResult:
    """What handling one Key Vault event did (for the trigger's log line and tests)."""

    action: str  # reconciled | fanned-out | rotated | notified | ignored | skipped | duplicate | coalesced
    detail: str = ""
    passes: list[PassResult] = field(default_factory=list)
    enqueued: list[WorkItem] = field(default_factory=list)
    rotation: RotationResult | None = None


class Propagation:
    """Reconcile passes for new versions, work items and the timer."""

    def __init__(
        self,
        *,
        settings: Settings,
        keys: KeyStore,
        targets: Mapping[ServiceType, Target],
        inventory: Inventory,
        notifier: Notifier,
        queue: WorkQueue,
        idempotency: IdempotencyStore,
        reconciler: Reconciler,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._targets = targets
        self._inventory = inventory
        self._notifier = notifier
        self._queue = queue
        self._idempotency = idempotency
        self._reconciler = reconciler
        self._log = structlog.get_logger("keysteward")

    def bindings(self, key: KeyRef) -> list[Binding]:
        """The bindings of ``key`` in the watched subscriptions, reading only what the inventory
        allows: one filtered Resource Graph query, or the ARM lists filtered here."""
        return bindings_of_key(self._inventory, key, self._settings.subscriptions)

    def new_version(self, event: KeyVaultEvent, *, revoked_by: RevokedBy) -> EventResult:
        """One pass for the event's key (or one work item per subscription), unless a pass since
        this version appeared already covered it."""
        key = event.key.versionless()
        if covers(self._idempotency.last_pass(key.uri), version=event.key.version, event_time=event.event_time):
            # A pass since this event's version appeared already moved every binding to the
            # key's current version: one pass for a burst of events.
            self._log.info("event-coalesced", event_id=event.event_id, key=str(key), version=event.key.version)
            return EventResult("coalesced", "a pass already reconciled this version or a newer one")
        bindings = self.bindings(key)
        subs = sorted({b.subscription for b in bindings})
        if len(subs) > 1:
            current = self._keys.current(key)
            items = [WorkItem(key.uri, sub, event_id=event.event_id,
                              resources=_carried([b for b in bindings if b.subscription == sub]))
                     for sub in subs]
            for item in items:
                self._queue.put(item)
            self._idempotency.mark_pass(key.uri, PassMark(current.version, current.created))
            return EventResult("fanned-out", f"{len(items)} subscriptions", enqueued=items)
        result = self._reconciler.reconcile_key(key, bindings=bindings, event_id=event.event_id,
                                                revoked_by=revoked_by(key))
        enqueued = self._follow_up(WorkItem(key.uri, subs[0] if subs else "", event_id=event.event_id,
                                            resources=_carried(bindings)), result)
        if result.current is not None and not result.failed:
            self._idempotency.mark_pass(key.uri, PassMark(result.current.version, result.current.created))
        return EventResult("reconciled", "", passes=[result], enqueued=enqueued)

    def work_item(self, item: WorkItem, *, revoked_by: RevokedBy) -> PassResult:
        """One (key, subscription) pass; re-enqueues a confirm pass while updates are running."""
        key = parse_key_uri(item.key, allowed_vaults=self._settings.vaults, require_version=False)
        result = self._reconciler.reconcile_key(
            key, subscriptions=[item.subscription], event_id=item.event_id, started_before=item.started,
            revoked_by=revoked_by(key),
            bindings=self._read_resources(key, item) if item.resources
            else bindings_of_key(self._inventory, key, [item.subscription]),
        )
        self._follow_up(item, result)
        return result

    def reconcile_all(self, *, revoked_by: RevokedBy, dry_run: bool = False, key: KeyRef | None = None,
                      errors: list[str] | None = None) -> list[PassResult]:
        """Safety net for lost events: every bound key in scope, one inventory read for all.
        A revoked key's bindings are not moved (the timer enforces the hold before this pass).

        With ``errors`` (the timer), a key that cannot be reconciled now (deleted, unreadable) is
        logged and recorded there and the pass goes on with the other keys; without it, the first
        such error is raised.
        """
        grouped = by_key(self._inventory.bindings(self._settings.subscriptions))
        results: list[PassResult] = []
        for bindings in grouped.values():
            ref = bindings[0].key
            if ref.vault_url not in self._settings.vaults or (key is not None and ref.key_id != key.key_id):
                continue
            try:
                result = self._reconciler.reconcile_key(ref, bindings=bindings, dry_run=dry_run,
                                                        revoked_by=revoked_by(ref))
            except KeystewardError as err:
                if errors is None:
                    raise
                self._log.error("reconcile-key-failed", key=ref.uri, error=str(err))
                errors.append(f"reconcile {ref.uri}: {err}")
                continue
            results.append(result)
            if not dry_run:
                for sub in sorted({b.subscription for b in bindings}):
                    self._follow_up(WorkItem(ref.uri, sub), result)
        return results

    def _read_resources(self, key: KeyRef, item: WorkItem) -> list[Binding]:
        """The bindings a work item carries, each read live (one GET per resource instead of
        listing the subscription); a resource gone or moved to another key is left out."""
        out: list[Binding] = []
        for entry in item.resources:
            service_text, _, resource_id = entry.partition(" ")
            try:
                target = self._targets[ServiceType(service_text)]
            except (ValueError, KeyError) as err:
                raise ValidationError(f"work item names an unknown service {service_text!r}",
                                      field="resources") from err
            binding = target.get_binding(resource_id)
            if binding is not None and binding.key.key_id == key.key_id:
                out.append(binding)
        return out

    def _follow_up(self, item: WorkItem, result: PassResult) -> list[WorkItem]:
        if not result.pending or not item.subscription:
            return []
        if item.attempt >= MAX_CONFIRM_ATTEMPTS:
            self._notifier.publish([Outcome("BindingNotConverged", item.key, {
                "key": item.key, "subscription": item.subscription, "attempts": item.attempt}, "warning")])
            return []
        nxt = item.next_confirm(tuple(s.binding.resource_id for s in result.started))
        expected = [s.expected_s for s in result.started if s.expected_s is not None]
        self._queue.put(nxt, delay=confirm_delay(self._settings.confirm_delay, nxt.attempt,
                                                 expected=timedelta(seconds=max(expected)) if expected else None))
        return [nxt]


def _carried(bindings: list[Binding]) -> tuple[str, ...]:
    if len(bindings) > MAX_CARRIED_RESOURCES:
        return ()
    return tuple(f"{b.service.value} {b.resource_id}" for b in bindings)


__all__ = ["MAX_CARRIED_RESOURCES", "EventResult", "Propagation"]
