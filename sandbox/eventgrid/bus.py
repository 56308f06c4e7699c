"""Event Grid: :class:`EventGridBus`, the world's bus: subscriptions, publishing, the admin
views, and (from :class:`sandbox.eventgrid.dispatch._Dispatch`) delivery on sandbox time."""

from __future__ import annotations

import copy
import random
import threading
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from sandbox.clock import isoformat
from sandbox.eventgrid.dispatch import _Dispatch
from sandbox.eventgrid.model import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TTL,
    EVENT_GRID_SCHEMA,
    Delivery,
    JsonObj,
    LocalEndpoint,
    Subscription,
)
from sandbox.eventgrid.webhook import WebhookSender

if TYPE_CHECKING:
    from sandbox.world import World


class EventGridBus(_Dispatch):
    """Subscriptions, pending deliveries, the delivery log and the dead-letter list."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._lock = threading.Lock()
        self._rng = random.Random(world.seed)
        self._seq = 0
        self.subscriptions: dict[str, Subscription] = {}
        self.pending: list[Delivery] = []
        self.deliveries: list[JsonObj] = []  # the delivery log, one entry per event per attempt
        self.dead_letters: list[JsonObj] = []
        self.published: list[JsonObj] = []
        # Transport configuration, kept across reset(): set by the loopback server and by tests.
        self.admin_base_url = "https://sandbox.local"
        self.sender = WebhookSender()

    # ---- configuration ---------------------------------------------------------------------
    @property
    def ca_bundle(self) -> str | None:
        """The CA bundle that verifies https webhooks (the loopback server sets it)."""
        return self.sender.ca_bundle

    @ca_bundle.setter
    def ca_bundle(self, value: str | None) -> None:
        self.sender.ca_bundle = value

    def register_local_endpoint(self, base_url: str, handler: LocalEndpoint) -> None:
        """Sends deliveries for ``base_url``'s scheme and host to ``handler`` instead of a socket."""
        self.sender.register_local_endpoint(base_url, handler)

    def unregister_local_endpoint(self, base_url: str) -> None:
        self.sender.unregister_local_endpoint(base_url)

    def reset(self) -> None:
        """Forgets subscriptions, queues and logs; keeps transport configuration."""
        with self._lock:
            self.subscriptions.clear()
            self.pending.clear()
            self.deliveries.clear()
            self.dead_letters.clear()
            self.published.clear()
            self._seq = 0

    # ---- subscriptions -----------------------------------------------------------------------
    def subscribe(
        self,
        *,
        endpoint: str,
        schema: str = EVENT_GRID_SCHEMA,
        event_types: list[str] | None = None,
        topic: str | None = None,
        duplicate_rate: float = 0.0,
        shuffle: bool = False,
        name: str | None = None,
        max_events_per_batch: int = 1,
        max_delivery_attempts: int = DEFAULT_MAX_ATTEMPTS,
        event_ttl: timedelta = DEFAULT_TTL,
    ) -> Subscription:
        """Creates a subscription; validation happens on the next pump. Arguments are trusted
        (the admin API checks them)."""
        now = self.world.clock.now()
        sub_id = uuid.uuid4().hex[:12]
        sub = Subscription(
            id=sub_id,
            name=name or f"sandbox-{sub_id}",
            endpoint=endpoint,
            schema=schema,
            event_types=list(event_types or []),
            topic=topic,
            duplicate_rate=duplicate_rate,
            shuffle=shuffle,
            max_events_per_batch=max_events_per_batch,
            max_delivery_attempts=max_delivery_attempts,
            event_ttl=event_ttl,
            created=now,
            validation_code=str(uuid.uuid4()).upper(),
            validation_due=now,
        )
        with self._lock:
            self.subscriptions[sub_id] = sub
        return sub

    def unsubscribe(self, sub_id: str) -> bool:
        """Deletes a subscription and its pending deliveries; False when it does not exist."""
        with self._lock:
            if self.subscriptions.pop(sub_id, None) is None:
                return False
            self.pending = [d for d in self.pending if d.subscription_id != sub_id]
            return True

    def remove_for_topic(self, topic: str) -> int:
        """Drops subscriptions scoped to ``topic`` (a vault's soft delete removes them in Azure)."""
        with self._lock:
            gone = [s.id for s in self.subscriptions.values() if s.topic and s.topic.lower() == topic.lower()]
        for sub_id in gone:
            self.unsubscribe(sub_id)
        return len(gone)

    def describe(self, sub_id: str) -> JsonObj | None:
        with self._lock:
            sub = self.subscriptions.get(sub_id)
            if sub is None:
                return None
            out = sub.describe(self.validation_url(sub))
            out["pending"] = sum(len(d.events) for d in self.pending if d.subscription_id == sub_id)
            return out

    def describe_all(self) -> list[JsonObj]:
        with self._lock:
            ids = list(self.subscriptions)
        return [d for d in (self.describe(i) for i in ids) if d is not None]

    def validate_manually(self, sub_id: str, code: str) -> bool:
        """The ``validationUrl`` path: a GET with the right code validates the subscription."""
        with self._lock:
            sub = self.subscriptions.get(sub_id)
            if sub is None or code != sub.validation_code:
                return False
            sub.validated = True
            return True

    # ---- events ------------------------------------------------------------------------------
    def publish(self, events: list[JsonObj]) -> None:
        """Queues each Event Grid schema event for every matching subscription, due now."""
        now = self.world.clock.now()
        with self._lock:
            for raw in events:
                event = copy.deepcopy(raw)
                event.setdefault("id", str(uuid.uuid4()))
                event.setdefault("eventTime", isoformat(now))
                event.setdefault("dataVersion", "1")
                event.setdefault("metadataVersion", "1")
                self.published.append(event)
                for sub in self.subscriptions.values():
                    if sub.wants(event):
                        self.pending.append(
                            Delivery(subscription_id=sub.id, events=[event], published=now, due=now)
                        )

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(d.events) for d in self.pending)

    def deliveries_since(self, seq: int) -> list[JsonObj]:
        with self._lock:
            return [dict(d) for d in self.deliveries if d["seq"] > seq]
