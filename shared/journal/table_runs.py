"""The runs table of :class:`~shared.journal.TableJournal`: run entities and the key index.

Layout (see :mod:`shared.journal`): partition ``run`` holds one entity per run, RowKey
``<inverted ms>-<run id>`` (newest first; a point read by run id); partition
``key-<sha256 of the normalised key URI>`` holds one index entity per run of that key, same RowKey.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from azure.core.exceptions import AzureError

from shared.errors import NotFoundError, ValidationError, translate
from shared.journal.model import Run
from shared.journal.rules import _utc, dump_json, key_hash, load_json, run_row_key
from shared.journal.storage import (
    FILTER_MAX_TERMS,
    MAX_QUERY_PAGE,
    LazyTable,
    batched,
    entity_etag,
    etag_of,
    join,
    split,
    status_filter,
)

_RUN_PARTITION: Final = "run"


class RunTable:
    """Runs and their key index in one table (``{prefix}runs``): stores the runs that
    :class:`~shared.journal.TableJournal` builds with the shared rules, and reads them back."""

    def __init__(self, table: LazyTable) -> None:
        self._table = table

    def _run_entity(self, run: Run) -> dict[str, Any]:
        row = run_row_key(run.run_id)
        if row is None:  # only ids from new_run_id reach here
            raise ValidationError(f"malformed run id {run.run_id!r}", field="run_id")
        return {
            "PartitionKey": _RUN_PARTITION,
            "RowKey": row,
            "RunId": run.run_id,
            "Kind": run.kind,
            "Key": run.key,
            "Status": run.status,
            "CallerOid": run.caller_oid,
            "CallerName": run.caller_name,
            "Reason": run.reason,
            "Ticket": run.ticket,
            **split("Params", dump_json(run.params, what="params")),
            **split("Result", dump_json(run.result, what="result")),
            "Created": run.created,
            "Updated": run.updated,
        }

    @staticmethod
    def _to_run(entity: Mapping[str, Any], etag: str) -> Run:
        return Run(
            run_id=str(entity["RunId"]),
            kind=str(entity["Kind"]),
            key=str(entity["Key"]),
            status=str(entity["Status"]),
            caller_oid=str(entity.get("CallerOid") or ""),
            caller_name=str(entity.get("CallerName") or ""),
            reason=str(entity.get("Reason") or ""),
            ticket=str(entity.get("Ticket") or ""),
            params=load_json(join(entity, "Params")),
            result=load_json(join(entity, "Result")),
            created=_utc(entity["Created"]),
            updated=_utc(entity["Updated"]),
            etag=etag,
        )

    def insert(self, run: Run) -> Run:
        """Stores the new ``run`` (built by the shared rules) with its key index entry."""
        entity = self._run_entity(run)
        index = {
            "PartitionKey": f"key-{key_hash(run.key)}",
            "RowKey": entity["RowKey"],
            "RunId": run.run_id,
            "Key": run.key,
        }
        what = f"create run {run.run_id}"
        try:
            # Index first: a crash in between leaves a dangling index entry (skipped when
            # listing) rather than a run its key's listing cannot find.
            self._table().create_entity(index)
            metadata = self._table().create_entity(entity)
        except AzureError as err:
            raise translate(err, what=what) from err
        return dataclasses.replace(run, etag=etag_of(metadata))

    def get_run(self, run_id: str) -> Run:
        row = run_row_key(run_id)
        if row is None:
            raise NotFoundError(f"no run {run_id!r}", code="RunNotFound", status=404)
        try:
            entity = self._table().get_entity(_RUN_PARTITION, row)
        except AzureError as err:
            raise translate(err, what=f"read run {run_id}") from err
        return self._to_run(entity, entity_etag(entity))

    def list_runs(
        self, *, key: str | None = None, statuses: set[str] | None = None, limit: int = 100
    ) -> list[Run]:
        if limit <= 0:
            return []
        page = min(limit, MAX_QUERY_PAGE)
        if key is None:
            query, parameters = "PartitionKey eq @pk", {"pk": _RUN_PARTITION}
            if statuses:
                query += " and " + status_filter(statuses, parameters)
            entities = self._table.query(query, parameters, what="list runs", page=page)
            return [self._to_run(e, entity_etag(e)) for e in itertools.islice(entities, limit)]
        index = self._table.query(
            "PartitionKey eq @pk", {"pk": f"key-{key_hash(key)}"},
            what="list runs of a key", page=page,
        )
        found: list[Run] = []
        for rows in batched((str(e["RowKey"]) for e in index), FILTER_MAX_TERMS):
            for run in self._runs_by_row(rows):
                if statuses is None or run.status in statuses:
                    found.append(run)
                    if len(found) >= limit:
                        return found
        return found

    def _runs_by_row(self, rows: list[str]) -> list[Run]:
        """The runs stored under ``rows`` (missing ones skipped), in RowKey order."""
        parameters: dict[str, Any] = {"pk": _RUN_PARTITION}
        terms = []
        for n, row in enumerate(rows):
            parameters[f"r{n}"] = row
            terms.append(f"RowKey eq @r{n}")
        # The SDK substitutes @names in space-separated words only, hence "( ... )".
        query = f"PartitionKey eq @pk and ( {' or '.join(terms)} )"
        entities = self._table.query(query, parameters, what="read runs")
        return [self._to_run(e, entity_etag(e)) for e in entities]

    def replace(self, run: Run, updated: Run) -> Run:
        """Stores ``updated`` in place of ``run`` if the record is unchanged since ``run`` was read."""
        etag = self._table.replace_if_unchanged(self._run_entity(updated), etag=run.etag,
                                                what=f"update run {run.run_id}", changed="it changed since it was read")
        return dataclasses.replace(updated, etag=etag)

    def list_unfinished(self, older_than: datetime | None = None) -> list[Run]:
        query = "PartitionKey eq @pk and Status eq @status"
        parameters: dict[str, Any] = {"pk": _RUN_PARTITION, "status": "running"}
        if older_than is not None:
            query += " and Updated lt @before"
            parameters["before"] = _utc(older_than)
        entities = self._table.query(query, parameters, what="list unfinished runs")
        return [self._to_run(e, entity_etag(e)) for e in entities][::-1]

