"""Validation gives ComfyUI's verdicts: the top-level error, and for each node error its type, node id,
class_type, input name and received value.

Schemas come from a real ComfyUI 0.3.64 (the reference object_info) and from small node classes with
VALIDATE_INPUTS registered in a fresh registry.
"""

import asyncio
import json

import pytest

from comfygate.comfy_runtime import NodeRegistry, NodeSchemas, WorkflowInvalid, validate_prompt
from comfygate.comfy_runtime.validation import ValidationResult


@pytest.fixture(scope="module")
def comfy(reference) -> NodeSchemas:
    return NodeSchemas.from_object_info(reference, source="ComfyUI 0.3.64")


def refused(prompt, source, **kwargs) -> dict:
    with pytest.raises(WorkflowInvalid) as caught:
        validate_prompt(prompt, source, **kwargs)
    body = caught.value.to_dict()
    json.dumps(body)  # the body goes out as JSON as it is
    return body


def node_error(body_or_result, node_id: str, class_type: str) -> dict:
    """The one error of ``node_id``, after checking the entry's ComfyUI shape."""
    node_errors = body_or_result["node_errors"] if isinstance(body_or_result, dict) else body_or_result.node_errors
    entry = node_errors[node_id]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert entry["class_type"] == class_type
    assert len(entry["errors"]) == 1, entry["errors"]
    error = entry["errors"][0]
    assert set(error) == {"type", "message", "details", "extra_info"}
    return error


def verdict(error: dict) -> tuple:
    info = error["extra_info"]
    return error["type"], info.get("input_name"), info.get("received_value")


