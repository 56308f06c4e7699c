"""The steps table of :class:`~shared.journal.TableJournal`: step entities and result page rows.

Layout (see :mod:`shared.journal`): PartitionKey = run id, RowKey = the step index zero-padded to
4 digits; a result larger than JSON_MAX_CHARS goes to page rows ``<index>.<token>.<page>`` in the
same partition, written before the ETag-guarded write of the step entity that names them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError
from azure.data.tables import UpdateMode

from shared.clock import Clock
from shared.errors import NotFoundError, TransientError, translate
from shared.journal.model import (
    JSON_MAX_CHARS,
    PAGE_MAX_CHARS,
    PAGE_PARTS,
    STEP_RESULT_MAX_CHARS,
    Step,
)
from shared.journal.rules import _check_index, _claim, _completed, _now, _utc, dump_json, load_json
from shared.journal.storage import LazyTable, entity_etag, etag_of, join, split


def _token(text: str) -> str:
    """What names a paged result and checks it when read back: a SHA-256 prefix of its text."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def _page_prefix(index: int, token: str) -> str:
    return f"{index:04d}.{token}."


def _page_row(index: int, token: str, number: int) -> str:
    return f"{_page_prefix(index, token)}{number:04d}"


def _join_pages(pages: Mapping[str, Mapping[str, Any]], index: int, token: str, count: int, *, what: str) -> str:
    """The text stored over ``count`` page rows, checked against its token (a SHA-256 prefix).

    Raises TransientError when a page is missing or the text does not match: a page row is
    written before the step entity naming it, so this only happens when storage lost or
    changed a row; a retry re-reads."""
    parts: list[str] = []
    for number in range(count):
        page = pages.get(_page_row(index, token, number))
        if page is None:
            raise TransientError(f"result page {number} of {count} of {what} is missing")
        parts.append(join(page, "Data", PAGE_PARTS))
    text = "".join(parts)
    if _token(text) != token:
        raise TransientError(f"the result pages of {what} do not match their checksum")
    return text


class StepTable:
    """Steps and their result pages in one table (``{prefix}steps``); the step half of
    :class:`~shared.journal.Journal`."""

    def __init__(self, table: LazyTable, *, clock: Clock) -> None:
        self._table = table
        self._clock = clock

    def _step_entity(self, step: Step) -> dict[str, Any]:
        """The step's entity; a result too large for it is written to page rows first."""
        entity: dict[str, Any] = {
            "PartitionKey": step.run_id,
            "RowKey": f"{step.index:04d}",
            "Name": step.name,
            "Status": step.status,
            "Attempt": step.attempt,
            "Owner": step.owner,
            "Started": step.started,
            **self._result_columns(step, dump_json(step.result, what="result", limit=STEP_RESULT_MAX_CHARS)),
        }
        if step.finished is not None:
            entity["Finished"] = step.finished
        if step.error is not None:
            entity["Error"] = step.error
        return entity

    def _result_columns(self, step: Step, text: str) -> dict[str, Any]:
        if len(text) <= JSON_MAX_CHARS:
            return split("Result", text)
        token = _token(text)
        pages = [text[i : i + PAGE_MAX_CHARS] for i in range(0, len(text), PAGE_MAX_CHARS)]
        what = f"write result pages of step {step.index} ({step.name}) of run {step.run_id}"
        for number, page in enumerate(pages):
            row = {"PartitionKey": step.run_id, "RowKey": _page_row(step.index, token, number),
                   **split("Data", page)}
            try:
                self._table().upsert_entity(row, mode=UpdateMode.REPLACE)
            except AzureError as err:
                raise translate(err, what=what) from err
        return {"Result": "", "ResultToken": token, "ResultPages": len(pages)}

    def _to_step(self, entity: Mapping[str, Any], pages: Mapping[str, Mapping[str, Any]] | None = None) -> Step:
        """The step in ``entity``; its result pages are taken from ``pages`` (RowKey -> page
        row) when given, else read."""
        finished = entity.get("Finished")
        error = entity.get("Error")
        run_id, index = str(entity["PartitionKey"]), int(entity["RowKey"])
        token, count = entity.get("ResultToken"), entity.get("ResultPages")
        if token and count:
            if pages is None:
                prefix = _page_prefix(index, str(token))  # ends in ".", and "/" sorts right after it
                pages = {str(p["RowKey"]): p for p in self._table.query(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    {"pk": run_id, "lo": prefix, "hi": prefix[:-1] + "/"},
                    what=f"read result pages of step {index} of run {run_id}")}
            text = _join_pages(pages, index, str(token), int(count), what=f"step {index} of run {run_id}")
        else:
            text = join(entity, "Result")
        return Step(
            run_id=run_id,
            index=index,
            name=str(entity["Name"]),
            status=str(entity["Status"]),
            attempt=int(entity["Attempt"]),
            owner=str(entity.get("Owner") or ""),
            started=_utc(entity["Started"]),
            finished=None if finished is None else _utc(finished),
            result=load_json(text),
            error=None if error is None else str(error),
            etag=entity_etag(entity),
        )

    def steps(self, run_id: str) -> list[Step]:
        entities = list(self._table.query(
            "PartitionKey eq @pk", {"pk": run_id}, what=f"list steps of run {run_id}"
        ))
        pages = {str(e["RowKey"]): e for e in entities if len(str(e["RowKey"])) > 4}
        return [self._to_step(e, pages) for e in entities if len(str(e["RowKey"])) == 4]

    def _get_step(self, run_id: str, index: int) -> Step | None:
        try:
            entity = self._table().get_entity(run_id, f"{index:04d}")
        except AzureError as err:
            error = translate(err, what=f"read step {index} of run {run_id}")
            if isinstance(error, NotFoundError):
                return None
            raise error from err
        return self._to_step(entity)

    def claim_step(
        self, run_id: str, index: int, name: str, *, owner: str, stale_after: timedelta
    ) -> Step | None:
        _check_index(index)
        now = _now(self._clock)
        current = self._get_step(run_id, index)
        claimed = _claim(current, run_id, index, name, owner=owner, stale_after=stale_after, now=now)
        if claimed is None:
            return None
        what = f"claim step {index} ({name}) of run {run_id}"
        try:
            if current is None:
                metadata = self._table().create_entity(self._step_entity(claimed))
            else:
                metadata = self._table().update_entity(
                    self._step_entity(claimed), mode=UpdateMode.REPLACE,
                    etag=current.etag, match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return None  # another instance claimed (or completed) it between our read and write
        except AzureError as err:
            raise translate(err, what=what) from err
        return dataclasses.replace(claimed, etag=etag_of(metadata))

    def complete_step(
        self, step: Step, *, status: str, result: Mapping[str, Any], error: str | None = None
    ) -> Step:
        done = _completed(step, self._clock, status=status, result=result, error=error)
        what = f"complete step {step.index} ({step.name}) of run {step.run_id}"
        etag = self._table.replace_if_unchanged(self._step_entity(done), etag=step.etag, what=what,
                                                changed="another owner took the step over")
        return dataclasses.replace(done, etag=etag)
