"""The output cache across runs: what is re-run, what is served, IS_CHANGED, LoadImage, the size bound."""

import math
from collections import Counter

import pytest
import torch
from PIL import Image

from comfygate.comfy_runtime import RunContext
from comfygate.comfy_runtime.executor import Executor

from .execution_nodes import PassImage, executor_with, of_type, run_with_events


def make_nodes(calls: Counter) -> dict[str, type]:
    """A loader -> sampler -> decode chain whose nodes count their calls in ``calls``."""

    class Loader:
        RETURN_TYPES = ("MODEL",)
        FUNCTION = "load"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"name": ("STRING", {"default": "sd15"})}}

        def load(self, name):
            calls["Loader"] += 1
            return (f"model:{name}",)

    class Sampler:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "sample"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL",), "seed": ("INT", {"default": 0, "min": 0, "max": 255})}}

        def sample(self, model, seed):
            calls["Sampler"] += 1
            return (torch.full((1, 2, 2, 3), seed / 255.0),)

    class Decode(PassImage):
        def go(self, image):
            calls["Decode"] += 1
            return (image.clone(),)

    class Clock(Decode):
        @classmethod
        def IS_CHANGED(cls, image):
            return math.nan  # "always run"

    class Versioned(Decode):
        version = 1

        @classmethod
        def IS_CHANGED(cls, **inputs):
            return cls.version

    class Stamped(Decode):
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": ("IMAGE",)}, "hidden": {"node": "UNIQUE_ID"}}

        def go(self, image, node):
            return super().go(image)

    return {"Loader": Loader, "Sampler": Sampler, "Decode": Decode, "Clock": Clock, "Versioned": Versioned,
            "Stamped": Stamped}


@pytest.fixture
def calls() -> Counter:
    return Counter()


@pytest.fixture
def executor(calls) -> Executor:
    return executor_with(make_nodes(calls))


