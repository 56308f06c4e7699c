"""Event Grid: subscriptions, webhook validation and at-least-once delivery on sandbox time.

The Key Vault data plane calls :meth:`EventGridBus.publish` with Event Grid schema events
(``KeyNewVersionCreated``, ``KeyNearExpiry``, ``KeyExpired``); each subscription that exists at
that moment and whose filter matches gets its own copy queued. :meth:`EventGridBus.pump` sends
whatever is due, the way Event Grid does it:

- a webhook is validated before its first event (Event Grid schema: a POST carrying one
  ``Microsoft.EventGrid.SubscriptionValidationEvent``, answered 200 ``{"validationResponse": code}``;
  CloudEvents: an HTTP OPTIONS with ``WebHook-Request-Origin``, answered 2xx with
  ``WebHook-Allowed-Origin``); until then events wait;
- every delivery is a POST of a JSON array with ``aeg-*`` headers; only 200-204 count as success;
- failures are retried after 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then
  every 12 h, up to 30 attempts or a 24 h time to live; 400, 401, 403 and 413 are not retried
  and go straight to the dead-letter list, as do events whose attempts or TTL run out;
- a subscription may ask for duplicates (a delivered event is delivered again a little later)
  and for shuffled order, the two liberties Event Grid takes that consumers must survive.

Every attempt is recorded in :attr:`EventGridBus.deliveries` (seq, event id and type,
subscription, attempt, status code, time, outcome).

Locking: ``publish`` and the admin calls run under ``world.lock`` and only touch the bus's own
queues under its small lock. Sending never happens under ``world.lock`` (a webhook may call
back into the sandbox): when ``pump`` finds that its thread holds ``world.lock`` it leaves the
work queued, and the world pumps again once the request is answered.

The package: ``model`` (the retry rules, subscriptions, deliveries), ``webhook`` (the HTTP side:
one exchange, the handshakes and headers Event Grid sends, CloudEvents rendering),
``dispatch`` (the delivery engine: what is due, batching, what each answer does) and ``bus``
(:class:`EventGridBus`: subscriptions, publishing, the admin views).
"""

from __future__ import annotations

from sandbox.eventgrid.bus import EventGridBus
from sandbox.eventgrid.model import RETRY_SCHEDULE_S, SCHEMAS, Delivery, LocalEndpoint, Subscription, retry_delay_s

__all__ = [
    "RETRY_SCHEDULE_S",
    "SCHEMAS",
    "Delivery",
    "EventGridBus",
    "LocalEndpoint",
    "Subscription",
    "retry_delay_s",
]
