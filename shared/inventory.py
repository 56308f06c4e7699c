"""Which resources use which key and version, across the watched subscriptions.

Two paths behind one interface: per-subscription list calls through each service's adapter
(``arm``), or one Azure Resource Graph query across all subscriptions (``resourcegraph``),
for large estates. Both return the same :class:`~shared.model.Binding` objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from shared.errors import TransientError, ValidationError
from shared.model import Binding, KeyRef, ServiceType

if TYPE_CHECKING:
    # The SDK models and the adapters are imported on first use, not when the app is indexed.
    from shared.clients import ClientFactory
    from shared.targets import Target


class Inventory(Protocol):
    def bindings(self, subscriptions: Sequence[str]) -> list[Binding]:
        """Every CMK binding in ``subscriptions``."""
        ...


class ArmInventory:
    """List calls per subscription and service (one ARM read per page).

    With ``clients``, :meth:`bindings_for_key` reads the same list pages as raw JSON and builds
    bindings only for the entries that name the key (an event's cost is then the pages, not a
    model per resource of the estate)."""

    def __init__(self, targets: dict[ServiceType, Target], clients: ClientFactory | None = None) -> None:
        self._targets = targets
        self._clients = clients

    def bindings_for_key(self, key: KeyRef, subscriptions: Sequence[str],
                         types: Mapping[str, str] | None = None) -> list[Binding]:
        """Exactly the bindings of ``key`` in ``subscriptions``, from the list pages of ``types``
        (ARM type -> list api-version; default :data:`ARM_LIST_APIS`). A page that does not
        mention the key's name and vault host is not looked into further."""
        if self._clients is None:
            return for_key(self.bindings(subscriptions), key)
        needles = (key.name.lower(), (urlsplit(key.vault_url).hostname or "").lower())
        rows = list(_arm_rows_naming(self._clients, subscriptions, types or ARM_LIST_APIS, needles))
        # Types with no subscription-wide list are not read here: ARM lists Kusto databases
        # cluster by cluster, which would make every event cost a read per cluster of the
        # estate. On this path a database with its own key is moved by the reconcile timer's
        # full pass (ArmInventory.bindings); the retention guard and the runbooks read the full
        # inventory, so its version is protected meanwhile. The Resource Graph path finds
        # databases at event time (one query).
        return for_key(_rows_to_bindings(rows, _by_type(self._targets)), key)

    def bindings(self, subscriptions: Sequence[str]) -> list[Binding]:
        out: list[Binding] = []
        for sub in subscriptions:
            for target in self._targets.values():
                out.extend(target.list_bindings(sub))
        return out


# The list call per ARM type read by ArmInventory.bindings_for_key, and its api-version:
# Microsoft.Kusto/clusters: Clusters_List, GET /subscriptions/{subscriptionId}/providers/Microsoft.Kusto/clusters,
#   specification/azure-kusto/resource-manager/Microsoft.Kusto/stable/2024-04-13/kusto.json;
# Microsoft.DocumentDB/databaseAccounts: DatabaseAccounts_List, GET /subscriptions/{subscriptionId}/providers/
#   Microsoft.DocumentDB/databaseAccounts, specification/cosmos-db/resource-manager/Microsoft.DocumentDB/stable/
#   2024-11-15/cosmos-db.json (both pageable with nextLink);
# the PostgreSQL and Energy versions are the ones their targets read (shared/targets/postgres.py,
# energy.py: the first api-versions whose specs carry the CMK properties).
ARM_LIST_APIS: dict[str, str] = {
    "Microsoft.Kusto/clusters": "2024-04-13",
    "Microsoft.DocumentDB/databaseAccounts": "2024-11-15",
    "Microsoft.DBforPostgreSQL/serverGroupsv2": "2023-03-02-preview",
    "Microsoft.OpenEnergyPlatform/energyServices": "2024-05-21",
}


