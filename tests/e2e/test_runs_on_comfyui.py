"""Runs on a ComfyUI engine, end to end: PostgreSQL, Redis, the loopback S3 server, ``comfygate serve`` and a
``comfygate worker --engine comfyui --comfyui-dir <install>`` that supervises the ComfyUI stand-in
(tests/comfyui_standin, built from a real ComfyUI 0.3.64's recordings) as its child process.

What a team moving its workflows onto its own ComfyUI checks: every output type comes back with its media
type, ComfyUI's files are cleaned up, cancel and timeout stop the engine, a killed or disconnected ComfyUI
loses no run, an out-of-memory error is retried once after /free, and uploads are checked against what each
pool's ComfyUI reports.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_support import SLOW_INPUTS, Stack, b64, gradient_png, slow_workflow
from PIL import Image

from comfyui_standin import make_install, start_standin
from comfyui_standin.workflows import every_output
from deployment import free_port, wait_for
from flux import FLUX_ONLY_NODES, UNET, flux_prompt, reference_object_info

pytestmark = pytest.mark.e2e

# Outputs are what is checked here, not the gate's taste: silent audio and repeated pictures are expected.
LENIENT_POLICY = {"checks": {"silence": "off", "duplicate": "off"}}


@dataclass
class ComfyStack:
    stack: Stack
    install: Path
    health_port: int
    worker_pid: int

    def comfyui_pid(self) -> int:
        """The supervised ComfyUI (the stand-in's main.py), a child of the worker."""
        for task in Path(f"/proc/{self.worker_pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if any(part.endswith(b"main.py") for part in cmdline):
                    return int(pid)
        raise AssertionError("the worker has no ComfyUI child process")

    def comfyui_url(self) -> str:
        cmdline = Path(f"/proc/{self.comfyui_pid()}/cmdline").read_bytes().decode().split("\0")
        return f"http://127.0.0.1:{cmdline[cmdline.index('--port') + 1]}"

    def ready(self) -> int:
        return requests.get(f"http://127.0.0.1:{self.health_port}/ready", timeout=5).status_code

    def files_left(self) -> list[str]:
        """Files in ComfyUI's output and temp folders and run subfolders of its input folder."""
        found = [p for folder in ("output", "temp") for p in (self.install / folder).rglob("*") if p.is_file()]
        found += list((self.install / "input" / "comfygate").glob("*"))
        return sorted(str(p.relative_to(self.install)) for p in found)


def start_comfyui_worker(stack: Stack, install: Path, *extra: str) -> tuple[int, int]:
    health_port = free_port()
    worker = stack.deployment.start_worker("--engine", "comfyui", "--comfyui-dir", str(install),
                                           "--health-port", str(health_port), *extra, timeout=120)
    return worker.pid, health_port


@pytest.fixture(scope="module")
def comfy(production, tmp_path_factory) -> ComfyStack:  # type: ignore[no-untyped-def]
    stack: Stack = production(COMFYGATE_WORKER_CONCURRENCY="1")
    install = make_install(tmp_path_factory.mktemp("comfyui"))
    worker_pid, health_port = start_comfyui_worker(stack, install)
    return ComfyStack(stack, install, health_port, worker_pid)


def wait_progress(stack: Stack, run_id: str) -> dict[str, Any]:
    """The run once its sampler-like node reports steps (the engine is mid-node)."""
    def stepping() -> dict[str, Any] | None:
        run = stack.run(run_id)
        progress = run.get("progress") or {}
        return run if run["status"] == "running" and progress.get("value", 0) >= 1 else None

    return wait_for(stepping, 30, f"run {run_id} to report progress", interval=0.05)


# --- outputs ------------------------------------------------------------------------------------------------


EVERY_OUTPUT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
    "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 3, "color": 0}},
    "3": {"class_type": "ImageCompositeMasked",
          "inputs": {"destination": ["2", 0], "source": ["1", 0], "x": 0, "y": 0, "resize_source": False}},
    **every_output(["3", 0]),
}


def test_every_output_type_is_served_with_its_media_type_and_comfyui_keeps_no_file(comfy: ComfyStack) -> None:
    stack = comfy.stack
    pushed = stack.push_ok("every-output", EVERY_OUTPUT, {"photo": {"node": "1", "input": "image"}},
                           policy=LENIENT_POLICY)
    assert pushed["checked_against"]["source"] == "pool", pushed  # the worker's ComfyUI reported its nodes
    response = stack.post(pushed["run_url"] + "?wait=60", {"inputs": {"photo": b64(gradient_png())}})
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "succeeded", stack.explain(run)
    assert run["engine"] == "comfyui"

    by_type: dict[str, list[dict[str, Any]]] = {}
    for output in run["outputs"]:
        by_type.setdefault(output["content_type"], []).append(output)
    assert {t: len(o) for t, o in by_type.items()} == {
        "image/png": 4,  # three stills and the animated PNG; previews (temp files) are no outputs
        "image/webp": 1, "video/mp4": 1, "video/webm": 1, "audio/flac": 1, "audio/mpeg": 1, "audio/ogg": 1,
        "model/gltf-binary": 1, "text/plain; charset=utf-8": 1, "application/octet-stream": 1,
    }, json.dumps(run["outputs"], indent=1)[:3000]

    for output in run["outputs"]:
        fetched = stack.get(output["url"])
        assert fetched.status_code == 200, fetched.text
        assert fetched.headers["Content-Type"] == output["content_type"]
        assert len(fetched.content) == output["size_bytes"] > 0
    animation = Image.open(io.BytesIO(stack.get(by_type["image/webp"][0]["url"]).content))
    assert animation.format == "WEBP" and animation.size == (64, 48)
    assert stack.get(by_type["text/plain; charset=utf-8"][0]["url"]).text == "hello from PreviewAny"

    audio_checks = {c["name"]: c for c in by_type["audio/flac"][0]["verdict"]["checks"]}
    assert audio_checks["decode"]["status"] == "passed"
    assert audio_checks["blank"]["status"] == "not_run"
    assert "does not apply to audio" in audio_checks["blank"]["reason"]
    video_checks = {c["name"]: c for c in by_type["video/mp4"][0]["verdict"]["checks"]}
    assert video_checks["blank"]["status"] == "passed"
    assert "3 frames" in video_checks["blank"]["reason"], video_checks["blank"]  # first, middle and last

    # ComfyUI's copies (outputs, previews, the uploaded photo's run folder) are gone once stored.
    assert comfy.files_left() == []


# --- cancel and timeout ---------------------------------------------------------------------------------------


def test_cancel_interrupts_comfyui_within_two_seconds(comfy: ComfyStack) -> None:
    stack = comfy.stack
    stack.push_ok("slow-comfy", slow_workflow(), SLOW_INPUTS, policy=LENIENT_POLICY)
    run_id = stack.submit("slow-comfy", {"seconds": 30.0})
    wait_progress(stack, run_id)

    asked = time.monotonic()
    assert stack.post(f"/v1/runs/{run_id}/cancel", {}).status_code in (200, 202)
    run = stack.wait_status(run_id, timeout=10)
    took = time.monotonic() - asked
    assert run["status"] == "canceled", stack.explain(run)
    assert run["error"]["node_id"] == "5", run["error"]  # stopped inside SlowPassImage
    assert took < 2.0, f"the cancel took {took:.2f} s to stop the run"
    assert comfy.files_left() == []


def test_a_run_past_its_versions_timeout_fails_with_timeout(comfy: ComfyStack) -> None:
    stack = comfy.stack
    pushed = stack.push_ok("slow-timeout", slow_workflow(), SLOW_INPUTS, policy=LENIENT_POLICY, timeout_seconds=1.5)
    assert pushed["timeout_seconds"] == 1.5
    run_id = stack.submit("slow-timeout", {"seconds": 30.0})
    run = stack.wait_status(run_id, timeout=20)
    assert run["status"] == "failed", stack.explain(run)
    assert run["error"]["type"] == "timeout"
    assert "1.5 s" in run["error"]["message"]


# --- crash, dropped socket, out of memory -----------------------------------------------------------------------


def test_comfyui_killed_mid_run_is_restarted_and_the_run_succeeds_on_the_next_attempt(comfy: ComfyStack) -> None:
    stack = comfy.stack
    stack.push_ok("slow-crash", slow_workflow(), SLOW_INPUTS, policy=LENIENT_POLICY)
    run_id = stack.submit("slow-crash", {"seconds": 2.0})
    wait_progress(stack, run_id)
    old_pid = comfy.comfyui_pid()
    os.kill(old_pid, signal.SIGKILL)

    wait_for(lambda: comfy.ready() == 503, 10, "the worker's /ready to say 503 while ComfyUI restarts")
    run = stack.wait_status(run_id, timeout=60)
    assert run["status"] == "succeeded", stack.explain(run)
    assert run["attempt"] == 2
    assert comfy.comfyui_pid() != old_pid
    wait_for(lambda: comfy.ready() == 200, 30, "the worker's /ready to answer 200 again")


def test_a_dropped_websocket_loses_no_result(comfy: ComfyStack) -> None:
    stack = comfy.stack
    stack.push_ok("slow-drop", slow_workflow(), SLOW_INPUTS, policy=LENIENT_POLICY)
    run_id = stack.submit("slow-drop", {"seconds": 1.5})
    wait_progress(stack, run_id)
    dropped = requests.post(comfy.comfyui_url() + "/standin/drop_sockets", timeout=10)
    assert dropped.json()["dropped"] >= 1
    run = stack.wait_status(run_id, timeout=30)
    assert run["status"] == "succeeded", stack.explain(run)
    assert run["attempt"] == 1
    assert len(run["outputs"]) == 1


def test_an_attached_comfyui_that_stops_answering_sends_the_run_to_another_worker(comfy: ComfyStack,
                                                                                   tmp_path: Path) -> None:
    stack = comfy.stack
    servers = [start_standin(tmp_path / f"attached-{i}") for i in range(2)]
    try:
        for server in servers:  # attached: nobody restarts these
            stack.deployment.start_worker("--engine", "comfyui", "--comfyui-url", server.url, "--comfyui-dir",
                                          str(server.base_dir), "--pool", "attached", timeout=120)
        stack.push_ok("slow-attached", slow_workflow(), SLOW_INPUTS, policy=LENIENT_POLICY, pool="attached")
        run_id = stack.submit("slow-attached", {"seconds": 2.0})
        wait_progress(stack, run_id)
        running = [s for s in servers if requests.get(s.url + "/queue", timeout=5).json()["queue_running"]]
        assert len(running) == 1
        running[0].kill()

        run = stack.wait_status(run_id, timeout=90)
        assert run["status"] == "succeeded", stack.explain(run)
        assert run["attempt"] == 2
    finally:
        for server in servers:
            server.stop()


def oom_workflow(mode: str) -> dict[str, Any]:
    """The slow workflow with its slow node replaced by one that runs out of device memory."""
    workflow = slow_workflow()
    workflow["5"] = {"class_type": "StandinOutOfMemory", "inputs": {"image": ["4", 0], "mode": mode}}
    return workflow


def test_out_of_memory_frees_comfyui_and_retries_once(comfy: ComfyStack) -> None:
    stack = comfy.stack
    freed = stack.push_ok("oom-once", oom_workflow("until_freed"), policy=LENIENT_POLICY)
    run = stack.post(freed["run_url"] + "?wait=60", {"inputs": {}}).json()
    assert run["status"] == "succeeded", stack.explain(run)

    always = stack.push_ok("oom-always", oom_workflow("always"), policy=LENIENT_POLICY)
    run = stack.post(always["run_url"] + "?wait=60", {"inputs": {}}).json()
    assert run["status"] == "failed", stack.explain(run)
    assert run["error"]["type"] == "out_of_memory"
    assert run["error"]["node_id"] == "5"
    assert "traceback" in run["error"]  # the admin key sees the engine's traceback
    caller = stack.create_key("oom-caller")
    assert "traceback" not in stack.get(f"/v1/runs/{run['id']}", key=caller).json()["error"]


# --- pools ---------------------------------------------------------------------------------------------------


def test_flux_workflow_is_refused_for_a_pool_without_its_nodes_and_accepted_for_one_that_has_them(
        comfy: ComfyStack, tmp_path: Path) -> None:
    stack = comfy.stack
    refused = stack.push("flux", flux_prompt(), pool="flux")
    assert refused.status_code == 422, refused.text
    body = refused.json()["error"]
    text = json.dumps(body)
    for node in FLUX_ONLY_NODES:
        assert node in text
    assert body["details"]["checked_against"]["source"] == "api"  # pool "flux" has not reported yet

    # A worker for pool "flux" whose ComfyUI has Flux's nodes and model files reports them on start.
    object_info = tmp_path / "flux-object-info.json"
    object_info.write_text(json.dumps(reference_object_info(with_models=True)))
    install = make_install(tmp_path / "flux-comfyui")
    start_comfyui_worker(stack, install, "--pool", "flux", "--comfyui-args", f"--object-info {object_info}")

    accepted = stack.push("flux", flux_prompt(), pool="flux")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["checked_against"]["source"] == "pool"
    assert accepted.json()["pool"] == "flux"
    nodes = stack.get("/v1/nodes?pool=flux").json()
    assert all(node in nodes for node in FLUX_ONLY_NODES)
    assert UNET in json.dumps(nodes["UNETLoader"])

    # The other pool's ComfyUI lacks them: the same workflow is refused there, naming what is missing.
    elsewhere = stack.push("flux-elsewhere", flux_prompt())
    assert elsewhere.status_code == 422, elsewhere.text
    assert elsewhere.json()["error"]["details"]["checked_against"]["source"] == "pool"


def test_a_worker_killed_with_sigkill_leaves_no_comfyui_behind(comfy: ComfyStack, tmp_path: Path) -> None:
    stack = comfy.stack
    install = make_install(tmp_path / "orphan-comfyui")
    worker_pid, health_port = start_comfyui_worker(stack, install, "--pool", "orphan")
    doomed = ComfyStack(stack, install, health_port, worker_pid)
    child = doomed.comfyui_pid()
    worker = next(w for w in stack.deployment.workers if w.pid == worker_pid)
    stack.deployment.kill(worker)  # no cleanup runs: as in a crash or the OOM killer

    def gone() -> bool:
        try:
            return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
        except FileNotFoundError:
            return True

    assert wait_for(gone, 10, "the orphaned ComfyUI to be killed with its worker")


def test_a_filename_prefix_that_leaves_the_output_folder_is_refused_before_anything_runs(comfy: ComfyStack) -> None:
    stack = comfy.stack
    pushed = stack.push_ok("prefix-comfy", slow_workflow(), {"prefix": {"node": "6", "input": "filename_prefix"}},
                           policy=LENIENT_POLICY)
    before = stack.count_runs()
    for bad in ("../../outside/x", "/etc/x"):
        response = stack.post(pushed["run_url"], {"inputs": {"prefix": bad}})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["details"]["errors"][0]["input"] == "prefix" and "filename_prefix" in error["message"]
    assert stack.count_runs() == before
