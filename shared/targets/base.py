"""The Protocol every dependent-service adapter implements, and helpers they share."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from shared.armid import name_of, parent_name_of, resource_group_of, subscription_of
from shared.errors import azure_errors
from shared.keyuri import norm_vault_url
from shared.model import Binding, KeyRef, ServiceType

JsonObj = dict[str, Any]

# The permissions a service's identity needs on the vault (access-policy names). Most CMK
# services document get/wrapKey/unwrapKey; a target declares more when its docs say so.
CMK_PERMISSIONS: tuple[str, ...] = ("get", "wrapKey", "unwrapKey")
# RSA sizes most CMK services accept (Cosmos DB, Cosmos DB for PostgreSQL, Energy docs).
RSA_SIZES: frozenset[int] = frozenset({2048, 3072, 4096})

_KEY_URI = re.compile(r"^(https://[^/]+)/keys/([^/]+)(?:/([0-9a-fA-F]{32}))?/?$")


@dataclass(frozen=True)
class UpdateStart:
    """An update that was started. ``token`` is the operation's status URL (Azure-AsyncOperation
    or Location) when the service gave one: kept for diagnostics; convergence itself is confirmed
    by reading the resource back on a later pass."""

    binding: Binding
    version: str
    token: str | None
    # Seconds the service said to wait before polling (Retry-After on the initial response):
    # the first confirm pass is scheduled then, not earlier (nothing to see) nor much later.
    expected_s: float | None = None


class Health:
    OK = "ok"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class Target(Protocol):
    """A service that encrypts with a customer-managed key, registered in :mod:`shared.targets`.

    Besides its operations, each target declares (as class attributes) the facts the core
    needs about it, so that adding a service is adding one module:

    - ``arm_types``: the ARM resource types it reads, lower-case as Resource Graph reports them;
    - ``reports_key_status``: whether the service reports its own key access (health);
    - ``key_sizes`` / ``recommended_key_size``: accepted RSA sizes and the docs' recommendation;
    - ``vault_permissions``: what its identity needs on the vault (access-policy names);
    - ``vault_same_region``: whether its docs require the vault in the resource's region;
    - ``vault_retention_days``: the soft-delete retention its docs require of the vault, if any.
    """

    service: ServiceType
    updatable: bool
    arm_types: ClassVar[tuple[str, ...]]
    reports_key_status: ClassVar[bool]
    key_sizes: ClassVar[frozenset[int]]
    recommended_key_size: ClassVar[int | None]
    vault_permissions: ClassVar[tuple[str, ...]]
    vault_same_region: ClassVar[bool]
    vault_retention_days: ClassVar[int | None]

    def bindings_from_row(self, row: JsonObj, rows: Mapping[str, JsonObj]) -> list[Binding]:
        """The bindings a Resource Graph row (ARM JSON: id, name, type, kind, location, tags, identity,
        properties) of one of ``arm_types`` describes; empty when it uses no customer-managed key.
        ``rows`` holds every row of the query by lower-cased id, for a child resource whose key is
        used through its parent's identity."""
        ...

    def list_bindings(self, subscription: str) -> list[Binding]:
        """Every resource of this service in ``subscription`` that uses a Key Vault key."""
        ...

    def get_binding(self, resource_id: str) -> Binding | None:
        """Fresh state of one resource; ``None`` when it no longer exists or has no CMK."""
        ...

    def start_update(self, binding: Binding, version: str) -> UpdateStart:
        """Starts moving ``binding`` to ``version`` without waiting for the operation."""
        ...

    def health(self, binding: Binding) -> str:
        """Whether the service reports its key usable (:class:`Health`)."""
        ...


def enum_text(value: object) -> str | None:
    """The wire text of an SDK enum or string (``str()`` of an enum member is its Python name)."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def expected_seconds(seen: dict[str, str]) -> float | None:
    """The Retry-After a recorder saw, in seconds (``None`` when absent or not a number)."""
    try:
        return float(seen["retry_after"]) if "retry_after" in seen else None
    except ValueError:
        return None


def operation_recorder() -> tuple[dict[str, str], Callable[[Any], None]]:
    """A ``raw_response_hook`` that keeps the operation status URL of the initial response."""
    seen: dict[str, str] = {}

    def hook(pipeline_response: Any) -> None:
        headers = pipeline_response.http_response.headers
        url = headers.get("Azure-AsyncOperation") or headers.get("Location")
        if url:
            seen["operation"] = url
        retry_after = headers.get("Retry-After")
        if retry_after:
            seen["retry_after"] = retry_after

    return seen, hook


# The adapters' name for the shared translator of SDK errors.
sdk = azure_errors


def parse_key_uri_loose(uri: str | None) -> tuple[KeyRef, str | None] | None:
    """(versionless key, version or None) from a key URI a service reports; None if absent/odd.

    Services report their own configuration; the strict allowlist check happens in the core.
    """
    if not uri:
        return None
    m = _KEY_URI.match(uri.strip())
    if m is None:
        return None
    vault = norm_vault_url(m.group(1))
    version = m.group(3).lower() if m.group(3) else None
    return KeyRef(vault, m.group(2)), version


__all__ = [
    "CMK_PERMISSIONS", "RSA_SIZES", "Health", "JsonObj", "Target", "UpdateStart", "enum_text", "expected_seconds",
    "name_of", "operation_recorder", "parent_name_of", "parse_key_uri_loose", "resource_group_of", "sdk",
    "subscription_of",
]
