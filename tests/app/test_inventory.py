"""Both inventory paths (ARM list calls, one Resource Graph query) find the same bindings."""

from __future__ import annotations

from sandbox.world import World
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
