"""The estate as the on-call page and the gauges see it: every key in scope, its versions with
their state and retention verdict, and every binding with its state and lag.

Reads only. One inventory read serves every key. Binding states come from the reconcile plan
(:func:`shared.reconcile.plan`, pure) so the page and the metrics never disagree with what a
reconcile pass would do:

===================  =========================================================================
state                when
===================  =========================================================================
in-sync              on the current version
updating             behind, and an update is due or running (or a versionless service moving)
held                 behind, and tagged with the hold tag
lagging              versionless and still behind after ``KEYSTEWARD_LAG_ALERT_MINUTES``
failed               behind, and the current version is not acceptable for the service
read-only-stuck      its key cannot be changed after creation and it is not on the current version
revoked              the key is under a revocation, or the service reports its access revoked
unknown              versionless, and the service does not report which version it uses (Kusto)
===================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shared import metrics
from shared.clock import Clock
from shared.config import Settings
from shared.errors import NotFoundError
from shared.inventory import Inventory, by_key
from shared.journal import Journal
from shared.keyvault import KeyStore
from shared.model import Binding, KeyRef, KeyVersion
from shared.reconcile import ActionKind, plan
from shared.retention import BlockerKind, KeyFacts, Verdict
from shared.retirement import Retention
from shared.rotation import managed_max_age
from shared.tags import RETIRED_BY_TAG, REVOKED_BY_TAG

# Which blocker explains a version's wait, when several do (the first present wins): being
# current, then the clock (it ends by itself), then consumers keysteward moves, then those it cannot.
_REASON_ORDER = (BlockerKind.CURRENT, BlockerKind.RETENTION, BlockerKind.BACKUP, BlockerKind.PINNED,
                 BlockerKind.VERSIONLESS, BlockerKind.READ_ONLY, BlockerKind.UNKNOWN)
REASON_ELIGIBLE = "eligible"
"""A version no rule keeps: the next retention sweep retires it (if the key is retire-managed)."""


@dataclass(frozen=True)
class BindingView:
    binding: Binding
    state: str
    reason: str
    versions_behind: int | None
    lag_s: float


@dataclass(frozen=True)
class VersionView:
    version: KeyVersion
    state: str  # current | enabled | disabled | revoked | retired
    verdict: Verdict
    bindings: tuple[BindingView, ...]


@dataclass(frozen=True)
class KeyView:
    key: KeyRef
    versions: tuple[VersionView, ...]  # oldest first
    bindings: tuple[BindingView, ...]
    revoked_by: str | None
    rotation_planned: bool
    error: str | None = None  # the key could not be read (the rest of the estate still is)

    @property
    def current(self) -> KeyVersion | None:
        return self.versions[-1].version if self.versions else None


@dataclass(frozen=True)
class Estate:
    at: datetime
    keys: tuple[KeyView, ...]
    unfinished_runs: Sequence[tuple[str, str, str, float]] = field(default_factory=tuple)  # run, kind, status, age s


def _state_of(kind: ActionKind, reason: str, binding: Binding) -> str:
    match kind:
        case ActionKind.IN_SYNC:
            return metrics.STATE_IN_SYNC
        case ActionKind.VERSIONLESS:
            if reason:
                return metrics.STATE_UPDATING
            return metrics.STATE_UNKNOWN if binding.in_use_version is None else metrics.STATE_IN_SYNC
        case ActionKind.UPDATE | ActionKind.IN_FLIGHT:
            return metrics.STATE_UPDATING
        case ActionKind.HELD:
            return metrics.STATE_HELD
        case ActionKind.LAGGING:
            return metrics.STATE_LAGGING
        case ActionKind.REJECTED:
            return metrics.STATE_FAILED
        case ActionKind.READ_ONLY:
            return metrics.STATE_READ_ONLY_STUCK if reason else metrics.STATE_IN_SYNC
        case ActionKind.REVOKED:
            return metrics.STATE_REVOKED
    return metrics.STATE_FAILED  # pragma: no cover - every ActionKind is listed above


def _version_state(v: KeyVersion, current: KeyVersion | None) -> str:
    tags = {k.lower() for k in v.tags}
    if not v.enabled:
        if REVOKED_BY_TAG in tags:
            return "revoked"
        return "retired" if RETIRED_BY_TAG in tags else "disabled"
    return "current" if current is not None and v.version == current.version else "enabled"


def retirement_reason(verdict: Verdict) -> str:
    """The one reason a version waits (``eligible`` when nothing keeps it)."""
    kinds = {b.kind for b in verdict.blockers}
    return next((k for k in _REASON_ORDER if k in kinds), REASON_ELIGIBLE)


class EstateReader:
    """Reads the estate (for the on-call page and the gauges) from what it uses, built once."""

    def __init__(self, *, settings: Settings, clock: Clock, keys: KeyStore, inventory: Inventory,
                 retention: Retention, revoked_by: Callable[[KeyRef], str | None],
                 journal: Journal | None) -> None:
        self._settings = settings
        self._clock = clock
        self._keys = keys
        self._inventory = inventory
        self._retention = retention
        self._revoked_by = revoked_by
        self._journal = journal  # None without durable storage (the CLI): no runs at all

    def read(self, *, key: KeyRef | None = None) -> Estate:
        """Every key in scope (bound keys and every key of KEYSTEWARD_VAULTS), or only ``key``.

        Raises TransientError when the inventory cannot be read; a key that cannot be read is
        listed with its ``error`` and the others are still shown.
        """
        now = self._clock.now()
        vaults = self._settings.vaults
        grouped = by_key(b for b in self._inventory.bindings(self._settings.subscriptions)
                         if b.key.vault_url in vaults)
        refs: dict[str, KeyRef] = {k: bs[0].key.versionless() for k, bs in grouped.items()}
        if key is None:
            for vault in vaults:
                for ref in self._keys.list_keys(vault):
                    refs.setdefault(ref.key_id, ref.versionless())
        else:
            refs = {key.key_id: key.versionless()}
        out: list[KeyView] = []
        for key_id, ref in sorted(refs.items()):
            try:
                facts = self._retention.key_facts(ref, grouped.get(key_id, []))
                out.append(self._key_view(facts, now=now))
            except NotFoundError as err:
                out.append(KeyView(ref, (), (), None, False, error=str(err)))
        unfinished = tuple((r.run_id, r.kind, r.status, max(0.0, (now - r.created).total_seconds()))
                           for r in self._journal.list_unfinished()) if self._journal is not None else ()
        return Estate(now, tuple(out), unfinished)

    def _key_view(self, facts: KeyFacts, *, now: datetime) -> KeyView:
        current = facts.current
        revoked_by = self._revoked_by(facts.key)
        order = [v.version for v in facts.versions]
        views: list[BindingView] = []
        if current is not None:
            actions = plan(current=current, bindings=facts.bindings, settings=self._settings, now=now,
                           revoked_by=revoked_by)
            for a in actions:
                b = a.binding
                used = b.effective_version
                behind = (order.index(current.version) - order.index(used)) if used in order else None
                on_current = used == current.version or (used is None and b.versionless)
                lag = 0.0 if on_current or current.created is None else (now - current.created).total_seconds()
                views.append(BindingView(b, _state_of(a.kind, a.reason, b), a.reason, behind, max(0.0, lag)))
        else:  # deleted (recoverable) or never readable: its bindings cannot use it
            views = [BindingView(b, metrics.STATE_FAILED, "the key has no readable version", None, 0.0)
                     for b in facts.bindings]
        versions = tuple(
            VersionView(v, _version_state(v, current), self._retention.verdict_for(facts, v.version),
                        tuple(bv for bv in views if bv.binding.effective_version == v.version))
            for v in facts.versions
        )
        planned = False
        if current is not None:
            planned = managed_max_age(facts.key, current, self._settings) is not None
            if not planned and current.expires_on is not None:
                planned = any(a.lower().startswith("rotate") for a in self._keys.rotation_policy(facts.key))
        return KeyView(facts.key, versions, tuple(views), revoked_by, planned)

    def snapshot(self, estate: Estate) -> metrics.EstateSnapshot:
        """The gauges' view of ``estate``."""
        gauges: list[metrics.BindingGauge] = []
        waiting: dict[tuple[str, str], int] = {}
        expires: dict[tuple[str, bool], float] = {}
        revocations: dict[tuple[str, str], float] = {}
        for kv in estate.keys:
            uri = kv.key.uri
            gauges.extend(metrics.BindingGauge(uri, bv.binding.resource_id, bv.binding.service.value, bv.state,
                                               bv.versions_behind, bv.lag_s) for bv in kv.bindings)
            for vv in kv.versions:
                if vv.state == "enabled":  # old and still enabled: awaiting retirement
                    reason = retirement_reason(vv.verdict)
                    waiting[(uri, reason)] = waiting.get((uri, reason), 0) + 1
            current = kv.current
            if current is not None and current.expires_on is not None:
                expires[(uri, kv.rotation_planned)] = (current.expires_on - estate.at).total_seconds()
            if kv.revoked_by is not None and self._journal is not None:
                run = self._journal.get_run(kv.revoked_by)
                revocations[(uri, kv.revoked_by)] = max(0.0, (estate.at - run.created).total_seconds())
        oldest: dict[tuple[str, str], float] = {}
        for _run, kind, status, age in estate.unfinished_runs:
            oldest[(kind, status)] = max(age, oldest.get((kind, status), 0.0))
        return metrics.EstateSnapshot(gauges, waiting, expires, revocations, oldest)

    def measure(self) -> Estate:
        """Reads the estate and hands it to the gauges (the reconcile timer calls this each pass)."""
        estate = self.read()
        metrics.current().observe_estate(self.snapshot(estate))
        return estate


__all__ = ["REASON_ELIGIBLE", "BindingView", "Estate", "EstateReader", "KeyView", "VersionView",
           "retirement_reason"]
