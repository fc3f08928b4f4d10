"""One Executor, two runs at once on two threads (as the worker does)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from comfygate.comfy_runtime import RunContext
from comfygate.comfy_runtime.progress import report_progress

from .execution_nodes import executor_with, of_type

BOTH_INSIDE = threading.Barrier(2)


class Meet:
    """Waits until the other run is inside a node too: proves the runs overlap (never hangs: 10 s timeout)."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "meet"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"shade": ("INT", {"default": 0, "min": 0, "max": 255})}}

    def meet(self, shade):
        report_progress(shade, 255)
        BOTH_INSIDE.wait(timeout=10)
        report_progress(shade, 255)
        return (torch.full((1, 2, 2, 3), shade / 255),)


def prompt(shade):
    return {
        "1": {"class_type": "Meet", "inputs": {"shade": shade}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"t{shade}"}},
    }


def test_two_runs_at_once_on_one_executor_both_succeed(tmp_path):
    executor = executor_with({"Meet": Meet})
    events = {51: [], 204: []}

    def run(shade):
        context = RunContext(input_dir=tmp_path, on_event=events[shade].append, run_id=f"run-{shade}")
        return executor.run(prompt(shade), context)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip((51, 204), pool.map(run, (51, 204)), strict=True))

    assert not BOTH_INSIDE.broken
    for shade, result in results.items():
        (image,) = result.outputs
        assert image.filename_prefix == f"t{shade}"
        assert float(image.pixels[0, 0, 0]) == pytest.approx(1 - shade / 255)
        # each run's events went to its own callback, progress reports included
        assert {e["prompt_id"] for e in events[shade]} == {f"run-{shade}"}
        assert [e["value"] for e in of_type(events[shade], "progress")] == [shade, shade]
        assert of_type(events[shade], "execution_success")
    assert executor.cached_entries == 6
