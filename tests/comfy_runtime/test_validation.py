import json

import pytest

from comfygate.comfy_runtime import WorkflowInvalid, validate_prompt

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
    assert node_id in error["details"]
    return error


def test_valid_prompt_passes(registry):
    validate_prompt(save_prompt(), registry)


def test_unknown_class_type(registry):
    prompt = save_prompt()
    prompt["1"]["class_type"] = "KSamplerDeluxe"
    body = invalid(prompt, registry)
    assert body["error"]["type"] == "invalid_prompt"
    assert "KSamplerDeluxe" in body["error"]["message"] and "'1'" in body["error"]["message"]
    assert body["error"]["extra_info"] == {}


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
        (16385, "value_bigger_than_max"),
        ("5", "invalid_input_type"),
        (5.0, "invalid_input_type"),
        (True, "invalid_input_type"),
    ],
)
def test_int_constants(registry, value, error_type):
    prompt = save_prompt(width=value)
    error = only_error(invalid(prompt, registry), "1")
    assert error["type"] == error_type
    assert error["extra_info"]["input_name"] == "width"
    assert error["extra_info"]["received_value"] == value  # never converted


def test_float_accepts_int_but_not_string(registry):
    prompt = save_prompt()
    prompt["3"] = {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 2}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    validate_prompt(prompt, registry)
    prompt["3"]["inputs"]["sigma"] = "2"
    error = only_error(invalid(prompt, registry), "3")
    assert (error["type"], error["extra_info"]["input_name"]) == ("invalid_input_type", "sigma")
    prompt["3"]["inputs"]["sigma"] = float("nan")
    assert only_error(invalid(prompt, registry), "3")["type"] == "invalid_input_type"


def test_value_not_in_list(registry):
    prompt = save_prompt()
    prompt["3"] = {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "magic",
                                                        "width": 4, "height": 4, "crop": "disabled"}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    error = only_error(invalid(prompt, registry), "3")
    assert (error["type"], error["extra_info"]["input_name"]) == ("value_not_in_list", "upscale_method")


@pytest.mark.parametrize(
    "link",
    [["99", 0], ["1", 1], ["1"], [1, 0], ["1", "0"]],
    ids=["missing", "slot", "short", "int-id", "str-slot"],
)
def test_bad_links(registry, link):
    error = only_error(invalid(save_prompt(images_link=link), registry), "2")
    assert error["type"] == "bad_linked_input"
    assert error["extra_info"]["input_name"] == "images"


def test_return_type_mismatch(registry):
    prompt = save_prompt()
    prompt["3"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 4, "height": 4}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    error = only_error(invalid(prompt, registry), "2")
    assert error["type"] == "return_type_mismatch"
    assert error["extra_info"]["input_name"] == "images"
    assert error["extra_info"]["received_type"] == "MASK"


def test_constant_for_link_only_input(registry):
    prompt = save_prompt()
    prompt["2"]["inputs"]["images"] = "a picture"
    error = only_error(invalid(prompt, registry), "2")
    assert (error["type"], error["extra_info"]["input_name"]) == ("invalid_input_type", "images")


@pytest.mark.parametrize("prefix", ["../../x", "/abs/x", "a/../../x", "a\\b", "a\x00b", ""])
def test_unsafe_filename_prefix(registry, prefix):
    error = only_error(invalid(save_prompt(prefix=prefix), registry), "2")
    assert error["type"] == "custom_validation_failed"
    assert error["extra_info"]["input_name"] == "filename_prefix"


def test_subfolder_prefix_is_allowed(registry):
    validate_prompt(save_prompt(prefix="portraits/run"), registry)


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
    assert body["error"]["type"] == "dependency_cycle"
    assert {"3", "4"} <= set(body["node_errors"])


def test_nodes_not_needed_by_outputs_are_not_validated(registry):
    prompt = save_prompt()
    prompt["9"] = {"class_type": "ImageInvert", "inputs": {}}
    validate_prompt(prompt, registry)


def test_all_errors_are_reported_together(registry):
    prompt = save_prompt(width=0, height="x", prefix="../x")
    body = invalid(prompt, registry)
    assert [e["extra_info"]["input_name"] for e in body["node_errors"]["1"]["errors"]] == ["width", "height"]
    assert body["node_errors"]["2"]["errors"][0]["extra_info"]["input_name"] == "filename_prefix"
