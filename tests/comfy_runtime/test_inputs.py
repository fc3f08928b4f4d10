import jsonschema
import pytest

from comfygate.comfy_runtime import (
    InputsInvalid,
    WorkflowInvalid,
    bind_inputs,
    expose_inputs,
    input_schema,
)

PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 8,
                                                 "height": 8, "crop": "disabled"}},
    "3": {"class_type": "ImageBlur", "inputs": {"image": ["2", 0], "blur_radius": 1, "sigma": 1.0}},
    "4": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "5": {"class_type": "ImageCompositeMasked",
          "inputs": {"destination": ["3", 0], "source": ["4", 0], "x": 0, "y": 0, "resize_source": False}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "out"}},
}


def test_default_exposes_every_constant_widget_but_output_paths(registry):
    names = [e.name for e in expose_inputs(PROMPT, registry, None)]
    assert names[:4] == ["1.width", "1.height", "1.batch_size", "1.color"]
    assert "2.image" not in names and "2.upscale_method" in names
    assert {"4.image", "5.resize_source"} <= set(names)
    # Where a node writes is not the caller's to choose unless the workflow's spec says so.
    assert "6.filename_prefix" not in names
    named = expose_inputs(PROMPT, registry, {"prefix": {"node": "6", "input": "filename_prefix"}})
    assert [(e.name, e.input_name) for e in named] == [("prefix", "filename_prefix")]


def test_schema_per_kind(registry):
    exposed = {e.name: e for e in expose_inputs(PROMPT, registry, None)}
    assert exposed["1.width"].kind == "int"
    assert exposed["1.width"].schema == {"type": "integer", "minimum": 1, "maximum": 16384, "default": 64}
    assert exposed["3.sigma"].schema == {"type": "number", "minimum": 0.1, "maximum": 10.0, "default": 1.0}
    prefix = expose_inputs(PROMPT, registry, {"prefix": {"node": "6", "input": "filename_prefix"}})[0]
    assert prefix.schema == {"type": "string", "default": "out"}
    assert exposed["5.resize_source"].schema == {"type": "boolean", "default": False}
    assert exposed["2.crop"].schema == {"enum": ["disabled", "center"], "default": "disabled"}
    image = exposed["4.image"]
    assert image.kind == "image" and image.default == "example.png"
    assert image.schema["type"] == "string" and image.schema["contentEncoding"] == "base64"
    assert image.schema["contentMediaType"] == "image/png" and image.schema["description"]

    schema = input_schema(list(exposed.values()))
    assert schema["additionalProperties"] is False and schema["required"] == []
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"1.width": 100, "2.crop": "center"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"1.width": 0}, schema)


def test_named_spec_and_binding(registry):
    exposed = expose_inputs(PROMPT, registry, {"size": {"node": "1", "input": "width"},
                                               "photo": {"node": "4", "input": "image"}})
    bound = bind_inputs(PROMPT, exposed, {"size": 128, "photo": "uploads/abc.png"})
    assert bound["1"]["inputs"]["width"] == 128 and bound["4"]["inputs"]["image"] == "uploads/abc.png"
    assert PROMPT["1"]["inputs"]["width"] == 64  # the workflow itself is untouched
    assert bind_inputs(PROMPT, exposed, {})["1"]["inputs"]["width"] == 64


def test_bind_lists_every_problem_and_never_coerces(registry):
    exposed = expose_inputs(PROMPT, registry, None)
    values = {"1.width": "5", "1.height": 0, "3.sigma": 99, "2.crop": "diagonal", "5.resize_source": 1,
              "4.image": "../../etc/passwd", "nope": 1}
    with pytest.raises(InputsInvalid) as caught:
        bind_inputs(PROMPT, exposed, values)
    problems = {e["input"]: e["message"] for e in caught.value.errors}
    assert set(problems) == set(values)
    assert "INT" in problems["1.width"] and "min" in problems["1.height"] and "max" in problems["3.sigma"]
    assert "unknown" in problems["nope"]


def test_float_input_accepts_int(registry):
    exposed = expose_inputs(PROMPT, registry, {"sigma": {"node": "3", "input": "sigma"}})
    assert bind_inputs(PROMPT, exposed, {"sigma": 2})["3"]["inputs"]["sigma"] == 2


def test_image_without_a_file_is_required(registry):
    prompt = {**PROMPT, "4": {"class_type": "LoadImage", "inputs": {"image": ""}}}
    exposed = expose_inputs(prompt, registry, {"photo": {"node": "4", "input": "image"}})
    assert input_schema(exposed)["required"] == ["photo"]
    with pytest.raises(InputsInvalid, match="photo"):
        bind_inputs(prompt, exposed, {})


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"node": "99", "input": "width"}, "'99'"),
        ({"node": "1", "input": "depth"}, "'depth'"),
        ({"node": "2", "input": "image"}, "linked"),
        ({"node": "1"}, "must be"),
    ],
)
def test_bad_spec(registry, entry, match):
    with pytest.raises(WorkflowInvalid, match=match) as caught:
        expose_inputs(PROMPT, registry, {"x": entry})
    assert caught.value.error["type"] == "invalid_input_spec"
