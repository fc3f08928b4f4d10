"""Lazy inputs: only the inputs check_lazy_status asks for are evaluated, with their ancestors."""

import pytest

from comfygate.comfy_runtime import NodeExecutionError

from . import execution_nodes
from .execution_nodes import executor_with, of_type, run_with_events, shown


class Recorder:
    """Class-level log of what test nodes did, reset per test."""

    log: list = []


class Value:
    RETURN_TYPES = ("VALUE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": ""})}, "optional": {"after": ("VALUE",)}}

    def make(self, name, after=None):
        Recorder.log.append(("Value", name))
        return (name if after is None else f"{after}>{name}",)


class Switch:
    RETURN_TYPES = ("VALUE",)
    FUNCTION = "pick"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"use_first": ("BOOLEAN", {"default": True}),
                             "first": ("VALUE", {"lazy": True}), "second": ("VALUE", {"lazy": True})}}

    def check_lazy_status(self, use_first, first=None, second=None):
        Recorder.log.append(("check", first, second))
        wanted = "first" if use_first else "second"
        return [wanted] if (first if use_first else second) is None else []

    def pick(self, use_first, first, second):
        Recorder.log.append(("pick", first, second))
        return (first if use_first else second,)


class Peek(Switch):
    """Lazy inputs but no check_lazy_status: it never gets them."""

    check_lazy_status = None


class Greedy(Switch):
    def check_lazy_status(self, **inputs):
        return ["use_first"]  # a constant: already there, nothing to evaluate


class Confused(Switch):
    def check_lazy_status(self, **inputs):
        return ["nonexistent"]


class Show(execution_nodes.Show):
    VALUE_TYPE = "VALUE"


class SwitchToo(Switch):
    pass


NODES = {"Value": Value, "Switch": Switch, "SwitchToo": SwitchToo, "Peek": Peek, "Greedy": Greedy,
         "Confused": Confused, "Show": Show}


@pytest.fixture(autouse=True)
def fresh_log():
    Recorder.log = []


def switch_prompt(use_first=True, switch="Switch") -> dict:
    return {
        "1": {"class_type": "Value", "inputs": {"name": "root-a"}},
        "2": {"class_type": "Value", "inputs": {"name": "a", "after": ["1", 0]}},
        "3": {"class_type": "Value", "inputs": {"name": "root-b"}},
        "4": {"class_type": "Value", "inputs": {"name": "b", "after": ["3", 0]}},
        "5": {"class_type": switch, "inputs": {"use_first": use_first, "first": ["2", 0], "second": ["4", 0]}},
        "6": {"class_type": "Show", "inputs": {"value": ["5", 0]}},
    }


def run(prompt, tmp_path, executor=None):
    return run_with_events(executor or executor_with(NODES), prompt, tmp_path)


@pytest.mark.parametrize(("use_first", "shown_text", "ran", "skipped"), [
    (True, "root-a>a", ["root-a", "a"], {"root-b", "b"}),
    (False, "root-b>b", ["root-b", "b"], {"root-a", "a"}),
])
def test_only_the_branch_asked_for_runs(tmp_path, use_first, shown_text, ran, skipped):
    result, events = run(switch_prompt(use_first), tmp_path)
    assert shown(events) == [[shown_text]]
    assert [name for kind, name in (x[:2] for x in Recorder.log) if kind == "Value"] == ran
    assert not skipped & set(result.node_ms)  # never ran, never timed
    checks = [x for x in Recorder.log if x[0] == "check"]
    # first asked with nothing evaluated, then again with the asked input present
    assert checks[0] == ("check", None, None) and len(checks) == 2
    assert Recorder.log[-1][0] == "pick" and None in Recorder.log[-1][1:]  # the other input stays None
    assert [e["node"] for e in of_type(events, "executing")].count("5") == 2


def test_lazy_inputs_without_check_are_none_and_never_evaluated(tmp_path):
    prompt = switch_prompt(switch="Peek")
    prompt["6"] = {"class_type": "Value", "inputs": {"name": "unused"}}  # Show needs a value: feed it directly
    prompt["7"] = {"class_type": "Show", "inputs": {"value": ["5", 0]}}
    result, events = run(prompt, tmp_path)
    assert Recorder.log == [("pick", None, None)]
    assert shown(events) == [[None]]


def test_asking_for_an_evaluated_or_constant_input_does_not_loop(tmp_path):
    result, events = run(switch_prompt(switch="Greedy"), tmp_path)
    assert Recorder.log == [("pick", None, None)] and "5" in result.node_ms


def test_asking_for_an_input_that_is_not_there_fails_clearly(tmp_path):
    with pytest.raises(NodeExecutionError, match="'nonexistent', which is not linked") as caught:
        run(switch_prompt(switch="Confused"), tmp_path)
    assert (caught.value.node_id, caught.value.class_type) == ("5", "Confused")


def test_a_cached_lazy_source_is_there_at_the_first_check(tmp_path):
    executor = executor_with(NODES)
    run(switch_prompt(True), tmp_path, executor)
    Recorder.log = []
    result, _ = run(switch_prompt(True, switch="SwitchToo"), tmp_path, executor)  # only the switch changes
    assert Recorder.log == [("check", "root-a>a", None), ("pick", "root-a>a", None)]
    assert result.cached_nodes == ["1", "2"]
