"""The registry of dependent services: one adapter module per service behind one Protocol
(:class:`shared.targets.base.Target`).

Each target class declares its ARM types, how a resource (SDK model or Resource Graph row)
becomes bindings, whether it reports key status, the RSA sizes it accepts and the vault
permissions its identity needs. The inventory (both paths), the Resource Graph query, preflight
and the key-size check read those declarations from here. Adding a service is adding its module
and one line in :data:`TARGET_CLASSES` (plus its :class:`~shared.model.ServiceType` member).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.clients import ClientFactory
from shared.model import ServiceType
from shared.targets.base import Target, UpdateStart
from shared.targets.cosmos import CosmosTarget
from shared.targets.energy import EnergyTarget
from shared.targets.kusto import KustoTarget
from shared.targets.kusto_databases import KustoDatabaseTarget
from shared.targets.postgres import PostgresTarget

TARGET_CLASSES: tuple[type[KustoTarget | KustoDatabaseTarget | CosmosTarget | PostgresTarget | EnergyTarget], ...] = (
    KustoTarget,
    KustoDatabaseTarget,
    CosmosTarget,
    PostgresTarget,
    EnergyTarget,
)
_BY_SERVICE = {cls.service: cls for cls in TARGET_CLASSES}


def build_targets(clients: ClientFactory) -> dict[ServiceType, Target]:
    return {cls.service: cls(clients) for cls in TARGET_CLASSES}


def accepted_key_sizes(service: ServiceType, overrides: Mapping[ServiceType, frozenset[int]]) -> frozenset[int]:
    """The RSA sizes ``service`` accepts: the setting's override, else what its target declares."""
    if service in overrides:
        return overrides[service]
    cls = _BY_SERVICE.get(service)
    return cls.key_sizes if cls is not None else frozenset()


def recommended_key_size(service: ServiceType) -> int | None:
    cls = _BY_SERVICE.get(service)
    return cls.recommended_key_size if cls is not None else None


def vault_permissions(service: ServiceType) -> tuple[str, ...]:
    """The access-policy permissions ``service``'s identity needs on the vault."""
    return _BY_SERVICE[service].vault_permissions


def vault_same_region(service: ServiceType) -> bool:
    """Whether ``service``'s docs require the vault in the resource's region."""
    return _BY_SERVICE[service].vault_same_region


def vault_retention_days(service: ServiceType) -> int | None:
    """The vault soft-delete retention (days) ``service``'s docs require; ``None``: no requirement."""
    return _BY_SERVICE[service].vault_retention_days


def graph_types() -> tuple[str, ...]:
    """Every ARM type a registered target reads, lower-case (Resource Graph ``type``)."""
    return tuple(t for cls in TARGET_CLASSES for t in cls.arm_types)


__all__ = [
    "TARGET_CLASSES", "Target", "UpdateStart", "accepted_key_sizes", "build_targets", "graph_types",
    "recommended_key_size", "vault_permissions", "vault_retention_days", "vault_same_region",
]
