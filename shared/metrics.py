"""keysteward's metrics: a thin wrapper over the OpenTelemetry meter API.

Every instrument keysteward records is created here, once, so that the alert rules and the
workbook in ``infra/`` (and their tests) can check the names against :data:`METRIC_NAMES`.
Names are dotted, lower-case and carry their unit in ``unit`` (OpenTelemetry naming
guidelines); attributes use a semantic convention where one applies:

==================================  ========  ===================================================
metric                              kind      attributes
==================================  ========  ===================================================
keysteward.binding.versions_behind  gauge     keysteward.key, cloud.resource_id, keysteward.service
keysteward.binding.lag              gauge s   idem: seconds since the key's current version was
                                              created, for a binding not on it (0 when on it)
keysteward.bindings                 gauge     keysteward.binding.state, keysteward.service
keysteward.versions.awaiting_       gauge     keysteward.key, keysteward.retention.reason
retirement
keysteward.key.expires_in           gauge s   keysteward.key, keysteward.rotation.planned
keysteward.revocation.age           gauge s   keysteward.key, keysteward.run.id
keysteward.runbook.unfinished.age   gauge s   keysteward.run.kind, keysteward.run.status
keysteward.runbook.runs             counter   keysteward.run.kind, keysteward.run.outcome
keysteward.runbook.duration         hist. s   idem
keysteward.events                   counter   cloudevents.event.type, keysteward.event.outcome
keysteward.events.duplicates        counter   cloudevents.event.type
keysteward.outcomes                 counter   keysteward.outcome.kind, keysteward.outcome.severity
keysteward.arm.calls                counter   cloud.account.id, http.request.method,
                                              http.response.status_code
keysteward.arm.throttled            counter   cloud.account.id (answers 429)
keysteward.arm.pacing.wait          hist. s   cloud.account.id (client-side write pacing)
==================================  ========  ===================================================

``cloud.account.id`` is the Azure subscription id and ``cloud.resource_id`` the ARM resource
id (OpenTelemetry's cloud conventions); ``cloudevents.event.type`` is the Event Grid event type.

The gauges are observed from the last :class:`EstateSnapshot` handed to
:meth:`Metrics.observe_estate` (the reconcile timer measures the estate on every pass), so a
binding that disappears stops being reported. Without ``APPLICATIONINSIGHTS_CONNECTION_STRING``
nothing is exported and nothing fails: the API's default provider records nothing.
:func:`configure_exporter` imports the Azure Monitor distro only when a connection string is
present (it is heavy to import; cold starts do not pay for it otherwise).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry import metrics as otel
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

METER_NAME: Final = "keysteward"
CONNECTION_SETTING: Final = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_SETTING: Final = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"

# Attribute names (OpenTelemetry semantic conventions where one applies).
ATTR_KEY: Final = "keysteward.key"
ATTR_RESOURCE: Final = "cloud.resource_id"
ATTR_SUBSCRIPTION: Final = "cloud.account.id"
ATTR_SERVICE: Final = "keysteward.service"
ATTR_STATE: Final = "keysteward.binding.state"
ATTR_REASON: Final = "keysteward.retention.reason"
ATTR_PLANNED: Final = "keysteward.rotation.planned"
ATTR_RUN: Final = "keysteward.run.id"
ATTR_RUN_KIND: Final = "keysteward.run.kind"
ATTR_RUN_STATUS: Final = "keysteward.run.status"
ATTR_RUN_OUTCOME: Final = "keysteward.run.outcome"
ATTR_EVENT_TYPE: Final = "cloudevents.event.type"
ATTR_EVENT_OUTCOME: Final = "keysteward.event.outcome"
ATTR_OUTCOME_KIND: Final = "keysteward.outcome.kind"
ATTR_OUTCOME_SEVERITY: Final = "keysteward.outcome.severity"
ATTR_METHOD: Final = "http.request.method"
ATTR_STATUS_CODE: Final = "http.response.status_code"

VERSIONS_BEHIND: Final = "keysteward.binding.versions_behind"
BINDING_LAG: Final = "keysteward.binding.lag"
BINDINGS: Final = "keysteward.bindings"
AWAITING_RETIREMENT: Final = "keysteward.versions.awaiting_retirement"
KEY_EXPIRES_IN: Final = "keysteward.key.expires_in"
REVOCATION_AGE: Final = "keysteward.revocation.age"
UNFINISHED_RUN_AGE: Final = "keysteward.runbook.unfinished.age"
RUNS: Final = "keysteward.runbook.runs"
RUN_DURATION: Final = "keysteward.runbook.duration"
EVENTS: Final = "keysteward.events"
DUPLICATES: Final = "keysteward.events.duplicates"
OUTCOMES: Final = "keysteward.outcomes"
ARM_CALLS: Final = "keysteward.arm.calls"
ARM_THROTTLED: Final = "keysteward.arm.throttled"
PACING_WAIT: Final = "keysteward.arm.pacing.wait"

METRIC_NAMES: Final = frozenset({
    VERSIONS_BEHIND, BINDING_LAG, BINDINGS, AWAITING_RETIREMENT, KEY_EXPIRES_IN, REVOCATION_AGE,
    UNFINISHED_RUN_AGE, RUNS, RUN_DURATION, EVENTS, DUPLICATES, OUTCOMES, ARM_CALLS, ARM_THROTTLED, PACING_WAIT,
})
"""Every metric name keysteward records (the infra templates may query only these)."""

# Binding states (the attribute keysteward.binding.state).
STATE_IN_SYNC: Final = "in-sync"
STATE_UPDATING: Final = "updating"
STATE_HELD: Final = "held"
STATE_LAGGING: Final = "lagging"
STATE_FAILED: Final = "failed"
STATE_READ_ONLY_STUCK: Final = "read-only-stuck"
STATE_REVOKED: Final = "revoked"
STATE_UNKNOWN: Final = "unknown"  # versionless, and the service does not report the version it uses (Kusto)
BINDING_STATES: Final = (STATE_IN_SYNC, STATE_UPDATING, STATE_HELD, STATE_LAGGING, STATE_FAILED,
                         STATE_READ_ONLY_STUCK, STATE_REVOKED, STATE_UNKNOWN)

# Outcome kinds that end a runbook run, and the run kind each belongs to.
_RUN_OUTCOMES: Final = {"KeyRevoked": "revoke", "KeyRestored": "restore",
                        "RevocationFailed": "revoke", "RestoreFailed": "restore"}
# Event ids remembered per worker to recognise a redelivered event (Event Grid delivers at
# least once; a worker sees a few thousand events an hour at most).
_SEEN_EVENTS_MAX: Final = 10_000


@dataclass(frozen=True)
class BindingGauge:
    """One binding's place in the estate (see :mod:`shared.estate`)."""

    key: str
    resource_id: str
    service: str
    state: str
    versions_behind: int | None  # None: the version the service uses is not known
    lag_s: float


