import json

import pytest

from comfygate.comfy_runtime import WorkflowInvalid, validate_prompt
from comfygate.comfy_runtime.specs import types_match, widget_value
from comfygate.comfy_runtime.validation import ValidationResult

from .conftest import save_prompt


def invalid(prompt, registry, **kwargs) -> dict:
    with pytest.raises(WorkflowInvalid) as caught:
        validate_prompt(prompt, registry, **kwargs)
    body = caught.value.to_dict()
    json.dumps(body)  # the error body must serialise as it is
    return body


def only_error(body: dict, node_id: str) -> dict:
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    entry = body["node_errors"][node_id]
    assert len(entry["errors"]) == 1, entry
    error = entry["errors"][0]
    assert set(error) == {"type", "message", "details", "extra_info"}
    assert error["extra_info"]["input_name"] in error["details"]  # ComfyUI's details start with the input
    assert node_id in body["error"]["details"]
    return error


def test_valid_prompt_passes(registry):
    result = validate_prompt(save_prompt(), registry)
    assert result == ValidationResult(outputs=("2",), node_errors={})


def test_unknown_class_type(registry):
    prompt = save_prompt()
    prompt["1"]["class_type"] = "KSamplerDeluxe"
    body = invalid(prompt, registry)
    assert body["error"]["type"] == "invalid_prompt"
    assert body["error"]["message"] == "Cannot execute because node KSamplerDeluxe does not exist."
    assert body["error"]["details"] == "Node ID '#1'"
    assert body["error"]["extra_info"] == {"missing_node_types": ["KSamplerDeluxe"], "nodes": {"KSamplerDeluxe": ["1"]},
                                           "schemas": "this runtime"}
    assert body["node_errors"] == {}


def test_every_unknown_class_type_is_listed(registry):
    prompt = save_prompt()
    prompt["1"]["class_type"] = "KSamplerDeluxe"
    prompt["3"] = {"class_type": "Upscaler9000", "inputs": {}}
    prompt["4"] = {"class_type": "KSamplerDeluxe", "inputs": {}}
    error = invalid(prompt, registry)["error"]
    assert error["extra_info"]["nodes"] == {"KSamplerDeluxe": ["1", "4"], "Upscaler9000": ["3"]}
    assert "Upscaler9000 (node 3)" in error["message"]


def test_no_outputs(registry):
    prompt = save_prompt()
    del prompt["2"]
    assert invalid(prompt, registry)["error"]["type"] == "prompt_no_outputs"


def test_required_input_missing(registry):
    prompt = save_prompt()
    del prompt["1"]["inputs"]["width"]
    error = only_error(invalid(prompt, registry), "1")
    assert error["type"] == "required_input_missing"
    assert error["extra_info"]["input_name"] == "width"


def test_node_errors_shape(registry):
    prompt = save_prompt()
    prompt["1"]["inputs"]["width"] = 0
    entry = invalid(prompt, registry)["node_errors"]["1"]
    assert entry["class_type"] == "EmptyImage" and entry["dependent_outputs"] == ["2"]


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (0, "value_smaller_than_min"),
        ("0", "value_smaller_than_min"),
        (16385, "value_bigger_than_max"),
        ("5.5", "invalid_input_type"),
        ("five", "invalid_input_type"),
        (None, "invalid_input_type"),
        ({"a": 1}, "invalid_input_type"),
        (float("inf"), "invalid_input_type"),
    ],
)
def test_int_constants(registry, value, error_type):
    prompt = save_prompt(width=value)
    error = only_error(invalid(prompt, registry), "1")
    assert error["type"] == error_type
    assert error["extra_info"]["input_name"] == "width"
    assert error["extra_info"]["received_value"] == value  # never converted


@pytest.mark.parametrize("value", [8, "8", 8.0, 8.9, " 8 ", {"__value__": 8}])
def test_int_constants_that_comfyui_converts_pass_unchanged(registry, value):
    prompt = save_prompt(width=value)
    validate_prompt(prompt, registry)
    assert prompt["1"]["inputs"]["width"] == value  # validation converts for its checks only


