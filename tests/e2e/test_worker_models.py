"""A worker that preloads a checkpoint: readiness probe, warm-model report, and runs that load nothing.

Real processes on loopback (API server, one ``comfygate worker``, filesystem broker, SQLite) and a tiny
random-weight SD1 checkpoint in the models folder of the data dir.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests
from e2e_support import Stack, decode_png

from comfy_runtime.diffusion.tiny_checkpoints import build_sd1_checkpoint
from deployment import Deployment, free_port

pytestmark = pytest.mark.e2e

CHECKPOINT = "checkpoints/tiny_sd1.safetensors"
TXT2IMG = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "seed": 1, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "t2i"}},
}
INPUTS = {"seed": {"node": "5", "input": "seed"}}
# A random-weight model draws noise-like pictures: only a broken file or NaN pixels stop them here.
POLICY = {"checks": {"decode": "reject", "finite": "reject", "blank": "off", "noise": "off", "duplicate": "off",
                     "clip_alignment": "off", "blur": "off", "colour_entropy": "off"}, "prompt_input": None}


def probe(port: int, path: str) -> requests.Response | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    except requests.ConnectionError:
        return None


def test_a_preloading_worker_is_ready_only_after_its_models_are_warm(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path / "data")
    build_sd1_checkpoint(deployment.data_dir / "models" / CHECKPOINT)
    stack = Stack(deployment, f"sqlite:///{deployment.data_dir / 'comfygate.db'}")
    health_port = free_port()
    answers: list[int] = []
    stop = threading.Event()

    ready: list[requests.Response] = []

    def watch() -> None:  # every /ready answer, from before the worker starts until the first 200
        while not stop.is_set():
            response = probe(health_port, "/ready")
            if response is not None:
                answers.append(response.status_code)
                if response.ok:
                    ready.append(response)
                    return
            stop.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        deployment.migrate()
        deployment.start_server(with_worker=False)
        watcher.start()
        deployment.start_worker("--preload", CHECKPOINT, "--health-port", str(health_port))
        watcher.join(timeout=30)
        assert ready, f"the readiness probe never answered 200: {answers}\n{stack.logs()}"
        # The probe said 503 while the checkpoint loaded, never 200 before it was warm.
        ready_from = answers.index(200)
        assert ready_from > 0 and set(answers[:ready_from]) == {503} and set(answers[ready_from:]) == {200}, answers
        (warm,) = ready[0].json()["models"]
        assert warm["key"][1].endswith("tiny_sd1.safetensors") and warm["load_ms"] > 0 and warm["loads"] == 1

        stack.push_ok("t2i", TXT2IMG, INPUTS, policy=POLICY)
        finished = stack.post("/v1/workflows/t2i/runs?wait=60", {"inputs": {"seed": 5}})
        run = finished.json()
        assert finished.status_code == 200 and run["status"] == "succeeded", stack.explain(run)
        # Preloaded: the first run loads nothing, and says so apart from its execution time.
        assert run["timings"]["model_load_ms"] == 0 and run["timings"]["model_loads"] == []
        assert run["timings"]["execute_ms"] > 0
        image = stack.get(run["outputs"][0]["url"])
        assert decode_png(image.content).size == (64, 64)
        (after,) = probe(health_port, "/models").json()["models"]
        assert after["loads"] == 1 and after["hits"] >= 1
    finally:
        stop.set()
        deployment.stop()


def test_a_worker_refuses_to_start_when_a_preload_file_is_missing(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path / "data")
    try:
        deployment.migrate()
        with pytest.raises(RuntimeError, match="worker exited") as caught:
            deployment.start_worker("--preload", "checkpoints/absent.safetensors", timeout=60)
        assert "absent.safetensors" in str(caught.value)
    finally:
        deployment.stop()
