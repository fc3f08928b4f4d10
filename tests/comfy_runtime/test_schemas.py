"""Node schemas read from an /object_info document: the reference loads whole, malformed ones are refused clearly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfygate.comfy_runtime import NodeSchemaError, NodeSchemas, create_registry, load_object_info
from json_strategies import json_values

from .conftest import REFERENCE


def test_the_reference_object_info_loads_with_types_order_and_choices():
    schemas = load_object_info(str(REFERENCE))
    ksampler = schemas["KSampler"]
    assert list(ksampler.inputs)[:4] == ["model", "seed", "steps", "cfg"]
    assert ksampler.inputs["sampler_name"].type == "COMBO" and "euler" in ksampler.inputs["sampler_name"].choices
    assert ksampler.outputs == ("LATENT",) and not ksampler.output_node
    assert schemas["SaveImage"].output_node and schemas["SaveImage"].hidden == {"prompt": "PROMPT",
                                                                                 "extra_pnginfo": "EXTRA_PNGINFO"}


def test_a_registry_answers_in_the_same_shape():
    schemas = create_registry().schemas()
    assert schemas.object_info()["EmptyImage"]["input_order"] == {"required": ["width", "height", "batch_size",
                                                                               "color"]}
    assert NodeSchemas.from_object_info(schemas.object_info())["EmptyImage"] == schemas["EmptyImage"]


@pytest.mark.parametrize(("entry", "match"), [
    ({"input": {"required": {"x": 5}}}, r"node 'N', input 'x': declaration"),
    ({"input": {"required": {"x": ["COMBO", {"options": 7}]}}}, r"input 'x': COMBO options must be a list"),
    ({"input": {"required": {"x": [7]}}}, r"input 'x': type must be"),
    ({"output": ["IMAGE"], "output_is_list": 3}, r"'output_is_list' must be a list"),
    ({"input": [1]}, r"'input' and 'input_order' must be objects"),
])
def test_malformed_entries_name_the_node_and_field(entry, match):
    with pytest.raises(NodeSchemaError, match=match):
        NodeSchemas.from_object_info({"N": entry})


def test_an_unreadable_source_says_which(tmp_path):
    with pytest.raises(NodeSchemaError, match="cannot read node schemas from .*missing.json"):
        load_object_info(str(tmp_path / "missing.json"))


@settings(max_examples=300, deadline=None)
@given(document=json_values | st.dictionaries(st.text(max_size=4), st.dictionaries(
    st.sampled_from(["input", "input_order", "output", "output_is_list", "output_node"]), json_values)))
def test_any_document_reads_or_is_refused_clearly(document):
    try:
        NodeSchemas.from_object_info(document)
    except NodeSchemaError as exc:
        assert str(exc)
