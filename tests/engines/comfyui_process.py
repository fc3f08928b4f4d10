"""Helpers for tests of the comfyui engine against the ComfyUI stand-in (tests/comfyui_standin), a real server
process built from recordings of ComfyUI 0.3.64: jobs and prompts, an event recorder, engines attached to a
stand-in, and checks of what ComfyUI is left with. Fixtures are in conftest.py."""

from __future__ import annotations

import io
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from comfygate.platform.engines import EngineJob
from comfygate.platform.engines.comfyui import ComfyDirs, ComfyUIEngine
from comfyui_standin import StandinProcess

__all__ = ["Events", "assert_nothing_left", "attached", "dirs_of", "files_in", "in_thread", "job", "png", "post",
           "slow", "trivial", "wait_until"]

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def dirs_of(standin: StandinProcess) -> ComfyDirs:
    return ComfyDirs(input=standin.input_dir, output=standin.output_dir, temp=standin.temp_dir)


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def post(standin: StandinProcess, path: str, body: bytes = b"{}") -> int:
    request = urllib.request.Request(standin.url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with _opener.open(request, timeout=10) as response:
        return response.status


def attached(standin: StandinProcess, **kwargs: object) -> ComfyUIEngine:
    """An engine attached to the stand-in, started, knowing its folders."""
    engine = ComfyUIEngine(standin.url, dirs=dirs_of(standin), start_timeout=30, **kwargs)
    engine.start()
    return engine


def job(prompt: dict[str, Any], **kwargs: Any) -> EngineJob:
    return EngineJob(run_id=uuid.uuid4().hex, prompt=prompt, label="1-1", **kwargs)


def trivial(color: int = 0, width: int = 64, height: int = 64) -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1,
                                                        "color": color}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cg"}}}


def slow(seconds: float, color: int = 0) -> dict[str, Any]:
    """EmptyImage -> SlowPassImage (reports progress, honours interrupts) -> SaveImage."""
    prompt = trivial(color)
    prompt["3"] = {"class_type": "SlowPassImage", "inputs": {"image": ["1", 0], "seconds": seconds}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    return prompt


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


class Events:
    """on_event for a job: keeps every event; ``progress`` is set at the first progress event."""

    def __init__(self, on_progress: Any = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.progress = threading.Event()
        self._on_progress = on_progress

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event["type"] == "progress" and not self.progress.is_set():
            self.progress.set()
            if self._on_progress is not None:
                self._on_progress()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]


def in_thread(engine: ComfyUIEngine, engine_job: EngineJob) -> tuple[threading.Thread, dict[str, Any]]:
    """Runs the job on a worker-like thread; the dict gets "result" or "error" and "ended" (monotonic)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = engine.run(engine_job)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def assert_nothing_left(standin: StandinProcess, engine: ComfyUIEngine) -> None:
    """No output or temp file, no uploaded input and no history entry of the engine's runs is left."""
    assert files_in(standin.output_dir) == [] and files_in(standin.temp_dir) == []
    uploads = standin.input_dir / "comfygate"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert engine.client.call("GET", "/history") == {}


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` became true within ``timeout`` s (checked every 0.1 s)."""
    pause, deadline = threading.Event(), time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        pause.wait(0.1)  # an Event that is never set: the pace of the checks
    return True
