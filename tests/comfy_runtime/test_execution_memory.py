"""Out of memory inside a node: the cache is freed, the error says so, the next run works."""

from collections import Counter

import pytest
import torch

from comfygate.comfy_runtime import NodeExecutionError, RunContext

from .execution_nodes import PassImage, executor_with, of_type

CALLS: Counter = Counter()


class Loader:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"size": ("INT", {"default": 2, "min": 1, "max": 8})}}

    def load(self, size):
        CALLS["Loader"] += 1
        return (torch.zeros(1, size, size, 3),)


class Greedy(PassImage):
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def go(self, image):
        big = image.repeat(4, 1, 1, 1)  # a local the traceback would keep alive
        assert big.shape[0] == 4
        raise self.error


class HostGreedy(Greedy):
    error = MemoryError("cannot allocate 64 GiB")


def prompt(class_type=None):
    middle = {"3": {"class_type": class_type, "inputs": {"image": ["1", 0]}}} if class_type else {}
    return {
        "1": {"class_type": "Loader", "inputs": {"size": 2}},
        **middle,
        "2": {"class_type": "SaveImage", "inputs": {"images": ["3" if class_type else "1", 0],
                                                    "filename_prefix": "m"}},
    }


@pytest.mark.parametrize(("class_type", "exception_type"), [
    ("Greedy", "torch.OutOfMemoryError"), ("HostGreedy", "MemoryError")])
def test_out_of_memory_frees_the_cache_and_leaves_the_executor_usable(tmp_path, class_type, exception_type):
    CALLS.clear()
    executor = executor_with({"Loader": Loader, "Greedy": Greedy, "HostGreedy": HostGreedy})
    executor.run(prompt(), RunContext(input_dir=tmp_path))
    assert executor.cached_entries == 2

    events = []
    with pytest.raises(NodeExecutionError) as caught:
        executor.run(prompt(class_type), RunContext(input_dir=tmp_path, on_event=events.append))
    error = caught.value
    assert (error.node_id, error.class_type, error.exception_type) == ("3", class_type, exception_type)
    assert error.message.startswith(f"out of memory in node 3 ({class_type}): ")
    assert error.message.endswith("; cached outputs were freed")
    assert str(Greedy.error if class_type == "Greedy" else HostGreedy.error) in error.message
    assert executor.cached_entries == 0 and CALLS["Loader"] == 1  # the loader was cached for the failing run
    assert of_type(events, "execution_error")[0]["exception_message"] == error.message

    result = executor.run(prompt(), RunContext(input_dir=tmp_path))
    assert CALLS["Loader"] == 2 and result.cached_nodes == [] and len(result.outputs) == 1