def test_float_accepts_what_float_converts_but_not_non_finite(registry):
    prompt = save_prompt()
    prompt["3"] = {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 2}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    validate_prompt(prompt, registry)
    prompt["3"]["inputs"]["sigma"] = "2"
    validate_prompt(prompt, registry)
    for bad in ("two", float("nan"), "inf"):
        prompt["3"]["inputs"]["sigma"] = bad
        error = only_error(invalid(prompt, registry), "3")
        assert (error["type"], error["extra_info"]["input_name"]) == ("invalid_input_type", "sigma")


def test_value_not_in_list(registry):
    prompt = save_prompt()
    prompt["3"] = {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "magic",
                                                        "width": 4, "height": 4, "crop": "disabled"}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    error = only_error(invalid(prompt, registry), "3")
    assert (error["type"], error["extra_info"]["input_name"]) == ("value_not_in_list", "upscale_method")


@pytest.mark.parametrize(
    ("link", "error_type"),
    [
        (["1"], "bad_linked_input"),
        (["1", 0, 0], "bad_linked_input"),
        (["99", 0], "exception_during_validation"),
        (["1", 1], "exception_during_validation"),
        (["1", -1], "exception_during_validation"),
        (["1", True], "exception_during_validation"),
        ([1, 0], "exception_during_validation"),
        ([["1"], 0], "exception_during_validation"),
        (["1", "0"], "exception_during_validation"),
    ],
    ids=["short", "long", "missing", "slot", "negative-slot", "bool-slot", "int-id", "list-id", "str-slot"],
)
def test_bad_links(registry, link, error_type):
    error = only_error(invalid(save_prompt(images_link=link), registry), "2")
    assert error["type"] == error_type
    assert error["extra_info"]["input_name"] == "images"
    assert error["extra_info"]["received_value"] == link


def test_return_type_mismatch(registry):
    prompt = save_prompt()
    prompt["3"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 4, "height": 4}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    error = only_error(invalid(prompt, registry), "2")
    assert error["type"] == "return_type_mismatch"
    assert error["extra_info"]["input_name"] == "images"
    assert error["extra_info"]["received_type"] == "MASK"


def test_constant_for_link_only_input_passes_as_in_comfyui(registry):
    # ComfyUI checks constants of INT/FLOAT/STRING/BOOLEAN/COMBO inputs only; the node fails when it runs.
    prompt = save_prompt()
    prompt["2"]["inputs"]["images"] = "a picture"
    assert validate_prompt(prompt, registry).outputs == ("2",)


@pytest.mark.parametrize("prefix", ["../../x", "/abs/x", "a/../../x", "a\\b", "a\x00b", ""])
def test_unsafe_filename_prefix(registry, prefix):
    error = only_error(invalid(save_prompt(prefix=prefix), registry), "2")
    assert error["type"] == "custom_validation_failed"
    assert error["extra_info"]["input_name"] == "filename_prefix"


def test_subfolder_prefix_is_allowed(registry):
    result = validate_prompt(save_prompt(prefix="portraits/run"), registry)
    assert result.outputs == ("2",) and result.node_errors == {}