def _arm_rows_naming(clients: ClientFactory, subscriptions: Sequence[str], types: Mapping[str, str],
                     needles: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The list entries whose JSON mentions every needle (lower-cased), page by page; raises
    TransientError / PermanentError as the adapters do."""
    for sub in subscriptions:
        for rtype, api in types.items():
            url: str | None = f"{clients.arm_url}/subscriptions/{sub}/providers/{rtype}?api-version={api}"
            while url:
                text = clients.arm_get_text(url, what=f"list {rtype}")
                lowered = text.lower()
                if not all(n in lowered for n in needles):
                    # No entry on this page names the key: only the next page's link matters.
                    url = _next_link(text, what=rtype)
                    continue
                try:
                    doc = json.loads(text)
                except ValueError as err:
                    raise TransientError(f"list {rtype}: the answer is not JSON") from err
                if not isinstance(doc, dict):
                    raise TransientError(f"list {rtype}: the answer is not a JSON object")
                rows = [row for row in doc.get("value") or [] if isinstance(row, dict)]
                if lowered.count(needles[0]) >= len(rows):
                    # As many mentions as entries: converting them all is cheaper than checking
                    # each; the exact filter by key id follows in the caller.
                    yield from rows
                else:
                    yield from (row for row in rows if all(n in json.dumps(row).lower() for n in needles))
                link = doc.get("nextLink")
                url = link if isinstance(link, str) and link else None


# A JSON member "nextLink": "..." (a quote inside a string value is escaped, so an unescaped
# "nextLink" is a member name; none of the listed types has one inside a resource).
_NEXT_LINK = re.compile(r'"nextLink"\s*:\s*("(?:[^"\\]|\\.)*"|null)')


def _next_link(text: str, *, what: str) -> str | None:
    """The page's ``nextLink`` without parsing the page; ``None`` on the last page."""
    found = list(_NEXT_LINK.finditer(text))
    if not found or found[-1].group(1) == "null":
        return None
    try:
        link = json.loads(found[-1].group(1))
    except ValueError as err:
        raise TransientError(f"list {what}: unreadable nextLink") from err
    return link if isinstance(link, str) and link else None


def graph_query(types: Iterable[str]) -> str:
    """The one Resource Graph query for every registered ARM type."""
    quoted = ", ".join(f"'{t.lower()}'" for t in types)
    return (
        f"Resources | where type in~ ({quoted}) "
        f"{_PROJECT}"
    )


_PROJECT = "| project id, name, type, kind, location, subscriptionId, resourceGroup, tags, identity, properties"


def __getattr__(name: str) -> str:
    """``GRAPH_QUERY``: the full-estate query over every registered target, built on first use
    (the registry imports the adapters and their SDK models: not at app indexing)."""
    if name == "GRAPH_QUERY":
        from shared.targets import graph_types  # noqa: PLC0415 - on first use (cold start)

        return graph_query(graph_types())
    raise AttributeError(name)


# Resource Graph pages hold at most 1,000 rows.
GRAPH_PAGE = 1000


class ResourceGraphInventory:
    """One query across every watched subscription, paged with ``skip_token``."""

    def __init__(self, clients: ClientFactory, targets: dict[ServiceType, Target]) -> None:
        self._clients = clients
        self._targets = targets
        self._by_type = _by_type(targets)
        self._query = graph_query(self._by_type)

    def _rows(self, subscriptions: Sequence[str], query: str | None = None) -> Iterable[dict[str, Any]]:
        from azure.mgmt.resourcegraph.models import (  # noqa: PLC0415 - on first use (cold start)
            QueryRequest,
            QueryRequestOptions,
            ResultFormat,
        )

        from shared.targets.base import sdk  # noqa: PLC0415

        skip: str | None = None
        while True:
            request = QueryRequest(
                subscriptions=list(subscriptions),
                query=query or self._query,
                options=QueryRequestOptions(skip_token=skip, top=GRAPH_PAGE, result_format=ResultFormat.OBJECT_ARRAY),
            )
            with sdk("query Resource Graph"):
                page = self._clients.resource_graph().resources(request)
            rows: Any = page.data
            yield from (r for r in (rows if isinstance(rows, list) else []) if isinstance(r, dict))
            skip = page.skip_token
            if not skip:
                return

    def bindings_for_key(self, key: KeyRef, subscriptions: Sequence[str],
                         types: Iterable[str] | None = None) -> list[Binding]:
        """Exactly the bindings of ``key``: one query filtered by the key's vault and name
        (:func:`graph_query_for_key` over ``types``, default the inventory's), then the exact
        match on the key id, since ``has`` matches whole terms (``cmk`` also finds ``cmk-2``)."""
        query = graph_query_for_key(key, types if types is not None else self._by_type)
        rows = list(self._rows(subscriptions, query))
        # A row may need its parent's row (a Kusto database reaches its key through its cluster's
        # identity); a parent that does not name the key itself is fetched by id, in one query.
        known = {str(r.get("id", "")).lower() for r in rows}
        parents = sorted({p for r in rows if (p := _parent_id(r)) and p not in known})
        if parents:
            listed = ", ".join(f"'{p}'" for p in parents if _KQL_ID.fullmatch(p))
            if listed:
                rows.extend(self._rows(subscriptions, f"Resources | where id in~ ({listed}) {_PROJECT}"))
        return for_key(_rows_to_bindings(rows, self._by_type), key)

    def bindings(self, subscriptions: Sequence[str]) -> list[Binding]:
        return _rows_to_bindings(list(self._rows(subscriptions)), self._by_type)


def _by_type(targets: Mapping[ServiceType, Target]) -> dict[str, Target]:
    return {t.lower(): target for target in targets.values() for t in target.arm_types}


def _parent_id(row: Mapping[str, Any]) -> str | None:
    """The id of the resource a child row hangs under (``.../clusters/c/databases/d`` ->
    ``.../clusters/c``), lower-case; ``None`` for a top-level resource."""
    rid = str(row.get("id", "")).lower()
    parts = rid.split("/providers/", 1)
    if len(parts) != 2 or parts[1].count("/") < 3:
        return None
    return rid.rsplit("/", 2)[0]


# An ARM id as it may go into a query literal (no quote, no space).
_KQL_ID = re.compile(r"/[a-z0-9/._()-]+")


def _rows_to_bindings(rows: list[dict[str, Any]], by_type: Mapping[str, Target]) -> list[Binding]:
    """Bindings from resources as ARM answers them (a Resource Graph row or an ARM list entry:
    the same ``properties``; the type compared case-insensitively), through each registered
    target's ``bindings_from_row``."""
    by_id = {str(row.get("id", "")).lower(): row for row in rows}
    out: list[Binding] = []
    for row in rows:
        target = by_type.get(str(row.get("type", "")).lower())
        if target is not None:
            out.extend(target.bindings_from_row(row, by_id))
    return out


_KQL_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")


def graph_query_for_key(key: KeyRef, types: Iterable[str]) -> str:
    """A Resource Graph query for the resources of ``types`` whose properties name ``key``'s
    vault host and key name, as whole terms (KQL ``has``: case-insensitive, term-bounded).

    Key Vault names keys with letters, digits and dashes and vaults with letters, digits and
    dashes, so both go into the query as plain literals; anything else is refused
    (ValidationError) rather than escaped into a query.
    """
    host = (urlsplit(key.vault_url).hostname or "").lower()
    name = key.name
    if not _KQL_SAFE.fullmatch(host) or not _KQL_SAFE.fullmatch(name):
        raise ValidationError(f"key {key.key_id!r} cannot be put into a Resource Graph query", field="key")
    listed = ", ".join(f"'{t.lower()}'" for t in types)
    if not listed:
        raise ValidationError("no resource types to query", field="types")
    return (
        f"Resources | where type in~ ({listed}) "
        f"| where tostring(properties) has '{name}' and tostring(properties) has '{host}' "
        f"{_PROJECT}"
    )


def bindings_of_key(inventory: Inventory, key: KeyRef, subscriptions: Sequence[str]) -> list[Binding]:
    """The bindings of ``key``: one filtered Resource Graph query with that inventory, else the
    ARM lists filtered here (ARM has no filter by key)."""
    if isinstance(inventory, ResourceGraphInventory):
        return inventory.bindings_for_key(key, subscriptions)
    if isinstance(inventory, ArmInventory):
        return inventory.bindings_for_key(key, subscriptions)
    return for_key(inventory.bindings(subscriptions), key)


def for_key(bindings: Iterable[Binding], key: KeyRef) -> list[Binding]:
    kid = key.key_id
    return [b for b in bindings if b.key.key_id == kid]


def by_key(bindings: Iterable[Binding]) -> dict[str, list[Binding]]:
    out: dict[str, list[Binding]] = {}
    for b in bindings:
        out.setdefault(b.key.key_id, []).append(b)
    return out
