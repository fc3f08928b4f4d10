"""The comfyui engine against a real ComfyUI install, when the machine has one.

Set ``COMFYGATE_TEST_COMFYUI_DIR`` to a ComfyUI folder (holding main.py; its Python from
``COMFYGATE_TEST_COMFYUI_PYTHON``, default ``<dir>/.venv/bin/python``). The engine supervises it on a free
loopback port with ``--cpu``. Without the variable these tests are skipped: CI has no ComfyUI.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfygate.comfy_runtime import WorkflowInvalid
from comfygate.platform.engines import EngineJob, RunInterrupted
from comfygate.platform.engines.comfyui import ComfyDirs, ComfyUIEngine, Supervisor

COMFYUI_DIR = os.environ.get("COMFYGATE_TEST_COMFYUI_DIR", "")

pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYGATE_TEST_COMFYUI_DIR names no ComfyUI install")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def engine() -> Iterator[ComfyUIEngine]:
    install = Path(COMFYUI_DIR)
    python = Path(os.environ.get("COMFYGATE_TEST_COMFYUI_PYTHON", install / ".venv" / "bin" / "python"))
    args = ["--cpu", "--disable-auto-launch"]
    engine = ComfyUIEngine(supervisor=Supervisor(install, python, args, start_timeout=300),
                           dirs=ComfyDirs.of(install, args))
    engine.start()
    try:
        yield engine
    finally:
        engine.close()


def test_a_trivial_run_on_real_comfyui_returns_its_png_and_leaves_no_file(engine: ComfyUIEngine) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                            "color": int(time.time()) % 0xFFFFFF}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cg-real"}}}
    result = engine.run(EngineJob(run_id=f"real{time.monotonic_ns()}", prompt=prompt))
    [output] = result.outputs
    assert output.data.startswith(PNG_MAGIC) and (output.width, output.height) == (64, 64)
    assert not list((Path(COMFYUI_DIR) / "output" / "comfygate").rglob("*.png"))


def test_real_comfyui_refuses_an_invalid_prompt_with_its_node_errors(engine: ComfyUIEngine) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": -5, "height": 64, "batch_size": 1,
                                                            "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cg-real"}}}
    with pytest.raises(WorkflowInvalid) as raised:
        engine.run(EngineJob(run_id=f"bad{time.monotonic_ns()}", prompt=prompt))
    assert "1" in raised.value.node_errors


def test_a_cancel_reaches_real_comfyui(engine: ComfyUIEngine) -> None:
    # A large blur keeps ComfyUI busy long enough on a CPU to cancel it; it checks for interrupts between nodes.
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 2048, "height": 2048, "batch_size": 8,
                                                            "color": 123}},
              "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 10.0}},
              "3": {"class_type": "ImageBlur", "inputs": {"image": ["2", 0], "blur_radius": 31, "sigma": 10.0}},
              "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "cg-real"}}}
    job = EngineJob(run_id=f"cancel{time.monotonic_ns()}", prompt=prompt)
    threading.Timer(0.5, job.cancel.set).start()
    with pytest.raises(RunInterrupted) as raised:
        engine.run(job)
    assert raised.value.reason == "canceled"
