"""Any JSON value uploaded as a workflow gets a clear 4xx or a version: never a 500 (hypothesis fuzzing)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from json_strategies import json_leaves, json_values

CARD_UI = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "gradient_card.ui.json").read_text())

node_types = st.sampled_from(["EmptyImage", "SaveImage", "ImageBlur", "Reroute", "PrimitiveNode", "Note",
                              "NoSuchNode"]) | st.text(max_size=6)
link_ids = st.none() | st.integers(-1, 6) | st.text(max_size=2)
ui_nodes = st.fixed_dictionaries(
    {"id": st.integers(-1, 6) | st.text(max_size=2), "type": node_types},
    optional={
        "mode": st.sampled_from([0, 2, 4]) | json_leaves,
        "widgets_values": st.lists(json_leaves, max_size=5) | json_values,
        "inputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["images", "image", "width", ""]),
                                                  "type": st.sampled_from(["IMAGE", "INT", "*"]),
                                                  "link": link_ids}), max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["IMAGE", "INT"]),
                                                   "links": st.lists(link_ids, max_size=3) | st.none()}),
                            max_size=2) | json_values,
    },
)
ui_documents = st.fixed_dictionaries({
    "nodes": st.lists(ui_nodes, max_size=6),
    "links": st.lists(st.lists(link_ids | st.sampled_from(["IMAGE", "INT"]), min_size=6, max_size=6)
                      | json_values, max_size=6),
}, optional={"definitions": json_values, "version": json_leaves})


def _mutations(document: dict) -> st.SearchStrategy:
    """The real UI card with one value somewhere replaced by anything."""
    def mutate(path_and_value: tuple[list[int], object]) -> dict:
        copy = json.loads(json.dumps(document))
        indices, value = path_and_value
        node = copy["nodes"][indices[0] % len(copy["nodes"])]
        key = sorted(node)[indices[1] % len(node)]
        node[key] = value
        return copy
    return st.tuples(st.lists(st.integers(0, 50), min_size=2, max_size=2), json_values).map(mutate)


def _assert_clear_answer(server, workflow) -> None:
    response = server.call("POST", "/v1/workflows", json={"name": "fuzz", "workflow": workflow})
    assert response.status_code in (200, 201, 422), (response.status_code, response.text[:500])
    if response.status_code == 422:
        assert response.json()["error"]["message"]


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(workflow=json_values)
def test_any_json_value_gets_a_clear_answer(server, workflow):
    _assert_clear_answer(server, workflow)


@FUZZ
@given(workflow=ui_documents)
def test_ui_shaped_documents_get_a_clear_answer(server, workflow):
    _assert_clear_answer(server, workflow)


@FUZZ
@given(workflow=_mutations(CARD_UI))
def test_a_real_export_with_any_value_changed_gets_a_clear_answer(server, workflow):
    _assert_clear_answer(server, workflow)
