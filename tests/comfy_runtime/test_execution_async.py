"""Async node functions run on an event loop owned by the run."""

import asyncio
import threading

import pytest

from comfygate.comfy_runtime import NodeExecutionError, RunContext
from comfygate.comfy_runtime.progress import report_progress

from .execution_nodes import Constant, Show, executor_with, of_type, run_with_events, shown

SEEN: list = []


class Source(Constant):
    async def make(self, value):
        await asyncio.sleep(0)
        return (value,)


class Double:
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "double"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("NUMBER",)}}

    @classmethod
    async def IS_CHANGED(cls, value):
        return "same"

    async def double(self, value):
        SEEN.append((asyncio.get_running_loop(), threading.current_thread()))
        await asyncio.sleep(0.001)
        report_progress(1, 2)  # from inside the task: the run's context came along
        await asyncio.gather(asyncio.sleep(0), asyncio.sleep(0))
        report_progress(2, 2)
        if value < 0:
            raise ValueError(f"negative: {value}")
        return (value * 2,)


NODES = {"Source": Source, "Double": Double, "Show": Show}


def prompt(value=3):
    return {
        "1": {"class_type": "Source", "inputs": {"value": value}},
        "2": {"class_type": "Double", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Double", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }


def test_async_nodes_run_on_one_loop_in_the_run_thread_and_report_progress(tmp_path):
    SEEN.clear()
    executor = executor_with(NODES)
    _, events = run_with_events(executor, prompt(), tmp_path)
    assert shown(events) == [[12]]
    assert [(e["node"], e["value"], e["max"]) for e in of_type(events, "progress")] == [
        ("2", 1, 2), ("2", 2, 2), ("3", 1, 2), ("3", 2, 2)]
    (loop_a, thread_a), (loop_b, thread_b) = SEEN
    assert loop_a is loop_b and loop_a.is_closed()  # one loop per run, closed when the run ends
    assert thread_a is thread_b is threading.current_thread()

    again = executor.run(prompt(), RunContext(input_dir=tmp_path))  # async IS_CHANGED keeps the key stable
    assert again.cached_nodes == ["1", "2", "3", "4"]


def test_an_async_failure_is_a_node_error(tmp_path):
    executor = executor_with(NODES)
    with pytest.raises(NodeExecutionError, match="negative: -3") as caught:
        executor.run(prompt(value=-3), RunContext(input_dir=tmp_path))
    assert (caught.value.node_id, caught.value.exception_type) == ("2", "ValueError")
