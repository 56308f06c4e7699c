"""The per-key tables of :class:`~shared.journal.TableJournal`: leases and revocations in force.

Both are partitioned by the SHA-256 of the normalised key URI (Table keys forbid ``/ \\ # ?``), so
what concerns one key is one small partition: ``{prefix}leases`` holds RowKey ``lease``,
``{prefix}revocations`` one row per revocation in force, RowKey = its run id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError
from azure.data.tables import UpdateMode

from shared.clock import Clock
from shared.errors import NotFoundError, translate
from shared.journal.model import Lease, Revocation
from shared.journal.rules import _now, _utc, key_hash
from shared.journal.storage import LazyTable, entity_etag, etag_of

_LEASE_ROW: Final = "lease"
# Bounded retries when a racing writer changes a lease between our read and our write.
_LEASE_ATTEMPTS: Final = 3


class LeaseTable:
    """One lease per key (``{prefix}leases``); the lease half of :class:`~shared.journal.Journal`."""

    def __init__(self, table: LazyTable, *, clock: Clock) -> None:
        self._table = table
        self._clock = clock

    @staticmethod
    def _lease_entity(lease: Lease) -> dict[str, Any]:
        return {
            "PartitionKey": key_hash(lease.key),
            "RowKey": _LEASE_ROW,
            "Key": lease.key,
            "Owner": lease.owner,
            "Expires": lease.expires,
        }

    def acquire_lease(self, key: str, *, owner: str, ttl: timedelta) -> Lease | None:
        what = f"acquire lease on {key}"
        for _ in range(_LEASE_ATTEMPTS):
            now = _now(self._clock)
            wanted = Lease(key=key, owner=owner, expires=now + ttl, etag="")
            try:
                entity = self._table().get_entity(key_hash(key), _LEASE_ROW)
            except AzureError as err:
                error = translate(err, what=what)
                if not isinstance(error, NotFoundError):
                    raise error from err
                try:
                    metadata = self._table().create_entity(self._lease_entity(wanted))
                except ResourceExistsError:
                    continue  # someone created it first: look again (it may even be ours)
                except AzureError as create_err:
                    raise translate(create_err, what=what) from create_err
                return dataclasses.replace(wanted, etag=etag_of(metadata))
            if entity["Owner"] != owner and _utc(entity["Expires"]) > now:
                return None
            try:
                metadata = self._table().update_entity(
                    self._lease_entity(wanted), mode=UpdateMode.REPLACE,
                    etag=entity_etag(entity), match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue
            except AzureError as err:
                raise translate(err, what=what) from err
            return dataclasses.replace(wanted, etag=etag_of(metadata))
        return None  # the lease kept changing under us: someone else is actively taking it

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease:
        renewed = dataclasses.replace(lease, expires=_now(self._clock) + ttl)
        etag = self._table.replace_if_unchanged(self._lease_entity(renewed), etag=lease.etag,
                                                what=f"renew lease on {lease.key}",
                                                changed="the lease was lost", gone="the lease was released")
        return dataclasses.replace(renewed, etag=etag)

    def release_lease(self, lease: Lease) -> None:
        try:
            # A missing entity is not an error here: the SDK ignores 404 on delete.
            self._table().delete_entity(
                key_hash(lease.key), _LEASE_ROW,
                etag=lease.etag, match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            return  # no longer ours: leave the new owner's lease alone
        except AzureError as err:
            raise translate(err, what=f"release lease on {lease.key}") from err


class RevocationTable:
    """The revocations in force (``{prefix}revocations``): PartitionKey = key_hash(versionless key
    URI), RowKey = run id, one partition per key."""

    def __init__(self, table: LazyTable, *, clock: Clock) -> None:
        self._table = table
        self._clock = clock

    @staticmethod
    def _to_revocation(entity: Mapping[str, Any]) -> Revocation:
        return Revocation(key=str(entity["Key"]), run_id=str(entity["RowKey"]), mode=str(entity["Mode"]),
                          created=_utc(entity["Created"]), restoring=str(entity.get("Restoring") or "") or None,
                          etag=entity_etag(entity))

    def put_revocation(self, *, key: str, run_id: str, mode: str) -> Revocation:
        what = f"record revocation {run_id}"
        created = _now(self._clock)
        entity = {"PartitionKey": key_hash(key), "RowKey": run_id, "Key": key, "Mode": mode,
                  "Created": created, "Restoring": ""}
        try:
            metadata = self._table().create_entity(entity)
        except ResourceExistsError:
            try:
                return self._to_revocation(self._table().get_entity(key_hash(key), run_id))
            except AzureError as err:
                raise translate(err, what=what) from err
        except AzureError as err:
            raise translate(err, what=what) from err
        return Revocation(key=key, run_id=run_id, mode=mode, created=created, restoring=None,
                          etag=etag_of(metadata))

    def revocations(self, key: str | None = None) -> list[Revocation]:
        what = "read revocations in force"
        try:
            if key is None:
                entities = list(self._table().list_entities())
            else:
                entities = list(self._table().query_entities(
                    "PartitionKey eq @pk", parameters={"pk": key_hash(key)}))
        except AzureError as err:
            raise translate(err, what=what) from err
        return sorted((self._to_revocation(e) for e in entities), key=lambda r: (r.created, r.run_id))

    def update_revocation(self, revocation: Revocation, *, restoring: str | None) -> Revocation:
        what = f"update revocation {revocation.run_id}"
        entity = {"PartitionKey": key_hash(revocation.key), "RowKey": revocation.run_id, "Key": revocation.key,
                  "Mode": revocation.mode, "Created": revocation.created, "Restoring": restoring or ""}
        etag = self._table.replace_if_unchanged(entity, etag=revocation.etag, what=what,
                                                changed="it changed since it was read", gone="it was ended")
        return dataclasses.replace(revocation, restoring=restoring, etag=etag)

    def end_revocation(self, *, key: str, run_id: str) -> None:
        try:
            self._table().delete_entity(key_hash(key), run_id)  # the SDK ignores 404 on delete
        except AzureError as err:
            raise translate(err, what=f"end revocation {run_id}") from err
