"""Both inventory paths (ARM list calls, one Resource Graph query) find the same bindings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.world import World
from shared.inventory import GRAPH_QUERY, ArmInventory, ResourceGraphInventory, graph_query
from shared.model import Binding, KeyRef, ServiceType
from shared.targets import Target, graph_types
from tests.app.estate import make_estate, steward
from tests.app.test_retention import make_postgres


def summary(bindings):
    return sorted((b.resource_id.lower(), b.service.value, b.pinned_version, b.updatable) for b in bindings)


def test_resource_graph_and_arm_lists_agree_and_graph_uses_one_query_per_page():
    world = World()
    estate = make_estate(world, clusters_per_sub=2, accounts_per_sub=1, versionless=1)
    make_postgres(world, estate, "pgcluster", estate.v1)
    arm_app, _, _ = steward(world, estate)
    graph_app, _, _ = steward(world, estate, KEYSTEWARD_INVENTORY="resourcegraph")
    via_arm = arm_app.all_bindings()
    seq = world.last_seq
    via_graph = graph_app.all_bindings()
    assert summary(via_graph) == summary(via_arm)
    assert len(via_arm) == 4 + 2 + 1 + 1
    calls = world.requests_since(seq)
    assert [c.path for c in calls] == ["/providers/Microsoft.ResourceGraph/resources"]


def test_resource_graph_inventory_drives_propagation():
    world = World()
    estate = make_estate(world, clusters_per_sub=2, accounts_per_sub=1, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_INVENTORY="resourcegraph")
    v2 = estate.keys.rotate_key(estate.key_name).properties.version
    results = app.reconcile_all()
    assert sum(len(r.started) for r in results) == 4  # the clusters; Cosmos accounts follow the key
    world.tick(world.clock.now())
    assert set(estate.pinned_versions().values()) == {v2}


class _LedgerTarget:
    """A service that is not in keysteward: registered only through the Target Protocol."""

    service = ServiceType.ENERGY  # any member; the inventory never branches on it
    updatable = False
    arm_types = ("microsoft.kusto/clusters",)  # reuse rows the sandbox serves
    reports_key_status = False
    key_sizes = frozenset({2048})
    recommended_key_size = None
    vault_permissions = ("get",)
    vault_same_region = False
    vault_retention_days = None

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.listed: list[str] = []

    def _binding(self, rid: str) -> Binding:
        return Binding(resource_id=rid, service=self.service, subscription="s", resource_group="r", name="n",
                       location="l", key=KeyRef("https://v.vault.azure.net", "k"), pinned_version=None,
                       in_use_version=None, updatable=False)

    def bindings_from_row(self, row: dict[str, Any], rows: Mapping[str, dict[str, Any]]) -> list[Binding]:
        assert str(row["id"]).lower() in rows
        self.rows.append(str(row["id"]))
        return [self._binding(str(row["id"]))]

    def list_bindings(self, subscription: str) -> list[Binding]:
        self.listed.append(subscription)
        return [self._binding(f"/subscriptions/{subscription}/x")]

    def get_binding(self, resource_id: str) -> Binding | None:
        return None

    def start_update(self, binding: Binding, version: str) -> Any:
        raise AssertionError("not called")

    def health(self, binding: Binding) -> str:
        return "unknown"


def test_both_inventory_paths_and_the_graph_query_come_from_the_registered_targets():
    world = World()
    estate = make_estate(world, clusters_per_sub=2, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    ledger = _LedgerTarget()
    targets: dict[ServiceType, Target] = {ServiceType.ENERGY: ledger}
    assert [b.resource_id for b in ArmInventory(targets).bindings(estate.subs)] == [
        f"/subscriptions/{s}/x" for s in estate.subs]
    assert ledger.listed == estate.subs
    graph = ResourceGraphInventory(app.clients, targets)
    seq = world.last_seq
    found = graph.bindings(estate.subs)
    [call] = world.requests_since(seq)
    assert call.path == "/providers/Microsoft.ResourceGraph/resources"
    assert sorted(b.resource_id.lower() for b in found) == sorted(
        estate.cluster(s, n).id.lower() for s, n in estate.clusters)
    # The default query names every registered type, and only through the registry.
    assert graph_query(graph_types()) == GRAPH_QUERY
    assert "'microsoft.kusto/clusters/databases'" in GRAPH_QUERY
