"""What a workflow needs from the runtime checking it, against another runtime's schemas (ComfyUI 0.3.64's
recorded /object_info): missing model files named with the missing node types, inputs exposed from bare
schemas, and this package's VALIDATE_INPUTS hooks lent to schemas of the same nodes."""

import copy

import pytest

from comfygate.comfy_runtime import (
    MissingModelFiles,
    NodeSchemas,
    UnknownNodeTypes,
    WorkflowInvalid,
    expose_inputs,
    load_valid_workflow,
    missing_model_files,
    validate_prompt,
)

from .conftest import save_prompt

CHECKPOINT = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
}


@pytest.fixture
def comfy(reference) -> NodeSchemas:
    return NodeSchemas.from_object_info(reference, source="ComfyUI 0.3.64")


def test_model_files_missing_from_a_loaders_choices_are_listed(comfy):
    assert missing_model_files(CHECKPOINT, comfy) == [{"node": "4", "class_type": "CheckpointLoaderSimple",
                                                       "input": "ckpt_name", "value": "sd_xl_base_1.0.safetensors"}]
    # Not a model file name (a COMBO value any node may refuse) or an unknown node: not listed.
    odd = copy.deepcopy(CHECKPOINT)
    odd["4"]["inputs"]["ckpt_name"] = "not-a-file"
    odd["9"]["class_type"] = "NoSuchNode"
    assert missing_model_files(odd, comfy) == []


def test_an_upload_failing_for_model_files_names_them_and_keeps_comfyuis_errors(comfy):
    with pytest.raises(MissingModelFiles) as caught:
        load_valid_workflow(CHECKPOINT, comfy)
    assert [m["value"] for m in caught.value.missing_models] == ["sd_xl_base_1.0.safetensors"]
    assert caught.value.node_errors["4"]["errors"][0]["type"] == "value_not_in_list"


def test_unknown_node_types_also_name_the_known_nodes_missing_files(comfy):
    prompt = copy.deepcopy(CHECKPOINT)
    prompt["5"]["class_type"] = "FancyLatent"
    with pytest.raises(UnknownNodeTypes) as caught:
        validate_prompt(prompt, comfy)
    assert caught.value.missing == {"FancyLatent": ["5"]}
    assert [m["node"] for m in caught.value.missing_models] == ["4"]
    assert caught.value.error["extra_info"]["missing_model_files"] == caught.value.missing_models


def test_inputs_are_exposed_from_bare_schemas(comfy):
    exposed = expose_inputs(CHECKPOINT, comfy, {"size": {"node": "5", "input": "width"}})
    assert exposed[0].schema["maximum"] == 16384


def test_hooks_lend_a_registrys_checks_to_schemas_of_the_same_nodes(registry):
    bare = NodeSchemas.from_object_info(registry.schemas().object_info(), source="a worker")
    unsafe = save_prompt(prefix="../outside")
    assert validate_prompt(unsafe, bare).outputs == ("2",)  # schemas alone have no VALIDATE_INPUTS
    with pytest.raises(WorkflowInvalid) as caught:
        validate_prompt(unsafe, bare, hooks=registry)
    assert caught.value.node_errors["2"]["errors"][0]["type"] == "custom_validation_failed"
