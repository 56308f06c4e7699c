"""Short-lived idempotency records for Key Vault events: a duplicate delivery is a no-op, and a
burst of events for one key makes one reconcile pass.

Modelled on AWS Lambda Powertools' idempotency utility: before handling, a record keyed by a
hash of the idempotency key (here the Event Grid event id) is inserted conditionally as
``INPROGRESS`` with an expiry; a successful handling marks it ``COMPLETED``; a failure deletes
it so that the redelivery runs again. A record that exists and is ``COMPLETED`` (and not
expired) means the event was handled: the delivery is a no-op. One still ``INPROGRESS`` means
another invocation is handling it right now (Powertools raises ``IdempotencyAlreadyInProgress``;
the caller here raises a TransientError so Event Grid redelivers later); an ``INPROGRESS``
record older than :data:`IN_PROGRESS_TIMEOUT` (longer than any invocation runs) is taken over.

Coalescing: after a pass that reconciled a key to its current version ``V`` without failures,
the key's record notes ``V`` and when Key Vault created it. A later event for that key whose
version is ``V``, or whose event time is not after ``V``'s creation (so ``V`` already
superseded it), is covered by that pass: it changes nothing, since a pass always moves every
binding to the key's *current* version, read live. The timer's full pass remains the safety
net for anything a record could hide.

Records live in their own table (``<prefix>idempotency``) of the journal's storage account.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import ConfigError, translate

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient

    from shared.clock import Clock

# Longer than any invocation runs (the Functions host's default timeout on Flex Consumption is
# 30 minutes): an INPROGRESS record older than this was left by a crashed invocation.
IN_PROGRESS_TIMEOUT = timedelta(minutes=30)
TABLE_SUFFIX = "idempotency"
EVENT_PARTITION = "event"
KEY_PARTITION = "key"


class Claim(StrEnum):
    NEW = "new"  # handle the event
    DONE = "done"  # handled before: a no-op
    IN_PROGRESS = "in-progress"  # another invocation handles it now: redeliver later


@dataclass(frozen=True)
class PassMark:
    """The version a key was last reconciled to, and when Key Vault created that version."""

    version: str
    created: datetime | None


def _row(text: str) -> str:
    # Event ids and key URIs may hold characters Table storage refuses in keys ('/', '#', '?').
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class IdempotencyStore(Protocol):
    def claim(self, event_id: str) -> Claim:
        """Claims ``event_id`` for handling (see :class:`Claim`)."""
        ...

    def complete(self, event_id: str) -> None:
        """The event was handled: duplicates are no-ops until the record expires."""
        ...

    def release(self, event_id: str) -> None:
        """Handling failed: forget the claim so a redelivery runs."""
        ...

    def last_pass(self, key_uri: str) -> PassMark | None:
        """What the last complete pass for the (versionless) key reconciled to; ``None``: none known."""
        ...

    def mark_pass(self, key_uri: str, mark: PassMark) -> None:
        ...


def covers(mark: PassMark | None, *, version: str | None, event_time: datetime | None) -> bool:
    """Whether a pass that reconciled to ``mark`` already did what an event for ``version``
    (emitted at ``event_time``) asks: the same version, or a version created strictly after the
    event was emitted (so it supersedes the event's version). Key Vault reports creation times
    in whole seconds: a version created in the same second as the event is not known to be the
    newer one, so that event is not covered (it runs a pass, which reads the key live). Unknown
    times never count as covered."""
    if mark is None:
        return False
    if version is not None and version == mark.version:
        return True
    return mark.created is not None and event_time is not None and mark.created > event_time


class MemoryIdempotencyStore:
    """In process (the CLI, tests, and an app without a storage account)."""

    def __init__(self, clock: Clock, *, ttl: timedelta = timedelta(hours=24)) -> None:
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._events: dict[str, tuple[Claim, datetime]] = {}  # id -> (state, expires)
        self._passes: dict[str, tuple[PassMark, datetime]] = {}

    def claim(self, event_id: str) -> Claim:
        now = self._clock.now()
        with self._lock:
            found = self._events.get(event_id)
            if found is not None and found[1] > now:
                return Claim.DONE if found[0] is Claim.DONE else Claim.IN_PROGRESS
            self._events[event_id] = (Claim.IN_PROGRESS, now + IN_PROGRESS_TIMEOUT)
            return Claim.NEW

    def complete(self, event_id: str) -> None:
        with self._lock:
            self._events[event_id] = (Claim.DONE, self._clock.now() + self._ttl)

    def release(self, event_id: str) -> None:
        with self._lock:
            self._events.pop(event_id, None)

    def last_pass(self, key_uri: str) -> PassMark | None:
        with self._lock:
            found = self._passes.get(key_uri.lower())
        return found[0] if found is not None and found[1] > self._clock.now() else None

    def mark_pass(self, key_uri: str, mark: PassMark) -> None:
        with self._lock:
            self._passes[key_uri.lower()] = (mark, self._clock.now() + self._ttl)


def _as_utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None


class TableIdempotencyStore:
    """Records in Azure Table storage: conditional insert claims an event; ETag-matched updates
    take over an expired record, so two invocations never both claim one event."""

    def __init__(self, table: TableClient | Callable[[], TableClient], clock: Clock, *,
                 ttl: timedelta = timedelta(hours=24)) -> None:
        # A factory is called on first use, so building the app does no Storage work.
        self._client: TableClient | None = None if callable(table) else table
        self._make: Callable[[], TableClient] | None = table if callable(table) else None
        self._clock = clock
        self._ttl = ttl
        self._created = False
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, conn: str, clock: Clock, *, table_prefix: str = "keysteward",
                               ttl: timedelta = timedelta(hours=24)) -> TableIdempotencyStore:
        def make() -> TableClient:
            from azure.data.tables import TableClient  # noqa: PLC0415 - on first use (cold start)

            return TableClient.from_connection_string(conn, table_prefix + TABLE_SUFFIX)

        return cls(make, clock, ttl=ttl)

    @classmethod
    def from_identity(cls, table_service_uri: str, credential: TokenCredential, clock: Clock, *,
                      table_prefix: str = "keysteward", ttl: timedelta = timedelta(hours=24)) -> TableIdempotencyStore:
        def make() -> TableClient:
            from azure.data.tables import TableClient  # noqa: PLC0415 - on first use (cold start)

            return TableClient(table_service_uri, table_prefix + TABLE_SUFFIX, credential=credential)

        return cls(make, clock, ttl=ttl)

    @property
    def _table(self) -> TableClient:
        with self._lock:
            if self._client is None:
                assert self._make is not None  # noqa: S101 - one of the two is always set
                try:
                    self._client = self._make()
                except ValueError as err:  # a malformed connection string or URI
                    raise ConfigError(f"AzureWebJobsStorage: the idempotency table cannot be reached: {err}") from err
            return self._client

    def _ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError  # noqa: PLC0415

        if self._created:
            return
        table = self._table
        with self._lock:
            if self._created:
                return
            with contextlib.suppress(ResourceExistsError):
                table.create_table()
            self._created = True

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Calls the SDK; the expected answers (exists, not found, modified) reach the caller
        as the SDK raised them, any other failure is translated (transient or permanent)."""
        from azure.core.exceptions import (  # noqa: PLC0415
            AzureError,
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        try:
            self._ensure()
            return fn(*args, **kwargs)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            raise
        except AzureError as err:
            raise translate(err, what=what) from err

    def claim(self, event_id: str) -> Claim:
        from azure.core import MatchConditions  # noqa: PLC0415
        from azure.core.exceptions import (  # noqa: PLC0415
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.data.tables import UpdateMode  # noqa: PLC0415

        now = self._clock.now()
        row = _row(event_id)
        entity = {"PartitionKey": EVENT_PARTITION, "RowKey": row, "status": Claim.IN_PROGRESS.value,
                  "expires": now + IN_PROGRESS_TIMEOUT}
        try:
            self._call("claim event", self._table.create_entity, entity)
            return Claim.NEW
        except ResourceExistsError:
            pass
        try:
            found = self._call("read event record", self._table.get_entity, EVENT_PARTITION, row)
        except ResourceNotFoundError:
            return self.claim(event_id)  # released meanwhile: claim again
        expires = _as_utc(found.get("expires"))
        if expires is not None and expires > now:
            return Claim.DONE if found.get("status") == Claim.DONE.value else Claim.IN_PROGRESS
        try:  # expired: take it over, unless another invocation did first
            self._call("take over event record", self._table.update_entity, entity, mode=UpdateMode.REPLACE,
                       etag=found.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return Claim.IN_PROGRESS
        return Claim.NEW

    def complete(self, event_id: str) -> None:
        from azure.data.tables import UpdateMode  # noqa: PLC0415

        entity = {"PartitionKey": EVENT_PARTITION, "RowKey": _row(event_id), "status": Claim.DONE.value,
                  "expires": self._clock.now() + self._ttl}
        self._call("complete event record", self._table.upsert_entity, entity, mode=UpdateMode.REPLACE)

    def release(self, event_id: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415

        with contextlib.suppress(ResourceNotFoundError):  # already gone: nothing to release
            self._call("release event record", self._table.delete_entity, EVENT_PARTITION, _row(event_id))

    def last_pass(self, key_uri: str) -> PassMark | None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415

        try:
            found = self._call("read key record", self._table.get_entity, KEY_PARTITION, _row(key_uri.lower()))
        except ResourceNotFoundError:
            return None
        expires = _as_utc(found.get("expires"))
        version = found.get("version")
        if expires is None or expires <= self._clock.now() or not isinstance(version, str):
            return None
        return PassMark(version, _as_utc(found.get("created")))

    def mark_pass(self, key_uri: str, mark: PassMark) -> None:
        from azure.data.tables import UpdateMode  # noqa: PLC0415

        entity: dict[str, Any] = {"PartitionKey": KEY_PARTITION, "RowKey": _row(key_uri.lower()),
                                  "version": mark.version, "expires": self._clock.now() + self._ttl}
        if mark.created is not None:
            entity["created"] = mark.created
        self._call("record key pass", self._table.upsert_entity, entity, mode=UpdateMode.REPLACE)
