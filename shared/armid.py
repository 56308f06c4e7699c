"""ARM resource ids: the one place that takes them apart.

An id reads ``/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{child type}/{child}]``;
segment names are case-insensitive in ARM, values keep their case.
"""

from __future__ import annotations

import re

_RG = re.compile(r"/resourcegroups/([^/]+)/", re.IGNORECASE)


def resource_group_of(resource_id: str) -> str:
    """The resource group named in ``resource_id`` ("" when there is none)."""
    m = _RG.search(resource_id + "/")
    return m.group(1) if m else ""


def subscription_of(resource_id: str) -> str:
    """The subscription id in ``resource_id``, lower-cased ("" when there is none)."""
    parts = resource_id.split("/")
    return parts[2].lower() if len(parts) > 2 and parts[1].lower() == "subscriptions" else ""


def name_of(resource_id: str) -> str:
    """The last name segment: the resource's own name (a child's name without its parent's)."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def parent_name_of(resource_id: str) -> str:
    """The name of a child resource's parent (``.../clusters/{parent}/databases/{name}``); "" for a top-level one."""
    parts = resource_id.rstrip("/").split("/")
    try:
        providers = next(i for i, p in enumerate(parts) if p.lower() == "providers")
    except StopIteration:
        return ""
    # providers / {ns} / {type} / {parent} / {child type} / {name}
    return parts[providers + 3] if len(parts) >= providers + 6 else ""
