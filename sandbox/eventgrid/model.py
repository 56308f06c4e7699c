"""Event Grid: the retry rules, subscriptions, pending deliveries and the jobs a pump carries out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sandbox.clock import isoformat

JsonObj = dict[str, Any]

EVENT_GRID_SCHEMA = "EventGridSchema"
CLOUD_EVENT_SCHEMA = "CloudEventSchemaV1_0"
SCHEMAS = (EVENT_GRID_SCHEMA, CLOUD_EVENT_SCHEMA)

VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
VALIDATION_ORIGIN = "eventgrid.azure.net"
CLOUD_EVENTS_BATCH = "application/cloudevents-batch+json; charset=utf-8"

# Event Grid's documented retry schedule; after the listed waits it retries every 12 hours.
RETRY_SCHEDULE_S = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600)
RETRY_LATER_S = 43200
DEFAULT_MAX_ATTEMPTS = 30
DEFAULT_TTL = timedelta(hours=24)
# Event Grid does not retry these: the endpoint said the request itself is wrong or refused.
NOT_RETRIED = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 413: "RequestEntityTooLarge"}
# A duplicate arrives this many sandbox seconds (at most) after the original delivery.
DUPLICATE_DELAY_S = (1.0, 30.0)
# How long the default sender waits for a webhook (Event Grid gives up after 30 s).
SEND_TIMEOUT_S = 30.0

# (method, path with query, headers, body) -> (status, headers, body)
LocalEndpoint = Callable[[str, str, dict[str, str], bytes], tuple[int, Mapping[str, str], bytes]]


def retry_delay_s(attempts_made: int) -> int:
    """Seconds to wait after the ``attempts_made``-th failed attempt (1-based)."""
    if attempts_made <= len(RETRY_SCHEDULE_S):
        return RETRY_SCHEDULE_S[attempts_made - 1]
    return RETRY_LATER_S


@dataclass
class Subscription:
    """A webhook subscription. ``topic`` narrows it to one vault's resource id (None = all)."""

    id: str
    name: str
    endpoint: str
    schema: str
    event_types: list[str]
    topic: str | None
    duplicate_rate: float
    shuffle: bool
    max_events_per_batch: int
    max_delivery_attempts: int
    event_ttl: timedelta
    created: datetime
    validation_code: str
    validated: bool = False
    validation_attempts: int = 0
    validation_due: datetime | None = None
    validation_in_flight: bool = False
    last_validation_status: int | None = None

    def wants(self, event: JsonObj) -> bool:
        if self.event_types and str(event.get("eventType", "")).lower() not in {
            t.lower() for t in self.event_types
        }:
            return False
        return self.topic is None or str(event.get("topic", "")).lower() == self.topic.lower()

    def describe(self, validation_url: str) -> JsonObj:
        return {
            "id": self.id,
            "name": self.name,
            "endpoint": self.endpoint,
            "schema": self.schema,
            "event_types": list(self.event_types),
            "topic": self.topic,
            "duplicate_rate": self.duplicate_rate,
            "shuffle": self.shuffle,
            "max_events_per_batch": self.max_events_per_batch,
            "max_delivery_attempts": self.max_delivery_attempts,
            "event_ttl_minutes": self.event_ttl.total_seconds() / 60,
            "created": isoformat(self.created),
            "provisioningState": "Succeeded" if self.validated else "Creating",
            "validation": {
                "state": "Validated" if self.validated else "Pending",
                "attempts": self.validation_attempts,
                "last_status": self.last_validation_status,
                "validationUrl": validation_url,
            },
        }


@dataclass
class Delivery:
    """Events waiting to be (re)sent to one subscription as one POST."""

    subscription_id: str
    events: list[JsonObj]
    published: datetime
    due: datetime
    attempts: int = 0
    duplicate: bool = False
    in_flight: bool = False
    seq: int = 0


@dataclass
class _Job:
    """One HTTP exchange decided under the bus lock and carried out outside it."""

    kind: str  # "validate" | "deliver"
    subscription: Subscription
    delivery: Delivery | None = None
    payload: list[JsonObj] = field(default_factory=list)

