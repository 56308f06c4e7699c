"""Resource Graph (Microsoft.ResourceGraph resources query, 2021-03-01, the api-version
azure-mgmt-resourcegraph 8.0.1 sends) and Event Grid custom topic publishing (2018-01-01, the
api-version azure-eventgrid 4.22's basic-topic client sends).

Specs: specification/resourcegraph/resource-manager/Microsoft.ResourceGraph/stable/2021-03-01/resourcegraph.json
and specification/eventgrid/data-plane/Microsoft.EventGrid/stable/2018-01-01/EventGrid.json.
The graph example's query is replayed with its resource type changed to one the sandbox holds
(``Microsoft.Kusto/clusters``); the sandbox's KQL is a subset (see sandbox/arm/graph.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import seeds
from tests.conformance.conftest import Estate
from tests.conformance.spec import assert_conforms, example, violations

GRAPH = "resourcegraph-2021-03-01"
TOPICS = "eventgrid-2018-01-01"
TOPIC_HOST = "https://outcomes.westeurope-1.eventgrid.azure.net"


def test_filter_query_is_answered_in_the_spec_shape(estate: Estate) -> None:
    seeds.apply_seed(estate.world, seeds.demo_seed())
    ex = example("resourcegraph", "ResourcesFilterQuery")
    body: dict[str, Any] = ex.param("query")
    body["subscriptions"] = [estate.sub]
    body["query"] = body["query"].replace("Microsoft.Compute/virtualMachines", "Microsoft.Kusto/clusters")
    assert violations(GRAPH, "QueryRequest", body) == []
    got = estate.arm("POST", "/providers/Microsoft.ResourceGraph/resources", ex.api_version, body)
    assert got.status == 200, got.body
    assert_conforms(GRAPH, "QueryResponse", got.body)
    want = ex.response_body(200)
    assert set(got.body["data"][0]) == set(want["data"][0])  # the projected columns, no more
    held = sorted(r.name for r in estate.world.resources.values()
                  if r.type == "Microsoft.Kusto/clusters" and r.subscription == estate.sub)
    assert sorted(row["name"] for row in got.body["data"]) == held[:3]
    assert all(row["type"] == "microsoft.kusto/clusters" for row in got.body["data"])  # lower-cased, as in the example
    assert got.body["count"] == len(got.body["data"])


def test_a_bad_query_answers_the_graph_error_shape(estate: Estate) -> None:
    got = estate.arm("POST", "/providers/Microsoft.ResourceGraph/resources", "2021-03-01",
                     {"subscriptions": [estate.sub], "query": "Resources | frobnicate"})
    assert got.status == 400
    assert_conforms(GRAPH, "ErrorResponse", got.body)


def _publish(estate: Estate, events: list[dict[str, Any]]) -> int:
    resp = estate.session.post(f"{TOPIC_HOST}/api/events?api-version=2018-01-01", json=events,
                               headers={"aeg-sas-key": "conformance"})
    return resp.status_code


def _event(**overrides: Any) -> dict[str, Any]:
    event = {"id": "run-1.revoked", "subject": "keys/cmk", "eventType": "Keysteward.KeyRevoked",
             "eventTime": "2026-12-01T00:00:00Z", "data": {"key": "cmk"}, "dataVersion": "1.0"}
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def test_publishing_an_event_in_the_spec_shape_is_accepted(in_process_estate: Estate) -> None:
    events = [_event()]
    assert violations(TOPICS, "PublishEvents", events) == []
    assert _publish(in_process_estate, events) == 200


@pytest.mark.parametrize("missing", ["data", "dataVersion"])
def test_publishing_an_event_without_a_required_property_is_refused(in_process_estate: Estate, missing: str) -> None:
    events = [_event(**{missing: None})]
    assert violations(TOPICS, "PublishEvents", events) != []
    assert _publish(in_process_estate, events) == 400


def test_the_specs_own_graph_example_passes_the_schema_excerpt() -> None:
    assert violations(GRAPH, "QueryResponse", example("resourcegraph", "ResourcesFilterQuery").response_body(200)) == []