def txt2img() -> dict:
    """The default ComfyUI graph, with a checkpoint name the reference server has (its list is empty)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 1, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}},
    }


# -- top level ----------------------------------------------------------------------------------------


def test_unknown_class_type_is_invalid_prompt(comfy):
    prompt = txt2img()
    prompt["3"]["class_type"] = "KSamplerDeluxe"
    body = refused(prompt, comfy)
    assert body["error"]["type"] == "invalid_prompt"
    assert body["error"]["message"] == "Cannot execute because node KSamplerDeluxe does not exist."
    assert body["error"]["details"] == "Node ID '#3'"
    assert body["node_errors"] == {}


def test_node_without_class_type_is_invalid_prompt(comfy):
    prompt = txt2img()
    del prompt["5"]["class_type"]
    error = refused(prompt, comfy)["error"]
    assert error == {"type": "invalid_prompt",
                     "message": "Cannot execute because a node is missing the class_type property.",
                     "details": "Node ID '#5'", "extra_info": {}}


def test_no_output_node(comfy):
    prompt = txt2img()
    del prompt["9"]
    assert refused(prompt, comfy)["error"] == {
        "type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}


def test_all_outputs_failing_refuses_the_prompt(comfy):
    body = refused(txt2img(), comfy)  # the reference server has no checkpoints: [] holds no name
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    error = node_error(body, "4", "CheckpointLoaderSimple")
    assert verdict(error) == ("value_not_in_list", "ckpt_name", "model.safetensors")
    assert error["details"] == "ckpt_name: 'model.safetensors' not in []"
    assert body["node_errors"]["4"]["dependent_outputs"] == ["9"]
    assert set(body["node_errors"]) == {"4"}  # the nodes downstream fail too, without errors of their own


def test_some_outputs_failing_is_accepted_with_node_errors(comfy):
    prompt = txt2img()
    prompt["20"] = {"class_type": "PrimitiveInt", "inputs": {"value": 3}}
    prompt["21"] = {"class_type": "PreviewAny", "inputs": {"source": ["20", 0]}}
    result = validate_prompt(prompt, comfy)
    assert result.outputs == ("21",)
    assert verdict(node_error(result, "4", "CheckpointLoaderSimple"))[0] == "value_not_in_list"
    assert result.node_errors["4"]["dependent_outputs"] == ["9"]
    with pytest.raises(WorkflowInvalid) as caught:
        result.raise_for_node_errors()
    assert caught.value.error["type"] == "prompt_outputs_failed_validation"
    assert caught.value.node_errors == result.node_errors


# -- per node, against ComfyUI's own schemas ----------------------------------------------------------


def sampler_graph(**ksampler_inputs) -> dict:
    """Checkpoint-free: KSampler fed by nodes whose inputs all validate on the reference schemas."""
    prompt = txt2img()
    prompt["3"]["inputs"].update(ksampler_inputs)
    return prompt


def ksampler_error(comfy, **ksampler_inputs) -> dict:
    body = refused(sampler_graph(**ksampler_inputs), comfy)
    return node_error(body, "3", "KSampler")


def test_required_input_missing(comfy):
    prompt = sampler_graph()
    del prompt["3"]["inputs"]["steps"]
    error = node_error(refused(prompt, comfy), "3", "KSampler")
    assert verdict(error) == ("required_input_missing", "steps", None)
    assert (error["message"], error["details"]) == ("Required input is missing", "steps")


def test_bad_linked_input(comfy):
    error = ksampler_error(comfy, model=["4", 0, 1])
    assert verdict(error) == ("bad_linked_input", "model", ["4", 0, 1])
    assert error["extra_info"]["input_config"][0] == "MODEL"


def test_return_type_mismatch(comfy):
    error = ksampler_error(comfy, model=["4", 1])
    assert verdict(error) == ("return_type_mismatch", "model", ["4", 1])
    assert error["message"] == "Return type mismatch between linked nodes"
    assert error["details"] == "model, received_type(CLIP) mismatch input_type(MODEL)"
    assert (error["extra_info"]["received_type"], error["extra_info"]["linked_node"]) == ("CLIP", ["4", 1])


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"steps": "many"}, ("invalid_input_type", "steps", "many")),
        ({"cfg": [1]}, ("bad_linked_input", "cfg", [1])),
        ({"cfg": None}, ("invalid_input_type", "cfg", None)),
        ({"steps": 0}, ("value_smaller_than_min", "steps", 0)),
        ({"steps": "0"}, ("value_smaller_than_min", "steps", "0")),
        ({"denoise": 1.5}, ("value_bigger_than_max", "denoise", 1.5)),
        ({"scheduler": "fast"}, ("value_not_in_list", "scheduler", "fast")),
        ({"sampler_name": "euler_z"}, ("value_not_in_list", "sampler_name", "euler_z")),
    ],
)
def test_constant_errors(comfy, inputs, expected):
    prompt = sampler_graph(**inputs)
    prompt["4"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}}
    body = refused(prompt, comfy)
    assert verdict(node_error(body, "3", "KSampler")) == expected
    assert prompt["3"]["inputs"][expected[1]] == expected[2]  # the prompt is never changed


def test_messages_are_comfyuis(comfy):
    assert ksampler_error(comfy, steps="many")["message"] == "Failed to convert an input value to a INT value"
    assert ksampler_error(comfy, steps=0)["message"] == "Value 0 smaller than min of 1"
    assert ksampler_error(comfy, denoise=1.5)["message"] == "Value 1.5 bigger than max of 1.0"
    short = ksampler_error(comfy, scheduler="fast")
    assert short["details"].startswith("scheduler: 'fast' not in ['simple', ")
    assert short["extra_info"]["input_config"][0][0] == "simple"
    long = ksampler_error(comfy, sampler_name="euler_z")  # more than 20 choices: not echoed back
    assert long["details"] == "sampler_name: 'euler_z' not in (list of length 42)"
    assert long["extra_info"]["input_config"] is None


def test_numeric_strings_and_floats_convert_as_in_comfyui(reference):
    # ComfyUI calls int()/float() on constants: "20" and 20.0 are valid steps, "20.5" is not.
    schemas = NodeSchemas.from_object_info({**reference, "CheckpointLoaderSimple": {
        **reference["CheckpointLoaderSimple"],
        "input": {"required": {"ckpt_name": [["model.safetensors"], {}]}}}})
    for steps in ("20", 20.0, 20.7, True):
        prompt = sampler_graph(steps=steps, cfg="7.5", seed="3")
        assert validate_prompt(prompt, schemas).outputs == ("9",)
        assert prompt["3"]["inputs"]["steps"] == steps
    assert verdict(node_error(refused(sampler_graph(steps="20.5"), schemas), "3", "KSampler")) == (
        "invalid_input_type", "steps", "20.5")


def test_v3_combo_options_are_checked(comfy):
    prompt = {
        "1": {"class_type": "TripoTextToModelNode", "inputs": {"prompt": "a chair", "model_version": "v9"}},
    }
    error = node_error(refused(prompt, comfy), "1", "TripoTextToModelNode")
    assert verdict(error) == ("value_not_in_list", "model_version", "v9")


def test_comma_separated_input_types(comfy):
    prompt = {
        "1": {"class_type": "TripoTextToModelNode", "inputs": {"prompt": "a chair"}},
        "2": {"class_type": "TripoRigNode", "inputs": {"original_model_task_id": ["1", 1]}},
        "3": {"class_type": "TripoConversionNode", "inputs": {"original_model_task_id": ["2", 1], "format": "GLTF"}},
    }
    assert validate_prompt(prompt, comfy).outputs == ("1", "2", "3")  # RIG_TASK_ID is one of the set
    prompt["3"]["inputs"]["original_model_task_id"] = ["1", 0]
    result = validate_prompt(prompt, comfy)
    assert result.outputs == ("1", "2")
    error = node_error(result, "3", "TripoConversionNode")
    assert verdict(error) == ("return_type_mismatch", "original_model_task_id", ["1", 0])
    assert error["extra_info"]["received_type"] == "STRING"


def test_any_type_takes_any_link_and_any_constant(comfy):
    prompt = {"5": txt2img()["5"], "1": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}}}
    assert validate_prompt(prompt, comfy).outputs == ("1",)
    prompt["1"]["inputs"]["source"] = {"any": "thing"}
    assert validate_prompt(prompt, comfy).outputs == ("1",)


def test_link_to_missing_node_on_an_output_node(comfy):
    prompt = txt2img()
    prompt["9"]["inputs"]["images"] = ["80", 0]
    body = refused(prompt, comfy)
    error = node_error(body, "9", "SaveImage")
    assert verdict(error) == ("exception_during_validation", "images", ["80", 0])
    assert error["message"] == "Exception when validating node"
    assert error["extra_info"]["exception_type"] == "KeyError"
    assert set(body["node_errors"]) == {"9"}  # its ancestors were never reached


def test_link_to_missing_output_slot_on_an_inner_node(comfy):
    prompt = txt2img()
    prompt["4"]["inputs"]["ckpt_name"] = "model.safetensors"
    prompt["8"]["inputs"]["vae"] = ["4", 3]  # the loader has 3 outputs
    body = refused(prompt, comfy)
    error = node_error(body, "8", "VAEDecode")
    assert verdict(error) == ("exception_during_inner_validation", "vae", ["4", 3])
    assert error["message"] == "Exception when validating inner node"
    assert error["extra_info"]["exception_type"] == "IndexError"
    assert "9" not in body["node_errors"]  # the consumer fails without an error of its own
    assert body["node_errors"]["8"]["dependent_outputs"] == ["9"]


def test_an_exception_replaces_the_nodes_other_errors(comfy):
    prompt = txt2img()
    prompt["3"]["inputs"].update(steps=0, latent_image=["5", 7])
    error = node_error(refused(prompt, comfy), "3", "KSampler")
    assert verdict(error) == ("exception_during_inner_validation", "latent_image", ["5", 7])


def test_errors_of_ancestors_are_reported_on_the_ancestor_once(comfy):
    prompt = txt2img()
    prompt["5"]["inputs"]["width"] = 8  # min 16
    prompt["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    body = refused(prompt, comfy)
    assert set(body["node_errors"]) == {"4", "5"}
    assert verdict(node_error(body, "5", "EmptyLatentImage")) == ("value_smaller_than_min", "width", 8)
    assert body["node_errors"]["5"]["dependent_outputs"] == ["9", "10"]


def test_optional_and_hidden_inputs(comfy):
    prompt = {"1": {"class_type": "TripoTextToModelNode", "inputs": {"prompt": "a chair"}}}
    assert validate_prompt(prompt, comfy).outputs == ("1",)  # every optional input absent
    prompt["1"]["inputs"]["image_seed"] = "seed"
    assert verdict(node_error(refused(prompt, comfy), "1", "TripoTextToModelNode")) == (
        "invalid_input_type", "image_seed", "seed")
    # A value given for a hidden input (or an undeclared one) is ignored, as ComfyUI does.
    prompt = {"2": {"class_type": "TripoRigNode", "inputs": {"original_model_task_id": ["1", 1], "unique_id": [],
                                                            "extra": None}},
              "1": {"class_type": "TripoTextToModelNode", "inputs": {"prompt": "a chair"}}}
    assert validate_prompt(prompt, comfy).outputs == ("1", "2")


# -- VALIDATE_INPUTS, on node classes ------------------------------------------------------------------


class _Node:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    def run(self, **kwargs):
        return (0,)


class Number(_Node):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"min": 0, "max": 10})}}


class Text(_Node):
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {})}}


class Sink(_Node):
    """An output node taking a number of either type, and an optional label."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT,FLOAT",)}, "optional": {"label": ("STRING",)}}


