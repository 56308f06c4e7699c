"""Outcome events: one per action keysteward takes or declines, published to an Event Grid
custom topic (``KEYSTEWARD_OUTCOME_TOPIC``) so operators route them to their alerting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from shared.errors import translate

EVENT_PREFIX = "KeySteward."


@dataclass(frozen=True)
class Outcome:
    """What happened to one binding or key. ``kind`` e.g. BindingUpdated, BindingFailed."""

    kind: str
    subject: str  # resource id or key URI
    data: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"  # info | warning | incident


class Notifier(Protocol):
    def publish(self, outcomes: Sequence[Outcome]) -> None: ...


class LogNotifier:
    """No topic configured: outcomes go to the log only."""

    def publish(self, outcomes: Sequence[Outcome]) -> None:
        log = structlog.get_logger("keysteward.outcome")
        for o in outcomes:
            log.info("outcome", kind=o.kind, subject=o.subject, severity=o.severity, **o.data)


class RecordingNotifier:
    """Keeps outcomes in memory (CLI summaries, tests at this Protocol boundary)."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def publish(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes.extend(outcomes)


class EventGridNotifier:
    """Publishes outcomes to an Event Grid custom topic with ``EventGridPublisherClient``."""

    # Event Grid accepts up to 1 MB per publish call; 100 small events stay far below it.
    BATCH = 100

    def __init__(self, endpoint: str, credential: TokenCredential, **client_kwargs: Any) -> None:
        self._client = EventGridPublisherClient(endpoint, credential, **client_kwargs)
        self._log = LogNotifier()

    def publish(self, outcomes: Sequence[Outcome]) -> None:
        self._log.publish(outcomes)
        events = [
            EventGridEvent(
                subject=o.subject,
                event_type=EVENT_PREFIX + o.kind,
                data={**o.data, "severity": o.severity},
                data_version="1.0",
            )
            for o in outcomes
        ]
        for i in range(0, len(events), self.BATCH):
            try:
                self._client.send(events[i : i + self.BATCH])
            except AzureError as err:
                raise translate(err, what="publish outcome events") from err
