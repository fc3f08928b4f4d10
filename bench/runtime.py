"""Cold and warm txt2img through the embedded runtime, as a worker process runs it.

The workflow is CheckpointLoaderSimple -> CLIPTextEncode (positive, negative) -> EmptyLatentImage ->
KSampler -> VAEDecode -> SaveImage. Each measurement runs in a fresh Python process (like a new worker):

* cold: the first run of the process, from the Executor's first call to the PNG in hand; it includes
  importing diffusers/transformers and loading the checkpoint (its load share is printed apart);
* warm: the next ``--warm-runs`` runs in the same process, each with a new seed so the sampler and decoder
  really run (the loader is answered from the node cache and the model pool);
* the warm/cold ratio; on CUDA also the peak GPU memory of the process (torch's allocator: allocated and
  reserved; NVML: the whole device's use above what it was before the process touched the GPU, when
  nvidia-ml-py is installed).

Checkpoints (random weights, real single-file layout, built once into ``--cache-dir``):

* ``tiny``  the SD1 fixture checkpoint of the tests (always);
* ``sd15``  full-size SD1.5 shapes (860M UNet, CLIP-L, VAE; stored fp32, 4.3 GB), 64x64, 2 Euler steps: the
  figure ComfyUI 0.3.64 gives as warm 2.46 s / cold 9-12 s on a 2-core CPU (``--sd15``);
* ``sdxl``  full-size SDXL base shapes (2.6B UNet, CLIP-L + OpenCLIP bigG, VAE; stored fp16 like
  sd_xl_base_1.0, 6.9 GB; ``--sdxl``);
* on CUDA (``--device cuda``, or auto when one is present) sd15 also at 512x512 and sdxl at 1024x1024, both
  20 steps, printed as it/s. ``--size`` / ``--steps`` replace those sizes and step counts.

``--models sd15,sdxl`` picks the checkpoints outright (then the tiny one and the CUDA 64x64 figure are left
out), and ``--dtype`` the weight dtype (``auto``: fp16 on CUDA, fp32 on CPU). On CUDA the full-size random
checkpoints are built on the GPU (seconds instead of minutes of CPU init).

Run it as ``.venv/bin/python bench/runtime.py [--sd15] [--sdxl]``, or e.g.
``python bench/runtime.py --device cuda --dtype fp16 --models sd15,sdxl --processes 1 --warm-runs 3``.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
GIB = 1024**3

# Real SD1.5 sizes, in diffusers/transformers terms (what v1-5-pruned.safetensors holds).
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "norm_num_groups": 32,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}
SD15_CLIP_L = {
    "vocab_size": 49408, "max_position_embeddings": 77, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "projection_dim": 768, "hidden_act": "quick_gelu",
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407, "layer_norm_eps": 1e-5,
}
# Real SDXL base sizes (sd_xl_base_1.0.safetensors): 3 levels, transformer depth 1/2/10 with 64-wide heads, a
# 2048-wide context (CLIP-L 768 + bigG 1280) and a 2816-wide ADM input (pooled bigG 1280 + 6 sizes x 256).
# The VAE has SD1.5's shapes (only its weights and scale factor differ).
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048, "use_linear_projection": True,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_CLIP_G = {
    **SD15_CLIP_L, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 20, "projection_dim": 1280, "hidden_act": "gelu",
}
CHECKPOINTS = {"tiny": "tiny_sd1.safetensors", "sd15": "sd15_random.safetensors", "sdxl": "sdxl_random.safetensors"}


def _built_on(device: str):
    """Where random modules are created: on CUDA when benchmarking CUDA (init is seconds, not minutes)."""
    import torch

    return torch.device(device if device.startswith("cuda") else "cpu")


def _save(state: dict, path: Path, dtype=None) -> Path:
    """Write ``state`` (floating tensors cast to ``dtype`` where they are, then brought to the CPU)."""
    from comfy_runtime.diffusion.tiny_checkpoints import save_state_dict

    cast = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).cpu() for k, v in state.items()}
    return save_state_dict(cast, path)


def build_sd15(path: Path, device: str = "cpu") -> Path:
    """A random-weight checkpoint with SD1.5's exact key names and shapes (the tests' LDM key mapping)."""
    from comfy_runtime.diffusion.tiny_checkpoints import TEXT_PREFIXES, UNET_PREFIX, VAE_PREFIX
    from comfy_runtime.diffusion.tiny_ldm_keys import clip_l_to_ldm, hf_text_state_dict, unet_to_ldm, vae_to_ldm
    from comfy_runtime.diffusion.tiny_models import make_text_encoder, make_unet, make_vae

    with _built_on(device):
        state = unet_to_ldm(make_unet(SD15_UNET, 0).state_dict(), SD15_UNET, UNET_PREFIX)
        state.update(vae_to_ldm(make_vae(1, SD15_VAE).state_dict(), SD15_VAE, VAE_PREFIX))
        (text_prefix, _layout), = TEXT_PREFIXES["sd1"]
        state.update(clip_l_to_ldm(hf_text_state_dict(make_text_encoder(SD15_CLIP_L, 2)), text_prefix))
    return _save(state, path)


def build_sdxl(path: Path, device: str = "cpu", unet: dict | None = None, clip_g: dict | None = None) -> Path:
    """A random-weight checkpoint with SDXL base's key names and shapes, stored float16 as the release is.

    ``unet`` / ``clip_g`` replace the UNet and bigG configs (a check with smaller widths, same layout).
    """
    import torch

    from comfy_runtime.diffusion.tiny_checkpoints import TEXT_PREFIXES, UNET_PREFIX, VAE_PREFIX
    from comfy_runtime.diffusion.tiny_ldm_keys import (
        clip_l_to_ldm,
        hf_text_state_dict,
        open_clip_to_ldm,
        unet_to_ldm,
        vae_to_ldm,
    )
    from comfy_runtime.diffusion.tiny_models import make_text_encoder, make_unet, make_vae

    unet, clip_g = unet or SDXL_UNET, clip_g or SDXL_CLIP_G
    (l_prefix, _), (g_prefix, _) = TEXT_PREFIXES["sdxl"]
    with _built_on(device):
        state = unet_to_ldm(make_unet(unet, 0).state_dict(), unet, UNET_PREFIX)
        state.update(vae_to_ldm(make_vae(1, SD15_VAE).state_dict(), SD15_VAE, VAE_PREFIX))
        state.update(clip_l_to_ldm(hf_text_state_dict(make_text_encoder(SD15_CLIP_L, 2)), l_prefix))
        bigg = hf_text_state_dict(make_text_encoder(clip_g, 3, projection=True))
        state.update(open_clip_to_ldm(bigg, g_prefix, width=clip_g["hidden_size"]))
    return _save(state, path, dtype=torch.float16)


def prompt(ckpt: str, seed: int, size: int, steps: int) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }


class _Warnings(logging.Handler):
    """Warnings the runtime logs during the runs (a VAE falling back to float32, a model over budget ...)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