@dataclass(frozen=True)
class EstateSnapshot:
    """What the gauges report until the next snapshot replaces it."""

    bindings: Sequence[BindingGauge] = ()
    awaiting_retirement: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (key, reason) -> versions
    expires_in: Mapping[tuple[str, bool], float] = field(default_factory=dict)  # (key, planned) -> seconds
    revocations: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (key, run) -> seconds in force
    unfinished_runs: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (kind, status) -> oldest s


class Metrics:
    """keysteward's instruments on one meter. Recording never raises into the caller's path."""

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._snapshot = EstateSnapshot()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._events = meter.create_counter(EVENTS, unit="{event}", description="Key Vault events handled")
        self._duplicates = meter.create_counter(
            DUPLICATES, unit="{event}", description="Events whose id this worker had already handled")
        self._outcomes = meter.create_counter(OUTCOMES, unit="{outcome}", description="Outcome events published")
        self._runs = meter.create_counter(RUNS, unit="{run}", description="Runbook runs finished")
        self._duration = meter.create_histogram(RUN_DURATION, unit="s", description="Runbook run duration")
        self._arm_calls = meter.create_counter(ARM_CALLS, unit="{request}", description="ARM requests sent")
        self._throttled = meter.create_counter(ARM_THROTTLED, unit="{request}", description="ARM answers 429")
        self._pacing = meter.create_histogram(PACING_WAIT, unit="s", description="Client-side ARM write pacing waits")
        meter.create_observable_gauge(VERSIONS_BEHIND, [self._observe_behind], unit="{version}",
                                      description="Versions between a binding's and its key's current version")
        meter.create_observable_gauge(BINDING_LAG, [self._observe_lag], unit="s",
                                      description="Seconds since the key's current version was created, "
                                                  "for a binding not on it")
        meter.create_observable_gauge(BINDINGS, [self._observe_states], unit="{binding}",
                                      description="Bindings by state")
        meter.create_observable_gauge(AWAITING_RETIREMENT, [self._observe_retirement], unit="{version}",
                                      description="Old enabled versions awaiting retirement, by reason")
        meter.create_observable_gauge(KEY_EXPIRES_IN, [self._observe_expiry], unit="s",
                                      description="Seconds until the key's current version expires")
        meter.create_observable_gauge(REVOCATION_AGE, [self._observe_revocations], unit="s",
                                      description="Seconds a whole-key revocation has been in force")
        meter.create_observable_gauge(UNFINISHED_RUN_AGE, [self._observe_unfinished], unit="s",
                                      description="Age of the oldest unfinished runbook run")

    # ---- recording ----------------------------------------------------------------------------
    def event_handled(self, event_type: str, outcome: str, event_id: object = None) -> None:
        """One Key Vault event handled with ``outcome`` (the core's action, or dropped, ignored,
        failed). An ``event_id`` this worker handled before also counts as a duplicate."""
        # Only Key Vault's own types are kept as they are: a malformed event's type is anyone's text.
        etype = event_type if event_type.startswith("Microsoft.KeyVault.") and len(event_type) <= 100 else "other"
        self._events.add(1, {ATTR_EVENT_TYPE: etype, ATTR_EVENT_OUTCOME: outcome})
        # The id of a dropped event may be anything the sender put there: only a string counts.
        if isinstance(event_id, str) and 0 < len(event_id) <= 256 and self._already_seen(event_id):
            self._duplicates.add(1, {ATTR_EVENT_TYPE: etype})

    def _already_seen(self, event_id: str) -> bool:
        with self._lock:
            if event_id in self._seen:
                self._seen.move_to_end(event_id)
                return True
            self._seen[event_id] = None
            if len(self._seen) > _SEEN_EVENTS_MAX:
                self._seen.popitem(last=False)
            return False

    def outcomes_published(self, outcomes: Iterable[Any]) -> None:
        """Outcome events (:class:`shared.notify.Outcome`): counted by kind and severity; the
        ones that end a runbook run are also counted as runs, by kind and outcome."""
        for o in outcomes:
            kind, severity = str(o.kind), str(o.severity)
            self._outcomes.add(1, {ATTR_OUTCOME_KIND: kind, ATTR_OUTCOME_SEVERITY: severity})
            run_kind = _RUN_OUTCOMES.get(kind)
            if run_kind is not None:
                outcome = "failed" if kind.endswith("Failed") else str(o.data.get("status") or "unknown")
                self._runs.add(1, {ATTR_RUN_KIND: run_kind, ATTR_RUN_OUTCOME: outcome})

    def run_finished(self, kind: str, outcome: str, seconds: float) -> None:
        """A runbook run's duration, from creation to its final status."""
        self._duration.record(max(0.0, seconds), {ATTR_RUN_KIND: kind, ATTR_RUN_OUTCOME: outcome})

    def runs_resumed(self, views: Iterable[Any]) -> None:
        """The runs a resume sweep drove (:class:`shared.runbooks.RunView`): the ones it finished
        record their duration. Only the sweep finishing a run sees it finish here, once."""
        for view in views:
            run = view.run
            if run.finished:
                self.run_finished(run.kind, run.status, (run.updated - run.created).total_seconds())

    def arm_call(self, subscription: str, method: str, status: int) -> None:
        attrs: dict[str, str | int] = {ATTR_SUBSCRIPTION: subscription, ATTR_METHOD: method.upper(),
                                       ATTR_STATUS_CODE: status}
        self._arm_calls.add(1, attrs)
        if status == 429:
            self._throttled.add(1, {ATTR_SUBSCRIPTION: subscription})

    def pacing_wait(self, subscription: str, seconds: float) -> None:
        self._pacing.record(max(0.0, seconds), {ATTR_SUBSCRIPTION: subscription})

    def observe_estate(self, snapshot: EstateSnapshot) -> None:
        """Replaces what the gauges report."""
        with self._lock:
            self._snapshot = snapshot

    # ---- gauge callbacks (called by the SDK at each collection) ---------------------------------
    def _current(self) -> EstateSnapshot:
        with self._lock:
            return self._snapshot

    def _observe_behind(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(b.versions_behind, {ATTR_KEY: b.key, ATTR_RESOURCE: b.resource_id, ATTR_SERVICE: b.service})
                for b in self._current().bindings if b.versions_behind is not None]

    def _observe_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(b.lag_s, {ATTR_KEY: b.key, ATTR_RESOURCE: b.resource_id, ATTR_SERVICE: b.service})
                for b in self._current().bindings]

    def _observe_states(self, _options: CallbackOptions) -> Iterable[Observation]:
        counts: dict[tuple[str, str], int] = {}
        for b in self._current().bindings:
            counts[(b.state, b.service)] = counts.get((b.state, b.service), 0) + 1
        return [Observation(n, {ATTR_STATE: state, ATTR_SERVICE: service}) for (state, service), n in counts.items()]

    def _observe_retirement(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {ATTR_KEY: key, ATTR_REASON: reason})
                for (key, reason), n in self._current().awaiting_retirement.items()]

    def _observe_expiry(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s, {ATTR_KEY: key, ATTR_PLANNED: planned})
                for (key, planned), s in self._current().expires_in.items()]

    def _observe_revocations(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s, {ATTR_KEY: key, ATTR_RUN: run})
                for (key, run), s in self._current().revocations.items()]

    def _observe_unfinished(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s, {ATTR_RUN_KIND: kind, ATTR_RUN_STATUS: status})
                for (kind, status), s in self._current().unfinished_runs.items()]