class Even(_Node):
    """Owns 'value' (no min/max check by the validator); its 'limit' keeps the usual checks."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"min": 0, "max": 10}), "limit": ("INT", {"min": 0, "max": 5})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        if value is None:
            return True  # linked: checked when it runs
        return True if value % 2 == 0 else f"{value} is odd"


class Refuses(_Node):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT",), "b": ("STRING",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, a, b):
        return False


class Echo(_Node):
    """Takes everything through **kwargs and answers with what it received."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"count": ("INT", {"min": 0, "max": 3}), "mode": (["a", "b"],), "source": ("INT",)},
            "hidden": {"node": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        return f"got {sorted(kwargs.items())}"


class Typed(_Node):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        received = input_types.get("value")
        return True if received in ("INT", "STRING") else f"cannot take {received}"


class Explodes(_Node):
    OUTPUT_NODE = True
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        raise RuntimeError("boom")


class AsyncEven(Even):
    @classmethod
    async def VALIDATE_INPUTS(cls, value):
        return True if value is None or value % 2 == 0 else f"{value} is odd"


@pytest.fixture(scope="module")
def nodes() -> NodeRegistry:
    registry = NodeRegistry()
    registry.register_pack({cls.__name__: cls for cls in (Number, Text, Sink, Even, Refuses, Echo, Typed,
                                                           Explodes, AsyncEven)}, source="tests")
    return registry


def into_sink(node: dict, slot: int = 0) -> dict:
    return {"1": node, "2": {"class_type": "Sink", "inputs": {"value": ["1", slot]}}}


def test_custom_validation_failed(nodes):
    prompt = into_sink({"class_type": "Even", "inputs": {"value": 3, "limit": 1}})
    error = node_error(refused(prompt, nodes), "1", "Even")
    assert verdict(error) == ("custom_validation_failed", "value", 3)
    assert (error["message"], error["details"]) == ("Custom validation failed for node", "value - 3 is odd")


def test_async_validate_inputs(nodes):
    prompt = into_sink({"class_type": "AsyncEven", "inputs": {"value": 3, "limit": 1}})
    assert verdict(node_error(refused(prompt, nodes), "1", "AsyncEven"))[:2] == ("custom_validation_failed", "value")


def test_async_validate_inputs_from_inside_an_event_loop(nodes):
    prompt = into_sink({"class_type": "AsyncEven", "inputs": {"value": 3, "limit": 1}})

    async def validate_in_loop():
        return validate_prompt(prompt, nodes)

    with pytest.raises(WorkflowInvalid) as caught:
        asyncio.run(validate_in_loop())
    assert caught.value.node_errors["1"]["errors"][0]["details"] == "value - 3 is odd"


def test_validate_inputs_owns_min_max_of_its_inputs_only(nodes):
    prompt = into_sink({"class_type": "Even", "inputs": {"value": 12, "limit": 1}})  # max 10, but owned
    assert validate_prompt(prompt, nodes).outputs == ("2",)
    prompt["1"]["inputs"]["limit"] = 6
    assert verdict(node_error(refused(prompt, nodes), "1", "Even")) == ("value_bigger_than_max", "limit", 6)


def test_validate_inputs_gets_none_for_a_linked_input(nodes):
    prompt = into_sink({"class_type": "Even", "inputs": {"value": ["3", 0], "limit": 1}})
    prompt["3"] = {"class_type": "Number", "inputs": {"value": 3}}
    assert validate_prompt(prompt, nodes).outputs == ("2",)


def test_false_fails_every_argument(nodes):
    prompt = into_sink({"class_type": "Refuses", "inputs": {"a": 1, "b": "x"}})
    entry = refused(prompt, nodes)["node_errors"]["1"]
    assert [(e["type"], e["details"], e["extra_info"]["received_value"]) for e in entry["errors"]] == [
        ("custom_validation_failed", "a", 1), ("custom_validation_failed", "b", "x")]


def test_kwargs_hook_gets_converted_constants_hidden_values_and_owns_every_check(nodes):
    # count 9 (max 3) and mode "c" (not a choice) are the hook's to judge: no range or choice errors.
    prompt = into_sink({"class_type": "Echo", "inputs": {"count": "9", "mode": "c", "source": ["3", 0]}})
    prompt["3"] = {"class_type": "Number", "inputs": {"value": 1}}
    errors = refused(prompt, nodes)["node_errors"]["1"]["errors"]
    assert {e["type"] for e in errors} == {"custom_validation_failed"}
    assert [e["extra_info"]["input_name"] for e in errors] == ["count", "mode", "source", "node", "prompt"]
    got = "got [('count', 9), ('mode', 'c'), ('node', '1'), ('prompt', {}), ('source', None)]"
    assert errors[0]["details"] == f"count - {got}"


def test_input_types_replaces_the_link_type_check(nodes):
    prompt = into_sink({"class_type": "Typed", "inputs": {"value": ["3", 0]}})
    prompt["3"] = {"class_type": "Text", "inputs": {"text": "5"}}  # STRING into INT: the hook accepts it
    assert validate_prompt(prompt, nodes).outputs == ("2",)
    prompt["1"]["class_type"] = "Number"  # the same link into a node without the hook
    error = node_error(refused(prompt, nodes), "1", "Number")
    assert verdict(error) == ("return_type_mismatch", "value", ["3", 0])


def test_raising_hook_is_an_exception_during_validation(nodes):
    body = refused({"1": {"class_type": "Explodes", "inputs": {"value": 1}}}, nodes)
    error = node_error(body, "1", "Explodes")
    assert error["type"] == "exception_during_validation"
    assert error["details"] == "boom"
    assert error["extra_info"]["exception_type"] == "RuntimeError"


def test_raising_hook_on_an_inner_node(nodes):
    prompt = into_sink({"class_type": "Explodes", "inputs": {"value": 1}})
    # Output 0 comes first and reaches node 1 as an ancestor: the exception is "inner", and stays so
    # when node 1 comes up as an output itself.
    prompt["0"] = {"class_type": "Sink", "inputs": {"value": ["1", 0]}}
    body = refused(prompt, nodes)
    assert node_error(body, "1", "Explodes")["type"] == "exception_during_inner_validation"
    assert body["node_errors"]["1"]["dependent_outputs"] == ["0", "1", "2"]


def test_missing_argument_of_the_hook_fails_like_comfyui(nodes):
    # ComfyUI calls the hook without the missing input; the TypeError replaces required_input_missing.
    prompt = into_sink({"class_type": "Even", "inputs": {"limit": 1}})
    error = node_error(refused(prompt, nodes), "1", "Even")
    assert error["type"] == "exception_during_inner_validation"
    assert error["extra_info"]["exception_type"] == "TypeError"


def test_hooks_need_the_node_classes(nodes):
    # The same schemas without their classes (another server's /object_info) have no hooks to call.
    schemas = NodeSchemas.from_object_info(nodes.schemas().object_info())
    prompt = into_sink({"class_type": "Even", "inputs": {"value": 3, "limit": 1}})
    assert validate_prompt(prompt, schemas) == ValidationResult(outputs=("2",), node_errors={})
    assert "1" in refused(prompt, nodes)["node_errors"]


def test_registry_and_its_schemas_agree_without_hooks(nodes):
    schemas = NodeSchemas.from_object_info(nodes.schemas().object_info())
    prompt = into_sink({"class_type": "Number", "inputs": {"value": 11}})
    assert refused(prompt, nodes) == refused(prompt, schemas)
