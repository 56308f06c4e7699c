"""One adapter per dependent service behind one Protocol (:class:`shared.targets.base.Target`).

A new service is a new module registered in :func:`build_targets`, not a new ``if``.
"""

from __future__ import annotations

from shared.clients import ClientFactory
from shared.model import ServiceType
from shared.targets.base import Target, UpdateStart
from shared.targets.cosmos import CosmosTarget
from shared.targets.kusto import KustoTarget
from shared.targets.readonly import ReadOnlyArmTarget


def build_targets(clients: ClientFactory) -> dict[ServiceType, Target]:
    return {
        ServiceType.KUSTO: KustoTarget(clients),
        ServiceType.COSMOS: CosmosTarget(clients),
        ServiceType.POSTGRES: ReadOnlyArmTarget.postgres(clients),
        ServiceType.ENERGY: ReadOnlyArmTarget.energy(clients),
    }


__all__ = ["Target", "UpdateStart", "build_targets"]
