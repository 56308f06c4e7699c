"""The composition root and the operations the triggers and the CLI call.

:func:`build` wires settings, clients, adapters, clock and logger once; :class:`Keysteward`
exposes one method per use case (an event, a work item, a timer pass, a CLI command). A
trigger parses its binding, calls one method, and maps the result back.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport

from shared.clients import ClientFactory, factory_for, pacer_for
from shared.clock import Clock, RemoteSandboxClock, SystemClock
from shared.config import Settings
from shared.errors import ConfigError, TransientError, ValidationError
from shared.events import IgnoredEvent, KeyEventType, KeyVaultEvent
from shared.idempotency import (
    Claim,
    IdempotencyStore,
    MemoryIdempotencyStore,
    PassMark,
    TableIdempotencyStore,
    covers,
)
from shared.inventory import ArmInventory, Inventory, ResourceGraphInventory, bindings_of_key, by_key
from shared.journal import Journal, from_connection_string, from_identity
from shared.keyvault import KeyStore, SdkKeyStore
from shared.model import Binding, KeyRef, ServiceType
from shared.notify import EventGridNotifier, LogNotifier, Notifier, Outcome
from shared.pacing import Pacer
from shared.reconcile import PassResult, Reconciler, WriteBudget
from shared.rotation import RotationResult, Rotator
from shared.targets import Target, build_targets
from shared.usage import NoUsageEvidence, UsageSource
from shared.usage import from_settings as usage_from_settings
from shared.vaultaccess import VaultAccess
from shared.workqueue import MAX_CONFIRM_ATTEMPTS, MemoryQueue, StorageWorkQueue, WorkItem, WorkQueue, confirm_delay

if TYPE_CHECKING:
    from shared.runbooks import Hold, InForce, Runbooks


@dataclass
class EventResult:
    """What handling one Key Vault event did (for the trigger's log line and tests)."""

    action: str  # reconciled | fanned-out | rotated | notified | ignored | skipped | duplicate | coalesced
    detail: str = ""
    passes: list[PassResult] = field(default_factory=list)
    enqueued: list[WorkItem] = field(default_factory=list)
    rotation: RotationResult | None = None


class Keysteward:
    """keysteward's use cases over injected dependencies."""

    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        keys: KeyStore,
        targets: dict[ServiceType, Target],
        inventory: Inventory,
        notifier: Notifier,
        queue: WorkQueue,
        clients: ClientFactory | None = None,
        budget: WriteBudget | None = None,
        journal: Journal | Callable[[], Journal] | None = None,
        idempotency: IdempotencyStore | None = None,
        usage: UsageSource | None = None,
    ) -> None:
        self.settings = settings
        # Usage evidence from Key Vault audit logs (shared/usage.py); none unless configured.
        self.usage: UsageSource = usage if usage is not None else NoUsageEvidence()
        self.clock = clock
        self.keys = keys
        self.targets = targets
        self.inventory = inventory
        self.notifier = notifier
        self.queue = queue
        self.clients = clients
        # Handled event ids and the last pass per key (duplicates and bursts coalesce).
        self.idempotency: IdempotencyStore = idempotency or MemoryIdempotencyStore(clock, ttl=settings.event_dedup)
        # The runbook journal: given, built on first use by a factory, or kept in memory.
        self._journal: Journal | None = None if callable(journal) else journal
        self._journal_factory: Callable[[], Journal] | None = journal if callable(journal) else None
        self._journal_lock = threading.Lock()
        self._runbooks: Runbooks | None = None
        self.reconciler = Reconciler(
            settings=settings, keys=keys, targets=targets, inventory=inventory,
            notifier=notifier, clock=clock, budget=budget, usage=self.usage,
        )
        self.rotator = Rotator(settings=settings, keys=keys, notifier=notifier, clock=clock,
                               revoked_by=self.revocation_in_force)
        self.log = structlog.get_logger("keysteward")

    @property
    def has_journal(self) -> bool:
        """Whether a durable journal is configured (given, or built from AzureWebJobsStorage)."""
        return self._journal is not None or self._journal_factory is not None

    @property
    def journal(self) -> Journal:
        """The runbook journal (runs, steps, leases, revocations in force); a factory given to the
        constructor runs on first use, so building the app does no Storage I/O.

        Raises ConfigError when no storage is configured: runbooks never journal in process
        memory (no other instance would see the run or its lease, and it could never be restored).
        """
        with self._journal_lock:
            if self._journal is None:
                factory = self._journal_factory
                if factory is None:
                    raise ConfigError("runbooks need durable storage: set AzureWebJobsStorage (a connection "
                                      "string, or __accountName for identity-based access); nothing was done")
                self._journal = factory()
            return self._journal

    @property
    def runbooks(self) -> Runbooks:
        """The runbooks over this app's dependencies, built once. Raises ConfigError without a
        durable journal or a client factory (before anything touches Azure)."""
        from shared.runbooks import Runbooks  # noqa: PLC0415 - the runbooks import the app's types

        if self._runbooks is None:
            if self.clients is None:
                raise ConfigError("the runbooks need the app's client factory (build the app with shared.app.build)")
            self._runbooks = Runbooks(
                settings=self.settings, clock=self.clock, keys=self.keys, targets=self.targets,
                inventory=self.inventory, notifier=self.notifier, journal=self.journal,
                vault_access=VaultAccess(self.clients, subscriptions=self.settings.subscriptions),
                usage=self.usage,
            )
        return self._runbooks

    def revocation(self, key: KeyRef) -> InForce | None:
        """The revocation in force on ``key`` (one record lookup; see :mod:`shared.runbooks.records`)."""
        from shared.runbooks import Records  # noqa: PLC0415 - the runbooks import the app's types

        return Records(journal=lambda: self.journal if self.has_journal else None, keys=self.keys).in_force(key)

    def revocation_in_force(self, key: KeyRef) -> str | None:
        """The run id of a revocation in force on ``key``; ``None`` when none.

        While one is in force, reconcile moves no binding of the key, rotation creates no
        version, and retention neither re-enables nor retires: a revoked key stays dark until
        its own restore.
        """
        found = self.revocation(key)
        return found.run_id if found is not None else None

    def hold(self, key: KeyRef | None = None) -> list[Any]:
        """Enforces the revocations in force on ``key`` (all of them when ``None``); see
        :mod:`shared.runbooks.hold`. Nothing to do without a journal (no revocation can be recorded)."""
        if not self.has_journal:
            return []
        from shared.runbooks import Hold  # noqa: PLC0415 - the runbooks import the app's types

        hold: Hold = Hold(self.runbooks.deps)
        return list(hold.enforce(key))

    # ---- scope ------------------------------------------------------------------------------
    def in_scope(self, key: KeyRef) -> bool:
        """Only vaults in KEYSTEWARD_VAULTS are acted on."""
        return key.vault_url in self.settings.vaults

    # ---- Event Grid ------------------------------------------------------------------------------
    def handle_event(self, event: KeyVaultEvent | IgnoredEvent) -> EventResult:
        """Routes one parsed event by type. Raises TransientError when Azure should redeliver."""
        if isinstance(event, IgnoredEvent):
            return EventResult("ignored", event.reason)
        if not self.in_scope(event.key):
            self.log.info("event-out-of-scope", event_id=event.event_id, key=str(event.key))
            return EventResult("ignored", f"vault {event.key.vault_url} is not in KEYSTEWARD_VAULTS")
        handler = self._routes[event.event_type]
        return self._once(event, lambda: handler(self, event))

    def _once(self, event: KeyVaultEvent, handle: Callable[[], EventResult]) -> EventResult:
        """Runs ``handle`` unless this event id was handled already (a duplicate delivery is a
        no-op); raises TransientError while another invocation is handling the same id, so
        Event Grid redelivers it later. A failure forgets the claim, so the redelivery runs."""
        claim = self.idempotency.claim(event.event_id)
        if claim is Claim.DONE:
            self.log.info("event-duplicate", event_id=event.event_id, key=str(event.key))
            return EventResult("duplicate", f"event {event.event_id} was handled already")
        if claim is Claim.IN_PROGRESS:
            raise TransientError(f"event {event.event_id} is being handled by another invocation")
        try:
            result = handle()
        except BaseException:
            self.idempotency.release(event.event_id)
            raise
        self.idempotency.complete(event.event_id)
        return result

    def key_bindings(self, key: KeyRef) -> list[Binding]:
        """The bindings of ``key`` in the watched subscriptions, reading only what the inventory
        allows: one filtered Resource Graph query, or the ARM lists filtered here."""
        return bindings_of_key(self.inventory, key, self.settings.subscriptions)

    def _on_new_version(self, event: KeyVaultEvent) -> EventResult:
        key = event.key.versionless()
        # A version created while the key is revoked is disabled on sight (level-triggered hold),
        # before anything else, and even when the event is coalesced below.
        for act in self.hold(key):
            self.log.warning("new-version-held", event_id=event.event_id, key=key.uri, run=act.run_id,
                             disabled=list(act.disabled))
        if covers(self.idempotency.last_pass(key.uri), version=event.key.version, event_time=event.event_time):
            # A pass since this event's version appeared already moved every binding to the
            # key's current version: one pass for a burst of events.
            self.log.info("event-coalesced", event_id=event.event_id, key=str(key), version=event.key.version)
            return EventResult("coalesced", "a pass already reconciled this version or a newer one")
        bindings = self.key_bindings(key)
        subs = sorted({b.subscription for b in bindings})
        if len(subs) > 1:
            current = self.keys.current(key)
            items = [WorkItem(key.uri, sub, event_id=event.event_id,
                              resources=_carried([b for b in bindings if b.subscription == sub]))
                     for sub in subs]
            for item in items:
                self.queue.put(item)
            self.idempotency.mark_pass(key.uri, PassMark(current.version, current.created))
            return EventResult("fanned-out", f"{len(items)} subscriptions", enqueued=items)
        result = self.reconciler.reconcile_key(key, bindings=bindings, event_id=event.event_id,
                                               revoked_by=self.revocation_in_force(key))
        enqueued = self._follow_up(WorkItem(key.uri, subs[0] if subs else "", event_id=event.event_id,
                                            resources=_carried(bindings)), result)
        if result.current is not None and not result.failed:
            self.idempotency.mark_pass(key.uri, PassMark(result.current.version, result.current.created))
        return EventResult("reconciled", "", passes=[result], enqueued=enqueued)

    def _on_near_expiry(self, event: KeyVaultEvent) -> EventResult:
        r = self.rotator.on_near_expiry(event.key, event_version=event.key.version, event_id=event.event_id)
        return EventResult("rotated" if r.rotated else "notified" if "notified" in r.reason else "skipped",
                           r.reason, rotation=r)

    def _on_expired(self, event: KeyVaultEvent) -> EventResult:
        r = self.rotator.on_expired(event.key, event_version=event.key.version, event_id=event.event_id)
        return EventResult("rotated" if r.rotated else "notified", r.reason, rotation=r)

    _routes: dict[KeyEventType, Callable[[Keysteward, KeyVaultEvent], EventResult]] = {
        KeyEventType.NEW_VERSION: _on_new_version,
        KeyEventType.NEAR_EXPIRY: _on_near_expiry,
        KeyEventType.EXPIRED: _on_expired,
    }

    # ---- work items ------------------------------------------------------------------------------
    def process_work_item(self, item: WorkItem) -> PassResult:
        """One (key, subscription) pass; re-enqueues a confirm pass while updates are running."""
        from shared.keyuri import parse_key_uri  # noqa: PLC0415 - avoids an import cycle at start

        key = parse_key_uri(item.key, allowed_vaults=self.settings.vaults, require_version=False)
        result = self.reconciler.reconcile_key(
            key, subscriptions=[item.subscription], event_id=item.event_id, started_before=item.started,
            revoked_by=self.revocation_in_force(key),
            bindings=self._read_resources(key, item) if item.resources
            else bindings_of_key(self.inventory, key, [item.subscription]),
        )
        self._follow_up(item, result)
        return result

    def _read_resources(self, key: KeyRef, item: WorkItem) -> list[Binding]:
        """The bindings a work item carries, each read live (one GET per resource instead of
        listing the subscription); a resource gone or moved to another key is left out."""
        out: list[Binding] = []
        for entry in item.resources:
            service_text, _, resource_id = entry.partition(" ")
            try:
                target = self.targets[ServiceType(service_text)]
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
            self.notifier.publish([Outcome("BindingNotConverged", item.key, {
                "key": item.key, "subscription": item.subscription, "attempts": item.attempt}, "warning")])
            return []
        nxt = item.next_confirm(tuple(s.binding.resource_id for s in result.started))
        expected = [s.expected_s for s in result.started if s.expected_s is not None]
        self.queue.put(nxt, delay=confirm_delay(self.settings.confirm_delay, nxt.attempt,
                                                expected=timedelta(seconds=max(expected)) if expected else None))
        return [nxt]

    # ---- timers ---------------------------------------------------------------------------------
    def all_bindings(self) -> list[Binding]:
        return self.inventory.bindings(self.settings.subscriptions)

    def reconcile_all(self, *, dry_run: bool = False, key: KeyRef | None = None) -> list[PassResult]:
        """Safety net for lost events: every bound key in scope, one inventory read for all.
        A revoked key's bindings are not moved (the timer enforces the hold before this pass)."""
        grouped = by_key(self.all_bindings())
        results: list[PassResult] = []
        for bindings in grouped.values():
            ref = bindings[0].key
            if not self.in_scope(ref) or (key is not None and ref.key_id != key.key_id):
                continue
            result = self.reconciler.reconcile_key(ref, bindings=bindings, dry_run=dry_run,
                                                   revoked_by=self.revocation_in_force(ref))
            results.append(result)
            if not dry_run:
                for sub in sorted({b.subscription for b in bindings}):
                    self._follow_up(WorkItem(ref.uri, sub), result)
        return results

    def managed_keys(self) -> list[KeyRef]:
        out: list[KeyRef] = []
        for vault in self.settings.vaults:
            out.extend(self.keys.list_keys(vault))
        return out

    def rotation_sweep(self) -> list[RotationResult]:
        """Scheduled rotation of managed keys older than their maximum age."""
        return [self.rotator.rotate_if_old(k) for k in self.managed_keys()]


