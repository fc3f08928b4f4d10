import io

import numpy as np
import pytest
from PIL import Image

from comfygate.comfy_runtime import (
    NodeExecutionError,
    RunCanceled,
    RunContext,
    WorkflowInvalid,
    create_registry,
    execute,
)

from .conftest import save_prompt
from .execution_nodes import PassImage, of_type, register

CHAIN = {
    "10": {"class_type": "EmptyImage",
           "inputs": {"width": 6, "height": 4, "batch_size": 2, "color": 0xFF0000}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "a"}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    "7": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 4, "height": 4}},  # not needed
}


def run(prompt, registry, tmp_path, **context):
    return execute(prompt, registry, RunContext(input_dir=tmp_path, **context))


def test_runs_needed_nodes_in_order_and_numbers_outputs(registry, tmp_path):
    events = []
    result = run(CHAIN, registry, tmp_path, on_event=events.append, run_id="r1")
    assert [e["node"] for e in of_type(events, "executing")] == ["10", "2", "3", "4", None]  # "7" feeds no output
    assert [e["type"] for e in events] == [
        "execution_start", "execution_cached", "executing", "executing", "executing", "executed", "executing",
        "executed", "execution_success", "executing"]
    assert {e["prompt_id"] for e in events} == {"r1"}
    saved = of_type(events, "executed")[0]
    assert (saved["node"], saved["display_node"]) == ("3", "3")
    assert saved["output"]["images"] == [{"index": 0, "filename_prefix": "a", "width": 6, "height": 4},
                                         {"index": 1, "filename_prefix": "a", "width": 6, "height": 4}]
    assert [(o.index, o.node_id, o.class_type) for o in result.outputs] == [
        (0, "3", "SaveImage"), (1, "3", "SaveImage"), (2, "4", "PreviewImage"), (3, "4", "PreviewImage")]
    first = result.outputs[0]
    assert (first.width, first.height, first.filename_prefix) == (6, 4, "a")
    assert first.pixels.shape == (4, 6, 3) and np.allclose(first.pixels[0, 0], [0.0, 1.0, 1.0])
    assert np.asarray(Image.open(io.BytesIO(first.png)))[0, 0].tolist() == [0, 255, 255]
    assert list(result.node_ms) == ["10", "2", "3", "4"] and result.cached_nodes == []
    assert result.execute_ms >= max(result.node_ms.values())


def test_cancel_between_nodes(registry, tmp_path):
    events = []
    started = lambda: of_type(events, "executing")  # noqa: E731
    with pytest.raises(RunCanceled, match="before node 3"):
        run(CHAIN, registry, tmp_path, on_event=events.append, should_cancel=lambda: len(started()) >= 2)
    assert [e["node"] for e in started()] == ["10", "2"]
    assert events[-1]["type"] == "execution_interrupted"
    assert (events[-1]["node_id"], events[-1]["node_type"], events[-1]["executed"]) == ("3", "SaveImage", ["10", "2"])
    assert not of_type(events, "execution_success")


def test_node_failure_names_node(registry, tmp_path):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    events = []
    with pytest.raises(NodeExecutionError) as caught:
        run(prompt, registry, tmp_path, on_event=events.append)
    body = caught.value.to_dict()
    failed = events[-1]
    assert failed["type"] == "execution_error" and not of_type(events, "execution_success")
    assert (failed["node_id"], failed["node_type"], failed["exception_type"]) == ("1", "LoadImage", "FileNotFoundError")
    assert "missing.png" in failed["exception_message"] and "load_image" in "".join(failed["traceback"])
    assert "FileNotFoundError" in caught.value.traceback
    assert body["node_id"] == "1" and body["node_type"] == "LoadImage"
    assert "'image'" in body["message"] and "missing.png" in body["message"]
    assert body["exception_type"] == "FileNotFoundError"
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_load_image_runs_from_input_dir(registry, tmp_path):
    Image.new("RGBA", (3, 2), (10, 20, 30, 255)).save(tmp_path / "in.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 1]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    (mask_image,) = run(prompt, registry, tmp_path).outputs
    assert mask_image.pixels.shape == (2, 3, 3) and mask_image.pixels.max() == 0.0  # opaque: mask 0


def test_validates_before_running(registry, tmp_path):
    events = []
    with pytest.raises(WorkflowInvalid):
        run(save_prompt(prefix="../../x"), registry, tmp_path, on_event=events.append)
    assert events == []


class Exploding(PassImage):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "node": "UNIQUE_ID"}}

    def go(self, image, prompt, node):
        raise RuntimeError(f"boom in {node} of {len(prompt)} nodes")


class WrongArity(Exploding):
    def go(self, image, prompt, node):
        return (image, image)


NODE_CLASS_MAPPINGS = {"Exploding": Exploding, "WrongArity": WrongArity}


@pytest.mark.parametrize(
    ("class_type", "match"), [("Exploding", "boom in 5 of 3"), ("WrongArity", "declares 1 outputs")]
)
def test_node_errors_are_wrapped(tmp_path, class_type, match):
    registry = register(create_registry(), NODE_CLASS_MAPPINGS)
    prompt = save_prompt(images_link=("5", 0))
    prompt["5"] = {"class_type": class_type, "inputs": {"image": ["1", 0]}}
    with pytest.raises(NodeExecutionError, match=match) as caught:
        run(prompt, registry, tmp_path)
    assert (caught.value.node_id, caught.value.class_type) == ("5", class_type)


class Counted(PassImage):
    calls = 0

    def go(self, image):
        type(self).calls += 1
        return (image,)


def test_execute_caches_nothing_between_calls(tmp_path):
    registry = register(create_registry(), {"Counted": Counted})
    prompt = save_prompt(images_link=("5", 0))
    prompt["5"] = {"class_type": "Counted", "inputs": {"image": ["1", 0]}}
    Counted.calls = 0
    first = run(prompt, registry, tmp_path)
    second = run(prompt, registry, tmp_path)
    assert Counted.calls == 2 and first.cached_nodes == second.cached_nodes == []
    assert len(second.outputs) == 1


def test_constants_reach_nodes_converted_as_comfyui_converts_them(registry, tmp_path):
    prompt = save_prompt(width="6", height=4.0)  # ComfyUI accepts both and passes int(value)
    (image,) = run(prompt, registry, tmp_path).outputs
    assert (image.width, image.height) == (6, 4)
