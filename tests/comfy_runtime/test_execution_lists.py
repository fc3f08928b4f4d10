"""List semantics: OUTPUT_IS_LIST, INPUT_IS_LIST, one call per item, shorter lists repeating their last item."""

import pytest
import torch

from comfygate.comfy_runtime import NodeExecutionError

from . import execution_nodes
from .execution_nodes import executor_with, run_with_events, shown

CALLS: list = []


class Numbers:
    RETURN_TYPES = ("NUMBER",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 0, "max": 10}),
                             "start": ("INT", {"default": 0, "min": 0, "max": 100})}}

    def make(self, count, start):
        return (list(range(start, start + count)),)


class Add:
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("NUMBER",), "b": ("NUMBER",)}}

    def add(self, a, b):
        CALLS.append(("Add", a, b))
        return (a + b,)


class Total:
    RETURN_TYPES = ("NUMBER", "NUMBER")
    OUTPUT_IS_LIST = (False, True)
    INPUT_IS_LIST = True
    FUNCTION = "total"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"numbers": ("NUMBER",), "label": ("STRING", {"default": "x"})}}

    def total(self, numbers, label):
        CALLS.append(("Total", numbers, label))
        return (sum(numbers), [n * 2 for n in numbers])


class Broken(Numbers):
    def make(self, count, start):
        return (count,)  # declared a list output, returned one item


class Gray:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "paint"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"level": ("NUMBER",)}}

    def paint(self, level):
        return (torch.full((1, 2, 3, 3), level / 10),)


class Show(execution_nodes.Show):
    def show(self, value):
        CALLS.append(("Show", value))
        return super().show(value)


NODES = {"Numbers": Numbers, "Add": Add, "Total": Total, "Broken": Broken, "Gray": Gray, "Show": Show}


@pytest.fixture(autouse=True)
def fresh_calls():
    CALLS.clear()


def run(prompt, tmp_path):
    result, events = run_with_events(executor_with(NODES), prompt, tmp_path)
    return result, shown(events)


def test_a_node_runs_once_per_item_and_shorter_lists_repeat_their_last_item(tmp_path):
    prompt = {
        "1": {"class_type": "Numbers", "inputs": {"count": 3, "start": 0}},
        "2": {"class_type": "Numbers", "inputs": {"count": 2, "start": 10}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    _, shown = run(prompt, tmp_path)
    assert [c for c in CALLS if c[0] == "Add"] == [("Add", 0, 10), ("Add", 1, 11), ("Add", 2, 11)]
    assert shown == [[10, 12, 13]]  # Show ran three times; its UI results are joined
    assert [c for c in CALLS if c[0] == "Show"] == [("Show", 10), ("Show", 12), ("Show", 13)]


def test_input_is_list_gets_whole_lists_and_output_is_list_is_joined(tmp_path):
    prompt = {
        "1": {"class_type": "Numbers", "inputs": {"count": 3, "start": 1}},
        "2": {"class_type": "Total", "inputs": {"numbers": ["1", 0], "label": "sum"}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["2", 1]}},
    }
    _, shown = run(prompt, tmp_path)
    assert [c for c in CALLS if c[0] == "Total"] == [("Total", [1, 2, 3], ["sum"])]  # constants come as lists too
    assert shown == [[6], [2, 4, 6]]


def test_a_list_of_images_gives_one_output_image_per_item(tmp_path):
    prompt = {
        "1": {"class_type": "Numbers", "inputs": {"count": 3, "start": 1}},
        "2": {"class_type": "Gray", "inputs": {"level": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "g"}},
    }
    result, _ = run(prompt, tmp_path)
    assert [o.index for o in result.outputs] == [0, 1, 2]
    assert [round(float(o.pixels[0, 0, 0]), 3) for o in result.outputs] == [0.1, 0.2, 0.3]


@pytest.mark.parametrize(("source", "count", "match", "failing_node"), [
    ("Numbers", 0, "input 'value' is an empty list", "2"),  # the consumer of an empty list fails
    ("Broken", 2, "OUTPUT_IS_LIST", "1"),  # a list output that is not a list fails where it is made
])
def test_bad_lists_fail_clearly(tmp_path, source, count, match, failing_node):
    prompt = {
        "1": {"class_type": source, "inputs": {"count": count, "start": 0}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    with pytest.raises(NodeExecutionError, match=match) as caught:
        run(prompt, tmp_path)
    assert caught.value.node_id == failing_node
