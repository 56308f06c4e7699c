"""What every journal table shares in Azure Table storage: a table created on first use, JSON
columns split over properties, ETags, and queries whose errors are translated once.

A :class:`LazyTable` does no I/O when built: its table is created (if missing) by the first call
that needs it, once, under a lock, so building a journal at a cold start never touches Storage.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.errors import NotFoundError, TransientError, translate
from shared.journal.model import JSON_MAX_PARTS, PROPERTY_MAX_CHARS, ConflictError

# Azure Table queries accept at most 15 discrete comparisons in one filter.
FILTER_MAX_TERMS: Final = 15
MAX_QUERY_PAGE: Final = 1000  # the service returns at most 1,000 entities per page


class LazyTable:
    """The table ``name`` of ``service``, created if missing when first used (thread-safe, once).

    Calling it returns the :class:`TableClient`. A failure to create the table raises
    TransientError or PermanentError (through :func:`~shared.errors.translate`) to that caller and
    is not remembered: the next call tries again.
    """

    def __init__(self, service: TableServiceClient, name: str) -> None:
        self._service = service
        self.name = name
        self._client: TableClient | None = None
        self._lock = threading.Lock()

    def __call__(self) -> TableClient:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._service.create_table_if_not_exists(self.name)
                except AzureError as err:
                    raise translate(err, what=f"create table {self.name}") from err
            return self._client

    def replace_if_unchanged(self, entity: dict[str, Any], *, etag: str, what: str, changed: str,
                             gone: str | None = None) -> str:
        """Replaces ``entity`` if the stored one still has ``etag``; returns the new ETag.

        Raises ConflictError ``"{what}: {changed}"`` if it changed since; if it is gone,
        ConflictError ``"{what}: {gone}"`` when ``gone`` is given, else the NotFoundError.
        """
        table = self()
        try:
            metadata = table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                           match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as err:
            raise ConflictError(f"{what}: {changed}") from err
        except AzureError as err:
            error = translate(err, what=what)
            if gone is not None and isinstance(error, NotFoundError):
                raise ConflictError(f"{what}: {gone}") from err
            raise error from err
        return etag_of(metadata)

    def query(self, query: str, parameters: dict[str, Any], *, what: str,
              page: int = MAX_QUERY_PAGE) -> Iterator[Any]:
        """Entities matching ``query`` in RowKey order, translating errors once."""
        table = self()
        try:
            yield from table.query_entities(query, parameters=parameters, results_per_page=page)
        except AzureError as err:
            raise translate(err, what=what) from err


def split(name: str, text: str) -> dict[str, str]:
    """``text`` as properties ``name``, ``name1``, ``name2`` ... of at most PROPERTY_MAX_CHARS each."""
    parts = [text[i : i + PROPERTY_MAX_CHARS] for i in range(0, len(text), PROPERTY_MAX_CHARS)] or [""]
    return {(name if n == 0 else f"{name}{n}"): part for n, part in enumerate(parts)}


def join(entity: Mapping[str, Any], name: str, max_parts: int = JSON_MAX_PARTS) -> str:
    """The text :func:`split` stored as ``name``, ``name1`` ... in ``entity``."""
    parts = [str(entity.get(name) or "")]
    for n in range(1, max_parts):
        part = entity.get(f"{name}{n}")
        if part is None:
            break
        parts.append(str(part))
    return "".join(parts)


def etag_of(metadata: Mapping[str, Any]) -> str:
    """The ETag in a write's response metadata."""
    value = metadata.get("etag")
    if not isinstance(value, str) or not value:
        raise TransientError("Table storage returned no ETag")
    return value


def entity_etag(entity: Any) -> str:
    """The ETag of an entity as read."""
    return etag_of(entity.metadata)


def status_filter(statuses: Iterable[str], parameters: dict[str, Any]) -> str:
    """An OData term matching any of ``statuses``; adds its parameters to ``parameters``."""
    terms = []
    for n, status in enumerate(sorted(statuses)):
        parameters[f"s{n}"] = status
        terms.append(f"Status eq @s{n}")
    return "( " + " or ".join(terms) + " )"  # spaced: the SDK substitutes @names per word


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """``items`` in lists of at most ``size``."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
