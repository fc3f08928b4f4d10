"""Node expansion: a node returns a graph to run in its place; its result may link into that graph."""

import pytest

from comfygate.comfy_runtime import NodeExecutionError, RunContext
from comfygate.comfy_runtime.expansion import GraphBuilder

from .execution_nodes import Constant, Show, executor_with, of_type, run_with_events, shown

CALLS: list = []


class Numbers(Constant):
    OUTPUT_IS_LIST = (True,)

    def make(self, value):
        return ([value, value * 10],)


class AddOne:
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("NUMBER",)}}

    def add(self, value):
        CALLS.append(("AddOne", value))
        if value == 13:
            raise ValueError("unlucky number")
        return (value + 1,)


class Repeat:
    """Adds one, ``times`` times, by expanding into a chain of AddOne nodes."""

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "expand"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("NUMBER",), "times": ("INT", {"default": 1, "min": 1, "max": 10})}}

    def expand(self, value, times):
        CALLS.append(("Repeat", value))
        graph = GraphBuilder()
        current = value
        for _ in range(times):
            current = graph.node("AddOne", value=current).out(0)
        return {"result": (current,), "expand": graph.finalize()}


class MakeGray:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "expand"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 2, "min": 1, "max": 8})}}

    def expand(self, width):
        """Expands into EmptyImage feeding two SaveImage nodes (output nodes inside an expansion)."""
        CALLS.append(("MakeGray", width))
        graph = GraphBuilder()
        empty = graph.node("EmptyImage", width=width, height=1, batch_size=1, color=0x808080)
        graph.node("SaveImage", images=empty.out(0), filename_prefix="inner-a")
        graph.node("SaveImage", images=empty.out(0), filename_prefix="inner-b")
        return {"result": (empty.out(0),), "expand": graph.finalize()}


class BadExpansion(Constant):
    kind = "unknown"

    def make(self, value):
        if self.kind == "unknown":
            return {"result": (value,), "expand": {"x": {"class_type": "NoSuchNode", "inputs": {}}}}
        return {"result": (value,), "expand": {"1": {"class_type": "Constant", "inputs": {"value": 1}}}}


class Duplicating(BadExpansion):
    kind = "duplicate"


NODES = {"Constant": Constant, "Numbers": Numbers, "AddOne": AddOne, "Repeat": Repeat, "MakeGray": MakeGray,
         "BadExpansion": BadExpansion, "Duplicating": Duplicating, "Show": Show}


@pytest.fixture(autouse=True)
def fresh_calls():
    CALLS.clear()


@pytest.fixture
def executor():
    return executor_with(NODES)


def repeat_prompt(source="Constant", value=5, times=3):
    return {
        "1": {"class_type": source, "inputs": {"value": value}},
        "2": {"class_type": "Repeat", "inputs": {"value": ["1", 0], "times": times}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }


def test_result_links_into_the_expanded_graph(executor, tmp_path):
    result, events = run_with_events(executor, repeat_prompt(), tmp_path)
    assert shown(events) == [[8]]
    generated = ["2.0.0.1", "2.0.0.2", "2.0.0.3"]  # ComfyUI's GraphBuilder ids: node.call.graph.n
    executing = [(e["node"], e["display_node"]) for e in of_type(events, "executing")]
    assert executing == [("1", "1"), ("2", "2"), *((g, "2") for g in generated), ("3", "3"), (None, None)]
    assert [c for c in CALLS if c[0] == "AddOne"] == [("AddOne", 5), ("AddOne", 6), ("AddOne", 7)]
    assert list(result.node_ms) == ["1", "2", *generated, "3"]


def test_each_list_item_expands_with_its_own_ids(executor, tmp_path):
    result, events = run_with_events(executor, repeat_prompt(source="Numbers", times=1), tmp_path)
    assert shown(events) == [[6, 51]]
    assert {"2.0.0.1", "2.1.0.1"} <= set(result.node_ms)


def test_output_nodes_inside_an_expansion_give_images_also_when_cached(executor, tmp_path):
    prompt = {"1": {"class_type": "MakeGray", "inputs": {"width": 3}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    first, _ = run_with_events(executor, prompt, tmp_path)
    second, events = run_with_events(executor, prompt, tmp_path)
    for result in (first, second):
        assert [(o.index, o.node_id, o.filename_prefix, o.width) for o in result.outputs] == [
            (0, "1", "inner-a", 3), (1, "1", "inner-b", 3), (2, "2", "preview", 3)]
    assert CALLS == [("MakeGray", 3)] and second.cached_nodes == ["1", "2"]
    assert [e["node"] for e in of_type(events, "executed")] == ["1", "1", "2"]


def test_a_failure_inside_the_expansion_names_the_prompt_node(executor, tmp_path):
    events = []
    with pytest.raises(NodeExecutionError) as caught:
        executor.run(repeat_prompt(value=12, times=3), RunContext(input_dir=tmp_path, on_event=events.append))
    error = caught.value
    assert (error.node_id, error.class_type, error.exception_type) == ("2", "Repeat", "ValueError")
    assert error.message == "expanded node 2.0.0.2 (AddOne): unlucky number"
    assert events[-1]["type"] == "execution_error" and events[-1]["node_id"] == "2"


@pytest.mark.parametrize(("class_type", "match"), [
    ("BadExpansion", "expanded node 'x': node type 'NoSuchNode' is not registered"),
    ("Duplicating", "expanded node '1' reuses an id already in the run"),
])
def test_malformed_expansions_are_refused(executor, tmp_path, class_type, match):
    prompt = {"1": {"class_type": class_type, "inputs": {"value": 1}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    with pytest.raises(NodeExecutionError, match=match) as caught:
        run_with_events(executor, prompt, tmp_path)
    assert caught.value.node_id == "1"


def test_graph_builder_prefixes_ids_per_graph():
    first, second = GraphBuilder(), GraphBuilder()
    assert first.prefix != second.prefix
    node = first.node("AddOne", value=1)
    assert node.out(0) == [node.id, 0] and first.lookup_node("1") is node
    assert first.finalize() == {node.id: {"class_type": "AddOne", "inputs": {"value": 1}}}