def chain(seed=7, name="sd15", decode="Decode") -> dict:
    return {
        "1": {"class_type": "Loader", "inputs": {"name": name}},
        "2": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": seed}},
        "3": {"class_type": decode, "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "out"}},
    }


def run(executor, prompt, tmp_path):
    return executor.run(prompt, RunContext(input_dir=tmp_path))


def test_new_seed_reruns_the_sampler_and_what_follows_not_the_loader(executor, calls, tmp_path):
    first = run(executor, chain(seed=7), tmp_path)
    second, events = run_with_events(executor, chain(seed=8), tmp_path)
    assert calls == {"Loader": 1, "Sampler": 2, "Decode": 2}
    assert second.cached_nodes == ["1"] and list(second.node_ms) == ["2", "3", "4"]
    assert of_type(events, "execution_cached")[0]["nodes"] == ["1"]
    assert [e["node"] for e in of_type(events, "executing")] == ["2", "3", "4", None]
    assert first.outputs[0].pixels[0, 0, 0] == pytest.approx(7 / 255)
    assert second.outputs[0].pixels[0, 0, 0] == pytest.approx(8 / 255)


def test_an_unchanged_run_is_served_whole_and_still_returns_its_images(executor, calls, tmp_path):
    first = run(executor, chain(), tmp_path)
    second, events = run_with_events(executor, chain(), tmp_path)
    assert calls == {"Loader": 1, "Sampler": 1, "Decode": 1}
    assert second.cached_nodes == ["1", "2", "3", "4"] and second.node_ms == {}
    (image,) = second.outputs  # the cached output node hands its images over again
    assert (image.index, image.node_id, image.class_type) == (0, "4", "SaveImage")
    assert image.png == first.outputs[0].png
    (executed,) = of_type(events, "executed")
    assert executed["node"] == "4" and executed["output"]["images"][0]["index"] == 0
    assert [e["node"] for e in of_type(events, "executing")] == [None]


def test_cache_hits_do_not_depend_on_node_ids(executor, calls, tmp_path):
    run(executor, chain(), tmp_path)
    renumbered = {str(int(k) + 100): {**v, "inputs": {n: [str(int(x[0]) + 100), x[1]] if isinstance(x, list) else x
                                                    for n, x in v["inputs"].items()}}
                  for k, v in chain().items()}
    result = run(executor, renumbered, tmp_path)
    assert calls == {"Loader": 1, "Sampler": 1, "Decode": 1} and result.cached_nodes == ["101", "102", "103", "104"]
    assert result.outputs[0].node_id == "104"


def test_is_changed_nan_runs_the_node_and_its_descendants_every_time(executor, calls, tmp_path):
    for _ in range(3):
        result = run(executor, chain(decode="Clock"), tmp_path)
    assert calls == {"Loader": 1, "Sampler": 1, "Decode": 3}  # Clock counts as Decode
    assert result.cached_nodes == ["1", "2"] and list(result.node_ms) == ["3", "4"]


def test_is_changed_answer_is_part_of_the_key(executor, calls, tmp_path):
    versioned = executor.registry.get("Versioned")
    run(executor, chain(decode="Versioned"), tmp_path)
    run(executor, chain(decode="Versioned"), tmp_path)
    assert calls["Decode"] == 1
    versioned.version = 2
    result = run(executor, chain(decode="Versioned"), tmp_path)
    assert calls["Decode"] == 2 and result.cached_nodes == ["1", "2"]


def test_duplicate_nodes_in_one_run_run_once_unless_keyed_by_id(executor, calls, tmp_path):
    prompt = chain()
    prompt["5"] = {"class_type": "Decode", "inputs": {"image": ["2", 0]}}  # same as "3"
    prompt["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "out"}}
    result = run(executor, prompt, tmp_path)
    assert calls["Decode"] == 1 and result.cached_nodes == ["5", "6"] and len(result.outputs) == 2

    stamped = chain(decode="Stamped")
    stamped["5"] = {"class_type": "Stamped", "inputs": {"image": ["2", 0]}}
    stamped["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "out"}}
    run(executor, stamped, tmp_path)
    assert calls["Decode"] == 3  # a node that sees its UNIQUE_ID is never shared between ids


def test_cache_size_is_bounded_least_recently_used_first(calls, tmp_path):
    executor = executor_with(make_nodes(calls), cache_entries=4)
    run(executor, chain(name="a"), tmp_path)
    run(executor, chain(name="b"), tmp_path)  # four new entries push out all of "a"
    assert executor.cached_entries == 4
    run(executor, chain(name="a"), tmp_path)
    assert calls["Loader"] == 3

    roomy = executor_with(make_nodes(calls := Counter()))
    for name in ("a", "b", "a"):
        run(roomy, chain(name=name), tmp_path)
    assert calls["Loader"] == 2 and roomy.cached_entries == 8


def test_zero_entries_caches_nothing(calls, tmp_path):
    executor = executor_with(make_nodes(calls), cache_entries=0)
    run(executor, chain(), tmp_path)
    result = run(executor, chain(), tmp_path)
    assert calls["Loader"] == 2 and result.cached_nodes == [] and executor.cached_entries == 0
    with pytest.raises(ValueError, match="cache_entries"):
        Executor(executor.registry, cache_entries=-1)


def test_free_cache_forgets_everything(executor, calls, tmp_path):
    run(executor, chain(), tmp_path)
    executor.free_cache()
    assert executor.cached_entries == 0
    run(executor, chain(), tmp_path)
    assert calls == {"Loader": 2, "Sampler": 2, "Decode": 2}


def test_load_image_is_cached_by_file_hash_not_folder(executor, tmp_path):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir(), second_dir.mkdir()
    Image.new("RGB", (2, 2), (255, 0, 0)).save(first_dir / "in.png")
    Image.new("RGB", (2, 2), (255, 0, 0)).save(second_dir / "in.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert "1" in run(executor, prompt, first_dir).node_ms
    same_bytes = run(executor, prompt, second_dir)  # the worker gives every run a fresh folder
    assert same_bytes.cached_nodes == ["1", "2"]
    Image.new("RGB", (2, 2), (0, 0, 255)).save(second_dir / "in.png")
    changed = run(executor, prompt, second_dir)
    assert changed.cached_nodes == [] and changed.outputs[0].pixels[0, 0].tolist() == [0.0, 0.0, 1.0]