def subscription_of(url: str) -> str:
    """The subscription id in an ARM URL's path (lower-case), ``none`` when there is none."""
    parts = urlsplit(url).path.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == "subscriptions" and parts[i + 1]:
            return parts[i + 1].lower()[:64]
    return "none"


_lock = threading.Lock()
_metrics: Metrics | None = None


def current() -> Metrics:
    """The process's metrics: on the global meter provider unless :func:`install` chose one.

    The OpenTelemetry API hands out proxy instruments until a provider is set, so recording
    before :func:`configure_exporter` (or with no exporter at all) is safe and cheap.
    """
    global _metrics  # noqa: PLW0603 - one set of instruments per process, like the meter provider itself
    with _lock:
        if _metrics is None:
            _metrics = Metrics(otel.get_meter(METER_NAME))
        return _metrics


def install(provider: MeterProvider | None) -> Metrics:
    """Records on ``provider`` from now on (``None``: back to the global provider); returns the
    new instruments. Tests hand in an SDK provider with an in-memory reader."""
    global _metrics  # noqa: PLW0603
    with _lock:
        _metrics = Metrics(provider.get_meter(METER_NAME) if provider is not None else otel.get_meter(METER_NAME))
        return _metrics


def configure_exporter(environ: Mapping[str, str]) -> bool:
    """Starts exporting to Azure Monitor when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set;
    returns whether it did. Without it: no exporter, no import of the distro, no error.

    When ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` says ``Authorization=AAD`` (the template
    turns local authentication off on the component), the exporter signs in with the managed
    identity it names (``ClientId=...``).
    """
    connection = (environ.get(CONNECTION_SETTING) or "").strip()
    if not connection:
        return False
    # Imported here: the distro pulls in the SDK and its instrumentations (cold-start cost).
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415

    options: dict[str, Any] = {}
    auth = _auth_fields(environ.get(AUTHENTICATION_SETTING) or "")
    if auth.get("authorization", "").lower() == "aad":
        from azure.identity import ManagedIdentityCredential  # noqa: PLC0415 - only with Entra ID auth

        client_id = auth.get("clientid")
        options["credential"] = ManagedIdentityCredential(client_id=client_id) if client_id else \
            ManagedIdentityCredential()
    configure_azure_monitor(connection_string=connection, logger_name="keysteward", **options)
    return True


def _auth_fields(text: str) -> dict[str, str]:
    """``ClientId=...;Authorization=AAD`` as ``{"clientid": ..., "authorization": ...}``."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


__all__ = [
    "BINDING_STATES",
    "METRIC_NAMES",
    "BindingGauge",
    "EstateSnapshot",
    "Metrics",
    "configure_exporter",
    "current",
    "install",
    "subscription_of",
]
