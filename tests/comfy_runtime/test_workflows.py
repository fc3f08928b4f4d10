import json

import numpy as np
import pytest

from comfygate.comfy_runtime import RunContext, execute, parse_workflow, validate_prompt

from .conftest import WORKFLOWS


def run(name: str, registry, tmp_path):
    prompt = parse_workflow(json.loads((WORKFLOWS / name).read_text()))
    validate_prompt(prompt, registry)
    result = execute(prompt, registry, RunContext(input_dir=tmp_path))
    assert len(result.outputs) == 1
    return result.outputs[0]


def test_gradient_card_has_structure(registry, tmp_path):
    output = run("gradient_card.json", registry, tmp_path)
    pixels = output.pixels
    assert 64 <= output.width <= 256 and 64 <= output.height <= 256
    assert np.isfinite(pixels).all()
    assert pixels.std() > 0.1  # not blank
    # Not noise: neighbouring pixels are close almost everywhere (smooth regions, a few soft edges).
    step = np.abs(np.diff(pixels, axis=1)).mean(axis=-1)
    assert np.median(step) < 0.01 and step.max() > 0.02


def test_blank_is_uniform(registry, tmp_path):
    pixels = run("blank.json", registry, tmp_path).pixels
    assert np.ptp(pixels) == 0.0


@pytest.mark.parametrize("name", ["gradient_card.json", "blank.json"])
def test_prefixes_are_relative(name):
    prompt = json.loads((WORKFLOWS / name).read_text())
    prefixes = [n["inputs"]["filename_prefix"] for n in prompt.values() if n["class_type"] == "SaveImage"]
    assert prefixes and all(not p.startswith("/") and ".." not in p for p in prefixes)