def load_prompt(name: str) -> dict:
    return {
        "5": {"class_type": "LoadImage", "inputs": {"image": name}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\x.png", "x\x00.png", ""])
def test_unsafe_load_image_names(registry, name):
    for skip in ((), [("5", "image")]):
        error = only_error(invalid(load_prompt(name), registry, skip_file_check=skip), "5")
        assert error["type"] == "custom_validation_failed"
        assert error["extra_info"]["input_name"] == "image"


def test_load_image_existence_only_checked_with_input_dir(registry, tmp_path):
    validate_prompt(load_prompt("later.png"), registry)
    error = only_error(invalid(load_prompt("later.png"), registry, input_dir=tmp_path), "5")
    assert error["extra_info"]["input_name"] == "image"
    validate_prompt(load_prompt("later.png"), registry, input_dir=tmp_path, skip_file_check=[("5", "image")])


def test_cycle_is_invalid(registry):
    prompt = save_prompt(images_link=("3", 0))
    prompt["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["4", 0]}}
    prompt["4"] = {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}}
    body = invalid(prompt, registry)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"3", "4"}
    for node_id in ("3", "4"):
        error = only_error(body, node_id)
        assert error["type"] == "dependency_cycle"
        assert error["extra_info"]["input_name"] == "image"
        assert body["node_errors"][node_id]["dependent_outputs"] == ["2"]


def test_self_link_is_a_cycle(registry):
    prompt = save_prompt(images_link=("3", 0))
    prompt["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}}
    error = only_error(invalid(prompt, registry), "3")
    assert (error["type"], error["extra_info"]["received_value"]) == ("dependency_cycle", ["3", 0])


def test_long_chains_do_not_exhaust_the_stack(registry):
    prompt = save_prompt(images_link=("5000", 0))
    for n in range(3, 5001):
        prompt[str(n)] = {"class_type": "ImageInvert", "inputs": {"image": [str(n - 1) if n > 3 else "1", 0]}}
    assert validate_prompt(prompt, registry).outputs == ("2",)
    prompt["1"]["inputs"]["width"] = 0
    body = invalid(prompt, registry)
    assert set(body["node_errors"]) == {"1"}


def test_nodes_not_needed_by_outputs_are_not_validated(registry):
    prompt = save_prompt()
    prompt["9"] = {"class_type": "ImageInvert", "inputs": {}}  # no image: invalid, but nothing uses it
    result = validate_prompt(prompt, registry)
    assert result.outputs == ("2",) and result.node_errors == {}


def test_all_errors_are_reported_together(registry):
    prompt = save_prompt(width=0, height="x", prefix="../x")
    body = invalid(prompt, registry)
    assert [e["extra_info"]["input_name"] for e in body["node_errors"]["1"]["errors"]] == ["width", "height"]
    assert body["node_errors"]["2"]["errors"][0]["extra_info"]["input_name"] == "filename_prefix"


@pytest.mark.parametrize(
    ("received", "expected", "match"),
    [
        ("INT", "INT", True),
        ("INT", "INT,FLOAT", True),
        ("STRING,BOOLEAN", "STRING, INT", True),
        ("IMAGE", "MASK", False),
        ("IMAGE,LATENT", "MASK,MODEL", False),
        ("*", "MASK", True),
        ("IMAGE", "*", True),
        ("IMAGE", "MASK,*", True),
        ("COMBO", "COMBO", True),
    ],
)
def test_types_match_as_in_comfyui(received, expected, match):
    assert types_match(received, expected) is match


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("INT", "5", 5),
        ("INT", 5.9, 5),
        ("INT", True, 1),
        ("INT", {"__value__": "7"}, 7),
        ("FLOAT", "2.5", 2.5),
        ("FLOAT", 2, 2.0),
        ("STRING", 5, "5"),
        ("STRING", None, "None"),
        ("BOOLEAN", "false", True),
        ("BOOLEAN", 0, False),
        ("COMBO", {"__value__": ["a", "b"]}, ["a", "b"]),
        ("IMAGE", "x", "x"),
    ],
)
def test_widget_value_converts_as_comfyui(type_, value, expected):
    converted = widget_value(type_, value)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize(("type_", "value"), [("INT", "5.5"), ("INT", None), ("INT", float("inf")),
                                              ("FLOAT", "x"), ("FLOAT", float("nan")), ("FLOAT", [1])])
def test_widget_value_refuses_what_comfyui_cannot_convert(type_, value):
    with pytest.raises((TypeError, ValueError, OverflowError)):
        widget_value(type_, value)
