"""The composition root and the operations the triggers and the CLI call.

:func:`build` wires settings, clients, adapters, clock and logger once; :class:`Keysteward`
exposes one method per use case (an event, a work item, a timer pass, a CLI command). A
trigger parses its binding, calls one method, and maps the result back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport

from shared import metrics
from shared.clients import ClientFactory, factory_for, pacer_for
from shared.clock import Clock, RemoteSandboxClock, SystemClock
from shared.config import Settings
from shared.errors import ConfigError, PermanentError, TransientError
from shared.estate import Estate, EstateReader
from shared.events import IgnoredEvent, KeyEventType, KeyVaultEvent
from shared.idempotency import (
    Claim,
    IdempotencyStore,
    MemoryIdempotencyStore,
    TableIdempotencyStore,
)
from shared.inventory import ArmInventory, Inventory, ResourceGraphInventory
from shared.journal import Journal, from_connection_string, from_identity
from shared.keyvault import KeyStore, SdkKeyStore
from shared.model import Binding, KeyRef, ServiceType
from shared.notify import EventGridNotifier, LogNotifier, Notifier
from shared.pacing import Pacer
from shared.preflight import Preflight
from shared.propagation import MAX_CARRIED_RESOURCES, EventResult, Propagation
from shared.reconcile import PassResult, Reconciler, WriteBudget
from shared.retirement import Retention, SweepResult
from shared.rotation import RotationResult, Rotator
from shared.runbooks import Deps, Hold, HoldAct, InForce, Records, ResumeReport, Runbooks, resume_unfinished
from shared.targets import Target, build_targets
from shared.usage import UsageSource
from shared.usage import from_settings as usage_from_settings
from shared.vaultaccess import VaultAccess
from shared.vaults import find_vaults
from shared.workqueue import MemoryQueue, StorageWorkQueue, WorkItem, WorkQueue

NO_STORAGE = ("runbooks need durable storage: set AzureWebJobsStorage (a connection string, or __accountName for "
              "identity-based access); nothing was done")


class Keysteward:
    """keysteward's use cases over the services :func:`build` wires once."""

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
        idempotency: IdempotencyStore,
        reconciler: Reconciler,
        propagation: Propagation,
        rotator: Rotator,
        retention: Retention,
        preflight: Preflight,
        estate: EstateReader,
        records: Records,
        journal: Journal | None,
        runbooks: Runbooks | None,
        usage: UsageSource,
        clients: ClientFactory | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.keys = keys
        self.targets = targets
        self.inventory = inventory
        self.notifier = notifier
        self.queue = queue
        self.clients = clients
        # Usage evidence from Key Vault audit logs (shared/usage.py); NoUsageEvidence unless configured.
        self.usage = usage
        # Handled event ids and the last pass per key (duplicates and bursts coalesce).
        self.idempotency = idempotency
        self.reconciler = reconciler
        self.rotator = rotator
        self.propagation = propagation
        self.retention = retention
        self.preflight = preflight
        self.estate = estate
        self.records = records
        self._journal = journal
        self._runbooks = runbooks
        self._hold = Hold(runbooks.deps) if runbooks is not None else None
        self.log = structlog.get_logger("keysteward")

    @property
    def has_journal(self) -> bool:
        """Whether a durable journal is configured (AzureWebJobsStorage, or given to build)."""
        return self._journal is not None

    @property
    def journal(self) -> Journal:
        """The runbook journal (runs, steps, leases, revocations in force).

        Raises ConfigError when no storage is configured: runbooks never journal in process
        memory (no other instance would see the run or its lease, and it could never be restored).
        """
        if self._journal is None:
            raise ConfigError(NO_STORAGE)
        return self._journal

    @property
    def runbooks(self) -> Runbooks:
        """The runbooks, built once by :func:`build`. Raises ConfigError without a durable journal
        (before anything touches Azure)."""
        if self._runbooks is None:
            raise ConfigError(NO_STORAGE)
        return self._runbooks

    def revocation(self, key: KeyRef) -> InForce | None:
        """The revocation in force on ``key`` (one record lookup; see :mod:`shared.runbooks.records`)."""
        return self.records.in_force(key)

    def revocation_in_force(self, key: KeyRef) -> str | None:
        """The run id of a revocation in force on ``key``; ``None`` when none."""
        return self.records.run_in_force(key)

    def hold(self, key: KeyRef | None = None) -> list[HoldAct]:
        """Enforces the revocations in force on ``key`` (all of them when ``None``); see
        :mod:`shared.runbooks.hold`. Nothing to do without a journal (no revocation can be recorded)."""
        return list(self._hold.enforce(key)) if self._hold is not None else []

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
        """The bindings of ``key`` in the watched subscriptions (see :meth:`Propagation.bindings`)."""
        return self.propagation.bindings(key)

    def _on_new_version(self, event: KeyVaultEvent) -> EventResult:
        key = event.key.versionless()
        # A version created while the key is revoked is disabled on sight (level-triggered hold),
        # before anything else, and even when the event is coalesced below.
        for act in self.hold(key):
            self.log.warning("new-version-held", event_id=event.event_id, key=key.uri, run=act.run_id,
                             disabled=list(act.disabled))
        return self.propagation.new_version(event, revoked_by=self.revocation_in_force)

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

    # ---- work items and timers ---------------------------------------------------------------------
    def process_work_item(self, item: WorkItem) -> PassResult:
        """One (key, subscription) pass; re-enqueues a confirm pass while updates are running."""
        return self.propagation.work_item(item, revoked_by=self.revocation_in_force)

    def reconcile_all(self, *, dry_run: bool = False, key: KeyRef | None = None,
                      errors: list[str] | None = None) -> list[PassResult]:
        """Every bound key in scope (see :meth:`Propagation.reconcile_all`)."""
        return self.propagation.reconcile_all(dry_run=dry_run, key=key, errors=errors,
                                              revoked_by=self.revocation_in_force)

    def all_bindings(self) -> list[Binding]:
        return self.inventory.bindings(self.settings.subscriptions)

    def managed_keys(self) -> list[KeyRef]:
        out: list[KeyRef] = []
        for vault in self.settings.vaults:
            out.extend(self.keys.list_keys(vault))
        return out

    def rotation_sweep(self) -> list[RotationResult]:
        """Scheduled rotation of managed keys older than their maximum age."""
        return [self.rotator.rotate_if_old(k) for k in self.managed_keys()]

    def timer_pass(self) -> TimerReport:
        """The reconcile timer's pass, in order: the hold (what a revocation took goes dark again
        before anything else looks at the key), the full reconcile that heals lost events, the
        retention sweep, the runbooks left unfinished, and the estate's gauges.

        A failure of the hold, of one key in the sweep or of one run does not stop the rest; the
        report lists them (the trigger then fails its invocation, so the platform records it).
        """
        report = TimerReport()
        try:
            report.held = self.hold()
        except (TransientError, PermanentError) as err:
            report.errors.append(f"hold: {err}")
        report.passes = self.reconcile_all(errors=report.errors)
        report.sweep = self.retention.sweep()
        report.errors.extend(report.sweep.errors)
        if self._runbooks is not None:
            report.resumed = resume_unfinished(self._runbooks)
            report.errors.extend(f"run {run}: {err}" for run, err in report.resumed.errors.items())
        metrics.current().runs_resumed(report.resumed.views)
        report.estate = self.estate.measure()  # the gauges follow the estate
        return report