# A work item carries its bindings' ids when there are at most this many: reading each costs
# one ARM read, while finding them again costs at least one list call per service type (and a
# page per 100 resources of the subscription). More than this: the item reads its
# subscription's bindings of the key through the inventory's filtered path instead.
MAX_CARRIED_RESOURCES = 16


def _carried(bindings: list[Binding]) -> tuple[str, ...]:
    if len(bindings) > MAX_CARRIED_RESOURCES:
        return ()
    return tuple(f"{b.service.value} {b.resource_id}" for b in bindings)


def _clock_for(settings: Settings) -> Clock:
    conn = settings.sandbox_connection
    if conn is not None:
        return RemoteSandboxClock(conn.admin_url, ca_bundle=conn.ca_bundle)
    return SystemClock()


def _pacer_for(settings: Settings, clock: Clock) -> Pacer:
    """ARM pacing on real time in Azure (and against a sandbox server, whose buckets refill in
    real time); on the given clock otherwise (an in-process sandbox refills its buckets on its
    own clock, which waiting on it moves)."""
    if isinstance(clock, SystemClock | RemoteSandboxClock):
        return pacer_for(settings)
    return pacer_for(settings, sleep=clock.sleep, monotonic=lambda: clock.now().timestamp())


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport_factory: Callable[[], HttpTransport[Any, Any]] | None = None,
    credential: TokenCredential | None = None,
    notifier: Notifier | None = None,
    queue: WorkQueue | None = None,
    polling_interval: float | None = None,
    budget: WriteBudget | None = None,
    journal: Journal | None = None,
    pacer: Pacer | None = None,
) -> Keysteward:
    """Wires every dependency for ``settings``; what is passed in replaces the default.

    ``pacer`` replaces the adaptive ARM pacer built from the settings (:mod:`shared.pacing`;
    a benchmark passes one on its simulated clock); ``budget`` adds a static write limit. The work queue and the run
    journal (a :class:`~shared.journal.TableJournal`, tables created on first use) go to the
    storage account of ``AzureWebJobsStorage``, by connection string or, when only the
    identity-based settings are given, with the app's credential; without either, to memory.
    """
    clock = clock or _clock_for(settings)
    clients = factory_for(settings, transport_factory=transport_factory, credential=credential,
                          polling_interval=polling_interval, pacer=pacer or _pacer_for(settings, clock))
    targets = build_targets(clients)
    inventory: Inventory = (
        ResourceGraphInventory(clients, targets) if settings.inventory == "resourcegraph"
        else ArmInventory(targets, clients)
    )
    if notifier is None:
        notifier = (
            EventGridNotifier(settings.outcome_topic, clients.credential,
                              **({"transport": transport_factory()} if transport_factory else {}))
            if settings.outcome_topic else LogNotifier()
        )
    if queue is None:
        if settings.storage_connection:
            queue = StorageWorkQueue.from_connection_string(settings.storage_connection, settings.work_queue)
        elif settings.storage_queue_uri:
            queue = StorageWorkQueue.with_identity(settings.storage_queue_uri, settings.work_queue, clients.credential)
        else:
            queue = MemoryQueue()
    journal_source: Journal | Callable[[], Journal] | None = journal
    if journal_source is None and settings.storage_connection:
        journal_source = functools.partial(from_connection_string, settings.storage_connection, clock=clock,
                                           table_prefix=settings.table_prefix)
    elif journal_source is None and settings.storage_table_uri:
        journal_source = functools.partial(from_identity, settings.storage_table_uri, clients.credential, clock=clock,
                                           table_prefix=settings.table_prefix)

    idempotency: IdempotencyStore | None = None
    if settings.storage_connection:
        idempotency = TableIdempotencyStore.from_connection_string(
            settings.storage_connection, clock, table_prefix=settings.table_prefix, ttl=settings.event_dedup)
    elif settings.storage_table_uri:
        idempotency = TableIdempotencyStore.from_identity(
            settings.storage_table_uri, clients.credential, clock, table_prefix=settings.table_prefix,
            ttl=settings.event_dedup)

    usage = usage_from_settings(settings, credential=clients.credential, clock=clock,
                                transport_factory=transport_factory)
    return Keysteward(
        settings=settings,
        usage=usage,
        clock=clock,
        keys=SdkKeyStore(clients),
        targets=dict(targets),
        inventory=inventory,
        notifier=notifier,
        queue=queue,
        clients=clients,
        budget=budget,
        journal=journal_source,
        idempotency=idempotency,
    )


def drain(app: Keysteward, queue: MemoryQueue, *, max_items: int = 10_000,
          on_pass: Callable[[WorkItem, PassResult], None] | None = None,
          wait: Callable[[timedelta], None] | None = None) -> int:
    """Runs an in-memory queue to exhaustion in this process (CLI and tests); returns items run."""
    count = 0
    while count < max_items:
        popped = queue.pop()
        if popped is None:
            return count
        item, delay = popped
        if delay and wait is not None:
            wait(delay)
        result = app.process_work_item(item)
        count += 1
        if on_pass is not None:
            on_pass(item, result)
    return count


__all__ = ["EventResult", "Keysteward", "build", "drain"]
