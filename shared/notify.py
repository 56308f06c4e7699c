"""Outcome events: one per action keysteward takes or declines, published to an Event Grid
custom topic (``KEYSTEWARD_OUTCOME_TOPIC``) so operators route them to their alerting.

Delivery is at least once: a run that dies between publishing and recording that it did
publishes again when resumed. An outcome with an ``event_id`` (the runbooks use
``<run id>.<kind>``) is published under that id every time, so a subscriber can drop the
repeat; Event Grid itself does not deduplicate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.eventgrid import EventGridEvent

# azure-eventgrid 4.22's public EventGridPublisherClient builds this client for a basic topic
# without passing on its keyword arguments (transport, connection_verify, retry settings),
# so they would be silently dropped; this is the client it builds, given them directly.
from azure.eventgrid._legacy import EventGridPublisherClient

from shared import metrics
from shared.errors import PermanentError, translate

EVENT_PREFIX = "KeySteward."


@dataclass(frozen=True)
class Outcome:
    """What happened to one binding or key. ``kind`` e.g. BindingUpdated, BindingFailed."""

    kind: str
    subject: str  # resource id or key URI
    data: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"  # info | warning | incident
    event_id: str | None = None  # a stable id makes a re-published outcome recognisable


class Notifier(Protocol):
    def publish(self, outcomes: Sequence[Outcome]) -> None: ...


class LogNotifier:
    """No topic configured: outcomes go to the log only."""

    def publish(self, outcomes: Sequence[Outcome]) -> None:
        log = structlog.get_logger("keysteward.outcome")
        metrics.current().outcomes_published(outcomes)
        for o in outcomes:
            log.info("outcome", kind=o.kind, subject=o.subject, severity=o.severity, **o.data)


class RecordingNotifier:
    """Keeps outcomes in memory (CLI summaries, tests at this Protocol boundary)."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def publish(self, outcomes: Sequence[Outcome]) -> None:
        metrics.current().outcomes_published(outcomes)
        self.outcomes.extend(outcomes)


class EventGridNotifier:
    """Publishes outcomes to an Event Grid custom topic with ``EventGridPublisherClient``.

    Events go out in requests of at most :attr:`MAX_REQUEST_BYTES` (Event Grid accepts 1 MB
    per request). An outcome whose event alone is larger (nothing keysteward publishes comes
    near: lists are sampled) is published with its data replaced by a note saying so, rather
    than failing the step that publishes it.
    """

    MAX_REQUEST_BYTES = 1_000_000  # under Event Grid's 1 MB, leaving room for the array
    MAX_EVENTS = 100

    def __init__(self, endpoint: str, credential: TokenCredential, **client_kwargs: Any) -> None:
        self._client = EventGridPublisherClient(endpoint, credential, **client_kwargs)
        self._log = LogNotifier()

    def _event(self, o: Outcome) -> tuple[EventGridEvent, int]:
        data: dict[str, Any] = {**o.data, "severity": o.severity}
        size = len(json.dumps(data, default=str)) + len(o.subject) + 512
        if size > self.MAX_REQUEST_BYTES:
            data = {"severity": o.severity, "truncated": True, "originalBytes": size,
                    "note": "outcome too large for one event; see the keysteward log or run journal"}
            size = len(json.dumps(data)) + len(o.subject) + 512
        extra: dict[str, Any] = {"id": o.event_id} if o.event_id else {}
        event = EventGridEvent(subject=o.subject, event_type=EVENT_PREFIX + o.kind, data=data,
                               data_version="1.0", **extra)
        return event, size

    def publish(self, outcomes: Sequence[Outcome]) -> None:
        self._log.publish(outcomes)
        batch: list[EventGridEvent] = []
        batch_bytes = 0
        for o in outcomes:
            event, size = self._event(o)
            if batch and (batch_bytes + size > self.MAX_REQUEST_BYTES or len(batch) >= self.MAX_EVENTS):
                self._send(batch)
                batch, batch_bytes = [], 0
            batch.append(event)
            batch_bytes += size
        if batch:
            self._send(batch)

    def _send(self, events: list[EventGridEvent]) -> None:
        try:
            self._client.send(events)
        except AzureError as err:
            raise translate(err, what="publish outcome events") from err
        except (TypeError, ValueError) as err:  # an event the SDK cannot serialise
            raise PermanentError(f"publish outcome events: {err}", code="OutcomeNotSerialisable") from err