class _NvmlPeak:
    """Polls the device's used memory (NVML) every 10 ms: the peak above the use when started, in bytes."""

    def __init__(self, index: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.baseline = self.peak = self._used()
        self._stop = threading.Event()
        threading.Thread(target=self._poll, daemon=True).start()

    def _used(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._used())

    def stop(self) -> int:
        self._stop.set()
        self.peak = max(self.peak, self._used())
        return self.peak - self.baseline


def child(args: argparse.Namespace) -> None:
    """One fresh process: the cold run, then the warm runs; prints one JSON line."""
    started = time.perf_counter()
    nvml = None
    if args.device.startswith("cuda"):
        try:  # before torch touches the GPU, so the baseline is the use without this process
            nvml = _NvmlPeak(int(args.device.partition(":")[2] or 0))
        except Exception:  # noqa: BLE001 - no nvidia-ml-py or no NVML: torch's own figures only
            nvml = None
    from comfygate.comfy_runtime import Executor, RunContext, create_registry
    from comfygate.comfy_runtime.diffusion.library import ModelLibrary
    from comfygate.comfy_runtime.diffusion.model_paths import ModelPaths

    warnings = _Warnings()
    logging.getLogger().addHandler(warnings)
    library = ModelLibrary(ModelPaths(Path(args.models_dir)), device=args.device, dtype=args.dtype)
    executor = Executor(create_registry(models=library))
    import_s = time.perf_counter() - started
    context = RunContext(input_dir=Path(tempfile.gettempdir()))
    cuda = library.device.type == "cuda"
    if cuda:
        import torch
    timings, peaks = [], []
    load_ms = 0.0
    for index in range(1 + args.warm_runs):
        start = time.perf_counter()
        result = executor.run(prompt(args.ckpt, 1000 + index, args.size, args.steps), context)
        if cuda:
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
        if cuda:  # peak of this run (the cold one includes the load)
            peaks.append((torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()))
            torch.cuda.reset_peak_memory_stats()
        if index == 0:
            load_ms = result.model_load_ms
        sample_ms = result.node_ms.get("5", 0.0)
    memory = {}
    if cuda:
        memory = {"peak_alloc_cold": peaks[0][0], "peak_reserved_cold": peaks[0][1],
                  "peak_alloc_warm": max((p[0] for p in peaks[1:]), default=0),
                  "peak_reserved_warm": max((p[1] for p in peaks[1:]), default=0),
                  "nvml_peak": nvml.stop() if nvml else None, "gpu": torch.cuda.get_device_name(library.device)}
    print(json.dumps({"import_s": import_s, "cold_s": timings[0], "warm_s": timings[1:], "load_ms": load_ms,
                      "last_sample_ms": sample_ms, "device": str(library.device), "dtype": str(library.dtype),
                      "warnings": warnings.messages, **memory}))


def measure(models_dir: Path, ckpt: str, size: int, steps: int, warm_runs: int, device: str, dtype: str) -> dict:
    command = [sys.executable, __file__, "--child", "--models-dir", str(models_dir), "--ckpt", ckpt,
               "--size", str(size), "--steps", str(steps), "--warm-runs", str(warm_runs), "--device", device,
               "--dtype", dtype]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(label: str, runs: list[dict], steps: int) -> None:
    colds = [run["cold_s"] for run in runs]
    warms = [t for run in runs for t in run["warm_s"]]
    cold, warm = statistics.median(colds), statistics.median(warms)
    loads = statistics.median(run["load_ms"] for run in runs) / 1000
    imports = statistics.median(run["import_s"] for run in runs)
    print(f"{label:<32} cold {cold:7.3f} s (model load {loads:.3f} s, after {imports:.1f} s of imports; "
          f"{len(colds)} processes)   "
          f"warm p50 {warm:7.3f} s p95 {percentile(warms, 0.95):7.3f} s ({len(warms)} runs)   "
          f"warm/cold {warm / cold:.3f}")
    sample_s = statistics.median(run["last_sample_ms"] for run in runs) / 1000
    first = runs[0]
    print(f"{'':<32} sampler alone {sample_s:.3f} s = {steps / sample_s:.2f} it/s on {first['device']}"
          f" {first['dtype'].removeprefix('torch.')} (cfg: 2 model calls per step)")
    if "peak_alloc_cold" in first:
        def most(name: str) -> str:
            values = [run[name] for run in runs if run.get(name) is not None]
            return f"{max(values) / GIB:.2f}" if values else "n/a"

        print(f"{'':<32} peak GPU memory GiB: cold allocated {most('peak_alloc_cold')} reserved "
              f"{most('peak_reserved_cold')}; warm allocated {most('peak_alloc_warm')} reserved "
              f"{most('peak_reserved_warm')}; NVML device use {most('nvml_peak')} ({first['gpu']})")
    for message in dict.fromkeys(m for run in runs for m in run["warnings"]):
        print(f"{'':<32} warning: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", default="tiny_sd1.safetensors", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=None, help="image side of the full-size figures")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps of the full-size figures")
    parser.add_argument("--warm-runs", type=int, default=10)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per figure (cold samples)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp16", "bf16", "fp32"])
    parser.add_argument("--sd15", action="store_true", help="also the full-size SD1.5-shaped checkpoint")
    parser.add_argument("--sdxl", action="store_true", help="also the full-size SDXL-shaped checkpoint")
    parser.add_argument("--models", default="", help="comma list of tiny, sd15, sdxl: only these")
    parser.add_argument("--cache-dir", default=str(REPO_ROOT / "data" / "bench-models"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    device = args.device if args.device != "auto" else ("cuda" if cuda else "cpu")
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    if any(m not in CHECKPOINTS for m in chosen):
        parser.error(f"--models takes a comma list of {', '.join(CHECKPOINTS)}")
    models = chosen or ["tiny", *(["sd15"] if args.sd15 or cuda else []), *(["sdxl"] if args.sdxl else [])]
    big_size = {"sd15": 512, "sdxl": 1024}
    figures = []
    for model in models:
        if model == "tiny":
            figures.append(("tiny SD1, 64x64, 2 steps", model, 64, 2, args.warm_runs))
            continue
        name = "SD1.5" if model == "sd15" else "SDXL"
        if not cuda or (model == "sd15" and not chosen and args.size is None and args.steps is None):
            size, steps = args.size or 64, args.steps or 2  # the CPU figure (on CUDA too, by default)
            figures.append((f"{name} shape, {size}x{size}, {steps} steps", model, size, steps,
                            min(args.warm_runs, 5)))
        if cuda:
            size, steps = args.size or big_size[model], args.steps or 20
            figures.append((f"{name} shape, {size}x{size}, {steps} steps", model, size, steps,
                            min(args.warm_runs, 3)))

    models_dir = Path(args.cache_dir)
    checkpoints = models_dir / "checkpoints"
    builders = {"sd15": build_sd15, "sdxl": build_sdxl}
    for model in models:
        path = checkpoints / CHECKPOINTS[model]
        if path.exists():
            continue
        started = time.perf_counter()
        if model == "tiny":
            from comfy_runtime.diffusion.tiny_checkpoints import build_sd1_checkpoint

            build_sd1_checkpoint(path)
            continue
        print(f"building the random-weight {model}-shaped checkpoint (once) ...", flush=True)
        try:
            builders[model](path, device)
        except Exception as exc:  # noqa: BLE001 - building on the GPU is a shortcut; the CPU always works
            if not cuda:
                raise
            print(f"  building on {device} failed ({exc!r}); building on the CPU instead", flush=True)
            builders[model](path, "cpu")
        if cuda:
            torch.cuda.empty_cache()
        print(f"  built {path.name} ({path.stat().st_size / GIB:.2f} GiB) in {time.perf_counter() - started:.1f} s",
              flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, dtype {args.dtype}")
    failed = 0
    for label, model, size, steps, warm_runs in figures:
        try:
            runs = [measure(models_dir, CHECKPOINTS[model], size, steps, warm_runs, args.device, args.dtype)
                    for _ in range(args.processes)]
        except RuntimeError as exc:
            failed += 1
            print(f"{label:<32} FAILED: {exc}", flush=True)
            continue
        report(label, runs, steps)
        sys.stdout.flush()
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
