"""Test node classes and helpers shared by the executor tests (test_executor.py and test_execution_*.py).

Each test module keeps its own special nodes; what lives here is what several of them need alike: a number
source, an image pass-through to subclass, an output node that shows a value, and ways to build an executor
and collect a run's events.
"""

from __future__ import annotations

from typing import Any

from comfygate.comfy_runtime import Executor, NodeRegistry, RunContext, RunResult, create_registry

__all__ = ["Constant", "PassImage", "Show", "executor_with", "of_type", "register", "run_with_events", "shown"]


def register(registry: NodeRegistry, mappings: dict[str, type]) -> NodeRegistry:
    """Add test node classes to ``registry``."""
    registry.register_pack(mappings, source="tests")
    return registry


def executor_with(nodes: dict[str, type], **options: Any) -> Executor:
    """An executor over the built-in nodes plus ``nodes``."""
    return Executor(register(create_registry(), nodes), **options)


def of_type(events: list[dict], type_: str) -> list[dict]:
    return [e for e in events if e["type"] == type_]


def shown(events: list[dict]) -> list[list]:
    """The ``text`` each ``executed`` event's UI output shows, in order (events without one are left out)."""
    return [e["output"]["text"] for e in of_type(events, "executed") if "text" in e["output"]]


def run_with_events(executor: Executor, prompt: dict, input_dir, **context: Any) -> tuple[RunResult, list[dict]]:
    """Run ``prompt`` and return its result with every event the run sent."""
    events: list[dict] = []
    result = executor.run(prompt, RunContext(input_dir=input_dir, on_event=events.append, **context))
    return result, events


class Constant:
    """A NUMBER from an INT widget."""

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -100, "max": 100})}}

    def make(self, value):
        return (value,)


class PassImage:
    """IMAGE in, the same IMAGE out; subclasses override ``go`` to count, fail or change it."""

    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def go(self, image):
        return (image,)


class Show:
    """An output node that shows its input as UI text; ``VALUE_TYPE`` is the type of that input."""

    VALUE_TYPE = "NUMBER"
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (cls.VALUE_TYPE,)}}

    def show(self, value):
        return {"ui": {"text": [value]}}
