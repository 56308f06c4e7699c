"""Which resources use which key and version, across the watched subscriptions.

Two paths behind one interface: per-subscription list calls through each service's adapter
(``arm``), or one Azure Resource Graph query across all subscriptions (``resourcegraph``),
for large estates. Both return the same :class:`~shared.model.Binding` objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions, ResultFormat

from shared.clients import ClientFactory
from shared.model import Binding, KeyRef, ServiceType
from shared.targets import Target, graph_types
from shared.targets.base import sdk


class Inventory(Protocol):
    def bindings(self, subscriptions: Sequence[str]) -> list[Binding]:
        """Every CMK binding in ``subscriptions``."""
        ...


class ArmInventory:
    """List calls per subscription and service (one ARM read per page)."""

    def __init__(self, targets: dict[ServiceType, Target]) -> None:
        self._targets = targets

    def bindings(self, subscriptions: Sequence[str]) -> list[Binding]:
        out: list[Binding] = []
        for sub in subscriptions:
            for target in self._targets.values():
                out.extend(target.list_bindings(sub))
        return out


def graph_query(types: Iterable[str]) -> str:
    """The one Resource Graph query for every registered ARM type."""
    quoted = ", ".join(f"'{t.lower()}'" for t in types)
    return (
        f"Resources | where type in~ ({quoted}) "
        "| project id, name, type, kind, location, subscriptionId, resourceGroup, tags, identity, properties"
    )


GRAPH_QUERY = graph_query(graph_types())
# Resource Graph pages hold at most 1,000 rows.
GRAPH_PAGE = 1000


class ResourceGraphInventory:
    """One query across every watched subscription, paged with ``skip_token``."""

    def __init__(self, clients: ClientFactory, targets: dict[ServiceType, Target]) -> None:
        self._clients = clients
        self._targets = targets
        self._by_type = {t: target for target in targets.values() for t in target.arm_types}
        self._query = graph_query(self._by_type)

    def _rows(self, subscriptions: Sequence[str]) -> Iterable[dict[str, Any]]:
        skip: str | None = None
        while True:
            request = QueryRequest(
                subscriptions=list(subscriptions),
                query=self._query,
                options=QueryRequestOptions(skip_token=skip, top=GRAPH_PAGE, result_format=ResultFormat.OBJECT_ARRAY),
            )
            with sdk("query Resource Graph"):
                page = self._clients.resource_graph().resources(request)
            rows: Any = page.data
            yield from (r for r in (rows if isinstance(rows, list) else []) if isinstance(r, dict))
            skip = page.skip_token
            if not skip:
                return

    def bindings(self, subscriptions: Sequence[str]) -> list[Binding]:
        rows = list(self._rows(subscriptions))
        by_id = {str(row.get("id", "")).lower(): row for row in rows}
        out: list[Binding] = []
        for row in rows:
            target = self._by_type.get(str(row.get("type", "")).lower())
            if target is not None:
                out.extend(target.bindings_from_row(row, by_id))
        return out


def for_key(bindings: Iterable[Binding], key: KeyRef) -> list[Binding]:
    kid = key.key_id
    return [b for b in bindings if b.key.key_id == kid]


def by_key(bindings: Iterable[Binding]) -> dict[str, list[Binding]]:
    out: dict[str, list[Binding]] = {}
    for b in bindings:
        out.setdefault(b.key.key_id, []).append(b)
    return out
