"""How fast the sentinel (the quality gate) judges images, and its share of a run's time.

Three parts, each printed as table rows (images/s, and per-image ms p50/p95):

* ``pixels``: the model-free checks alone (decode, finite, blank, noise, duplicate against 200 recent outputs,
  blur, colour entropy) on 224x224 PNGs drawn with Pillow, batch 1 and batch 16;
* ``pixels+clip+aesthetic``: the same plus CLIP prompt alignment and the aesthetic head, on an open_clip model
  with ViT-B-32's shapes and random weights (``open_clip.create_model("ViT-B-32")``, nothing pretrained),
  saved once to ``--cache-dir`` and loaded from that file through ``ClipScorer``, with a random head in the
  LAION aesthetic-predictor layout; batch 1 and batch 16 (one CLIP pass per batch);
* ``share of a run``: real runs through the embedded stack (``comfygate serve --worker`` on loopback, started
  with tests/deployment.py): a 224x224 gradient card, a new background colour each run, under the pixel policy
  and under the CLIP + aesthetic policy; from each run's ``timings`` the gate's ``sentinel_ms`` against its
  ``total_ms`` (queue, model load, execute, gate, store).

Policies put every scored band in ``review`` (it does not stop the checks that follow), so each image goes
through every check measured; the bench fails when a verdict shows a measured check as not run.

Run it as ``.venv/bin/python bench/sentinel.py [--quick] [--device cpu|cuda]``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from deployment_loader import REPO_ROOT, load_deployment
from PIL import Image, ImageDraw, ImageFilter

from comfygate.sentinel import Candidate, ClipScorer, EmbeddingHead, Policy, RecentOutput, Scorers, Sentinel

IMAGE_SIZE = 224
CLIP_MODEL = "ViT-B-32"
CLIP_FILE = "vit-b-32-random.pt"
AESTHETIC_FILE = "aesthetic-vit-b-32-random.pth"
PROMPTS = ("a lighthouse on a cliff at dusk", "a bowl of lemons on a blue table", "a red bicycle in the snow")
HISTORY = 200  # recent outputs of the endpoint the duplicate check compares with

_PIXEL_CHECKS = {
    "decode": "reject",
    "finite": "reject",
    "blank": {"review": 0.02},
    "noise": {"review": 0.2},
    "duplicate": {"review": 2, "window": HISTORY},
    "blur": {"flag": 10.0},
    "colour_entropy": {"flag": 1.0},
}
PIXEL_POLICY = {"checks": {**_PIXEL_CHECKS, "clip_alignment": "off", "aesthetic": "off", "nsfw": "off"},
                "prompt_input": None}
# Random weights give arbitrary scores: bands at the bottom of each range keep every check running.
MODEL_POLICY = {"checks": {**_PIXEL_CHECKS, "clip_alignment": {"review": -1.0}, "aesthetic": {"review": 0.0},
                           "nsfw": "off"},
                "prompt_input": "prompt"}
PIXEL_RUN_CHECKS = tuple(_PIXEL_CHECKS)
MODEL_RUN_CHECKS = (*_PIXEL_CHECKS, "clip_alignment", "aesthetic")


class BenchError(RuntimeError):
    """The gate did not do what is measured (a check did not run, a run failed); the message says what."""


# --- figures ----------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass
class Row:
    label: str
    batch: int
    images: int
    seconds: float
    per_image_ms: list[float]  # one value per call: the call's time divided by its images

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds > 0 else float("inf")
        return (f"{self.label:<24} batch {self.batch:>2}  {rate:8.1f} images/s  per image p50 "
                f"{percentile(self.per_image_ms, 50):8.2f} ms  p95 {percentile(self.per_image_ms, 95):8.2f} ms  "
                f"({self.images} images)")


# --- inputs -----------------------------------------------------------------------------------------------


def drawn_image(index: int, size: int = IMAGE_SIZE) -> Image.Image:
    """A natural-looking picture, different for every index: a two-way gradient, shapes, soft edges."""
    rng = np.random.default_rng(index)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    low, high = rng.uniform(0, 0.5, 3), rng.uniform(0.5, 1.0, 3)
    mix = (ramp[None, :, None] + ramp[:, None, None]) / 2  # [H, W, 1]
    image = Image.fromarray(((low + (high - low) * mix) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 3, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x), int(y), int(x + w), int(y + h)), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(1.2))


@dataclass
class Sample:
    png: bytes
    pixels: np.ndarray  # float32 [H, W, 3] in 0..1, as a workflow produced them before encoding
    prompt: str


def samples(count: int) -> list[Sample]:
    found = []
    for index in range(count):
        image = drawn_image(index)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        found.append(Sample(buffer.getvalue(), np.asarray(image, dtype=np.float32) / 255.0,
                            PROMPTS[index % len(PROMPTS)]))
    return found


def candidates(batch: Sequence[Sample], first_index: int) -> list[Candidate]:
    # Fresh candidates for every call, each its own request, so nothing is reused between measurements.
    return [Candidate(s.png, "image/png", IMAGE_SIZE, IMAGE_SIZE, pixels=s.pixels, prompt=s.prompt,
                      request_key=f"bench-{first_index + offset}") for offset, s in enumerate(batch)]


def history(count: int = HISTORY) -> list[RecentOutput]:
    """Unrelated recent outputs (random hashes), so the duplicate check compares with a full window."""
    rng = np.random.default_rng(12345)
    return [RecentOutput(f"{i:064x}", int(rng.integers(0, 2**63)), f"earlier-{i}", f"earlier output {i}")
            for i in range(count)]


# --- models -----------------------------------------------------------------------------------------------


def build_models(cache_dir: Path) -> tuple[Path, Path]:
    """ViT-B-32-shaped open_clip weights and an aesthetic head for its 512-wide embeddings, random, built once.

    Returns (CLIP weights file, aesthetic head file)."""
    import open_clip
    import torch

    cache_dir.mkdir(parents=True, exist_ok=True)
    clip_path, head_path = cache_dir / CLIP_FILE, cache_dir / AESTHETIC_FILE
    torch.manual_seed(0)
    if not clip_path.exists():
        model = open_clip.create_model(CLIP_MODEL)  # no `pretrained`: random initialisation, no download
        partial = clip_path.with_suffix(".partial")
        torch.save(model.state_dict(), partial)
        partial.replace(clip_path)  # a killed bench leaves no half-written file under the final name
    if not head_path.exists():
        # The LAION aesthetic predictor's layout: Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear.
        layers = torch.nn.Sequential(
            torch.nn.Linear(512, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))
        torch.save({f"layers.{key}": value for key, value in layers.state_dict().items()}, head_path)
    return clip_path, head_path


def pick_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- parts 1 and 2: the gate in this process --------------------------------------------------------------


def check_ran(verdicts: Sequence[Any], expected: Sequence[str]) -> None:
    for verdict in verdicts:
        statuses = {check.name: check.status for check in verdict.checks}
        missing = [name for name in expected if statuses.get(name) in (None, "not_run")]
        if missing:
            reasons = {check.name: check.reason for check in verdict.checks if check.name in missing}
            raise BenchError(f"checks not run: {reasons}")


def measure(label: str, sentinel: Sentinel, policy: Any, pool: Sequence[Sample], batch: int, count: int,
            expected: Sequence[str], warmup: int) -> Row:
    recent = history()
    calls = [pool[(i * batch) % len(pool):][:batch] for i in range(math.ceil(count / batch))]
    for i in range(warmup):
        sentinel.evaluate_batch(candidates(calls[i % len(calls)], 0), policy, recent)
    per_image_ms, total = [], 0.0
    for i, chunk in enumerate(calls):
        batch_candidates = candidates(chunk, i * batch)
        start = time.perf_counter()
        verdicts = sentinel.evaluate_batch(batch_candidates, policy, recent)
        seconds = time.perf_counter() - start
        check_ran(verdicts, expected)
        total += seconds
        per_image_ms.append(seconds * 1e3 / len(chunk))
    return Row(label, batch, sum(len(c) for c in calls), total, per_image_ms)


def gate_rows(args: argparse.Namespace, clip_path: Path, head_path: Path, device: str) -> list[Row]:
    # Images per batch size: a CPU takes a while per CLIP pass at batch 1, so that row gets fewer.
    pixel_count = {1: 32, 16: 32} if args.quick else {1: 320, 16: 320}
    model_count = {1: 8, 16: 16} if args.quick else {1: 48, 16: 128}
    pool = samples(max(*pixel_count.values(), *model_count.values()))
    rows = []
    pixels = Sentinel()
    pixel_policy = Policy.from_dict(PIXEL_POLICY).resolve({})
    for batch in (1, 16):
        rows.append(measure("pixels", pixels, pixel_policy, pool, batch, pixel_count[batch], PIXEL_RUN_CHECKS, 2))
        print(rows[-1].line(), flush=True)

    scorers = Scorers(clip=ClipScorer(CLIP_MODEL, clip_path, device),
                      aesthetic=EmbeddingHead.from_file(head_path, kind="aesthetic", device=device), batch_size=16)
    start = time.perf_counter()
    scorers.load()
    print(f"  (loaded {CLIP_MODEL} + aesthetic head on {device} in {time.perf_counter() - start:.1f} s)", flush=True)
    models = Sentinel(scorers)
    model_policy = Policy.from_dict(MODEL_POLICY).resolve({})
    for batch in (1, 16):
        rows.append(measure("pixels+clip+aesthetic", models, model_policy, pool, batch, model_count[batch],
                            MODEL_RUN_CHECKS, 2))
        print(rows[-1].line(), flush=True)
    return rows


# --- part 3: the gate's share of real runs ----------------------------------------------------------------




BACKGROUND_INPUT = {"node": "1", "input": "color"}


def card_workflow() -> dict[str, Any]:
    """workflows/gradient_card.json with a 224x224 background (the card and stripe stay where they are)."""
    import json

    workflow = json.loads((REPO_ROOT / "workflows" / "gradient_card.json").read_text())
    workflow["1"]["inputs"].update(width=IMAGE_SIZE, height=IMAGE_SIZE)
    return workflow


@dataclass
class RunFigures:
    label: str
    sentinel_ms: list[float]
    total_ms: list[float]
    execute_ms: list[float]

    def line(self) -> str:
        share = sum(self.sentinel_ms) / sum(self.total_ms)
        return (f"{self.label:<24} gate p50 {percentile(self.sentinel_ms, 50):8.2f} ms of a run's total p50 "
                f"{percentile(self.total_ms, 50):8.2f} ms (execute p50 {percentile(self.execute_ms, 50):.2f} ms): "
                f"gate share {share:6.1%}  ({len(self.total_ms)} runs)")


def share_rows(args: argparse.Namespace, clip_path: Path, head_path: Path, device: str) -> list[RunFigures]:
    deployment = load_deployment()
    runs, warmup = (4, 1) if args.quick else (30, 3)
    workdir = Path(tempfile.mkdtemp(prefix="comfygate-bench-sentinel-"))
    env = {"COMFYGATE_CLIP_MODEL": CLIP_MODEL, "COMFYGATE_CLIP_WEIGHTS": str(clip_path),
           "COMFYGATE_AESTHETIC_WEIGHTS": str(head_path), "COMFYGATE_DEVICE": device}
    dep = deployment.Deployment(workdir, env_overrides=env)
    found = []
    try:
        dep.migrate()
        dep.start_server(with_worker=True, timeout=180)
        colour = 0
        for label, name, policy in (("run, pixel gate", "bench-gate-pixels", PIXEL_POLICY),
                                    ("run, clip+aesthetic gate", "bench-gate-models", MODEL_POLICY)):
            # No text input in this workflow: the prompt-alignment check has no prompt and reports not run.
            body = {"name": name, "workflow": card_workflow(), "inputs": {"background": BACKGROUND_INPUT},
                    "policy": {**policy, "prompt_input": None}}
            answer = dep.post("/v1/workflows", body)
            if answer.status_code not in (200, 201):
                raise BenchError(f"workflow upload answered {answer.status_code}: {answer.text[:400]}")
            figures = RunFigures(label, [], [], [])
            for i in range(warmup + runs):
                colour = (colour + 0x9E3779) & 0xFFFFFF  # a different background every run
                answer = dep.post(f"/v1/workflows/{name}/runs?wait=60", {"inputs": {"background": colour}})
                run = answer.json()
                timings = run.get("timings") or {}
                if answer.status_code != 200 or run.get("status") in ("failed", "canceled") or \
                        "sentinel_ms" not in timings:
                    raise BenchError(f"run answered {answer.status_code}: {str(run)[:400]}")
                if i >= warmup:
                    figures.sentinel_ms.append(timings["sentinel_ms"])
                    figures.total_ms.append(timings["total_ms"])
                    figures.execute_ms.append(timings.get("execute_ms", 0.0))
            found.append(figures)
            print(figures.line(), flush=True)
    finally:
        dep.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"data dir and logs kept in {workdir}", file=sys.stderr)
    return found


# --- command line -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run: few images, few runs")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "bench-models",
                        help="where the random-weight ViT-B-32 and aesthetic head are built once and kept")
    parser.add_argument("--no-runs", action="store_true", help="skip the share-of-a-run part (no processes)")
    parser.add_argument("--keep", action="store_true", help="keep the deployment's data dir (logs)")
    args = parser.parse_args(argv)

    import torch

    device = pick_device(args.device)
    start = time.perf_counter()
    clip_path, head_path = build_models(args.cache_dir)
    print(f"sentinel bench on {device} ({torch.get_num_threads()} CPU threads), {IMAGE_SIZE}x{IMAGE_SIZE} PNGs; "
          f"models ready in {time.perf_counter() - start:.1f} s ({args.cache_dir})", flush=True)
    try:
        gate_rows(args, clip_path, head_path, device)
        if not args.no_runs:
            share_rows(args, clip_path, head_path, device)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
