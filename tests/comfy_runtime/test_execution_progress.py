"""Progress reports from a running node, and cancel at the next step."""

import pytest
import torch

from comfygate.comfy_runtime import RunCanceled, RunContext
from comfygate.comfy_runtime.progress import ProgressBar, raise_if_canceled, report_progress

from .execution_nodes import executor_with, of_type, run_with_events

STEPS_DONE: list[int] = []


class Sampler:
    """A slow node: one progress report per step, like a diffusion sampler."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 10, "min": 1, "max": 100})}}

    def sample(self, steps):
        bar = ProgressBar(steps)
        for _ in range(steps):
            STEPS_DONE.append(1)
            bar.update(1)
        return (torch.zeros(1, 2, 2, 3),)


def sampler_prompt(steps=10):
    return {
        "1": {"class_type": "Sampler", "inputs": {"steps": steps}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "s"}},
    }


@pytest.fixture
def executor():
    STEPS_DONE.clear()
    return executor_with({"Sampler": Sampler})


def test_progress_events_carry_node_value_and_max(executor, tmp_path):
    _, events = run_with_events(executor, sampler_prompt(steps=4), tmp_path, run_id="r9")
    progress = of_type(events, "progress")
    assert [(e["node"], e["value"], e["max"], e["prompt_id"]) for e in progress] == [
        ("1", 1, 4, "r9"), ("1", 2, 4, "r9"), ("1", 3, 4, "r9"), ("1", 4, 4, "r9")]
    types = [e["type"] for e in events]
    assert types.index("executing") < types.index("progress") < types.index("executed")


def test_cancel_stops_a_running_node_at_its_next_step(executor, tmp_path):
    events = []
    canceled = False

    def on_event(event):
        nonlocal canceled
        events.append(event)
        canceled = canceled or (event["type"] == "progress" and event["value"] == 3)

    with pytest.raises(RunCanceled, match="during node 1 at step 4 of 10"):
        executor.run(sampler_prompt(), RunContext(input_dir=tmp_path, on_event=on_event,
                                                  should_cancel=lambda: canceled))
    assert len(STEPS_DONE) == 4  # the fourth step's report saw the cancel; steps 5..10 never ran
    assert [e["value"] for e in of_type(events, "progress")] == [1, 2, 3]
    assert events[-1]["type"] == "execution_interrupted"
    assert (events[-1]["node_id"], events[-1]["node_type"], events[-1]["executed"]) == ("1", "Sampler", [])
    assert not of_type(events, "executed") and not of_type(events, "execution_error")

    result = executor.run(sampler_prompt(), RunContext(input_dir=tmp_path))  # nothing half-done was cached
    assert len(STEPS_DONE) == 14 and result.cached_nodes == [] and len(result.outputs) == 1


def test_progress_calls_outside_a_run_do_nothing():
    # A node's helper code may run outside any run (e.g. in a pack's own tests): no error, nothing reported.
    assert report_progress(1, 2) is None
    assert raise_if_canceled() is None
    bar = ProgressBar(3)
    bar.update(1)
    assert bar.current == 1