@dataclass
class TimerReport:
    """What one reconcile timer pass did (see :meth:`Keysteward.timer_pass`)."""

    held: list[HoldAct] = field(default_factory=list)
    passes: list[PassResult] = field(default_factory=list)
    sweep: SweepResult | None = None
    resumed: ResumeReport = field(default_factory=ResumeReport)
    estate: Estate | None = None
    errors: list[str] = field(default_factory=list)


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
    """The composition root: wires every dependency for ``settings`` once, and every service
    (reconciler, rotator, retention, preflight, estate, runbooks) over them, keyword-only.
    What is passed in replaces the default.

    ``pacer`` replaces the adaptive ARM pacer built from the settings (:mod:`shared.pacing`;
    a benchmark passes one on its simulated clock); ``budget`` adds a static write limit. The work
    queue, the idempotency table and the run journal (a :class:`~shared.journal.TableJournal`,
    tables created on first use: building does no Storage I/O) go to the storage account of
    ``AzureWebJobsStorage``, by connection string or, when only the identity-based settings are
    given, with the app's credential. Without either: queue and idempotency in memory, and no
    journal (the runbooks then refuse to run).
    """
    clock = clock or _clock_for(settings)
    clients = factory_for(settings, transport_factory=transport_factory, credential=credential,
                          polling_interval=polling_interval, pacer=pacer or _pacer_for(settings, clock))
    targets = dict(build_targets(clients))
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
    if journal is None and settings.storage_connection:
        journal = from_connection_string(settings.storage_connection, clock=clock, table_prefix=settings.table_prefix)
    elif journal is None and settings.storage_table_uri:
        journal = from_identity(settings.storage_table_uri, clients.credential, clock=clock,
                                table_prefix=settings.table_prefix)
    idempotency: IdempotencyStore
    if settings.storage_connection:
        idempotency = TableIdempotencyStore.from_connection_string(
            settings.storage_connection, clock, table_prefix=settings.table_prefix, ttl=settings.event_dedup)
    elif settings.storage_table_uri:
        idempotency = TableIdempotencyStore.from_identity(
            settings.storage_table_uri, clients.credential, clock, table_prefix=settings.table_prefix,
            ttl=settings.event_dedup)
    else:
        idempotency = MemoryIdempotencyStore(clock, ttl=settings.event_dedup)
    usage = usage_from_settings(settings, credential=clients.credential, clock=clock,
                                transport_factory=transport_factory)
    keys = SdkKeyStore(clients)
    reconciler = Reconciler(settings=settings, keys=keys, targets=targets, inventory=inventory, notifier=notifier,
                            clock=clock, budget=budget, usage=usage)
    records = Records(journal=journal, keys=keys)
    revoked_by = records.run_in_force
    retention = Retention(settings=settings, clock=clock, keys=keys, inventory=inventory, notifier=notifier,
                          usage=usage, revoked_by=revoked_by)
    runbooks = None if journal is None else Runbooks(Deps(
        settings=settings, clock=clock, keys=keys, targets=targets, inventory=inventory, notifier=notifier,
        journal=journal, vaults=VaultAccess(clients, subscriptions=settings.subscriptions), usage=usage))
    return Keysteward(
        settings=settings,
        clock=clock,
        keys=keys,
        targets=targets,
        inventory=inventory,
        notifier=notifier,
        queue=queue,
        idempotency=idempotency,
        reconciler=reconciler,
        propagation=Propagation(settings=settings, keys=keys, targets=targets, inventory=inventory,
                                notifier=notifier, queue=queue, idempotency=idempotency, reconciler=reconciler),
        rotator=Rotator(settings=settings, keys=keys, notifier=notifier, clock=clock, revoked_by=revoked_by),
        retention=retention,
        preflight=Preflight(settings=settings, clock=clock, keys=keys, inventory=inventory,
                            vaults=functools.partial(find_vaults, clients, settings.subscriptions, settings.vaults)),
        estate=EstateReader(settings=settings, clock=clock, keys=keys, inventory=inventory, retention=retention,
                            revoked_by=revoked_by, journal=journal),
        records=records,
        journal=journal,
        runbooks=runbooks,
        usage=usage,
        clients=clients,
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


__all__ = ["MAX_CARRIED_RESOURCES", "EventResult", "Keysteward", "TimerReport", "build", "drain"]
