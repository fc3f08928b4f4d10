"""Cold and warm txt2img through the embedded runtime, as a worker process runs it.

The workflow is CheckpointLoaderSimple -> CLIPTextEncode (positive, negative) -> EmptyLatentImage ->
KSampler -> VAEDecode -> SaveImage. Each measurement runs in a fresh Python process (like a new worker):

* cold: the first run of the process, from the Executor's first call to the PNG in hand; it includes
  importing diffusers/transformers and loading the checkpoint (its load share is printed apart);
* warm: the next ``--warm-runs`` runs in the same process, each with a new seed so the sampler and decoder
  really run (the loader is answered from the node cache and the model pool);
* the warm/cold ratio.

Checkpoints (random weights, real single-file layout, built once into ``--cache-dir``):

* ``tiny``  the SD1 fixture checkpoint of the tests (always);
* ``sd15``  full-size SD1.5 shapes (860M UNet, CLIP-L, VAE; 2.1 GB fp16... stored fp32 here), 64x64, 2 Euler
  steps: the figure ComfyUI 0.3.64 gives as warm 2.46 s / cold 9-12 s on a 2-core CPU (``--sd15``);
* on CUDA (``--device cuda``, or auto when one is present) also sd15 at 512x512, 20 steps, printed as it/s.

Run it as ``.venv/bin/python bench/runtime.py [--sd15]``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

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


def build_sd15(path: Path) -> Path:
    """A random-weight checkpoint with SD1.5's exact key names and shapes (the tests' LDM key mapping)."""
    from comfy_runtime.diffusion.tiny_checkpoints import TEXT_PREFIXES, UNET_PREFIX, VAE_PREFIX, save_state_dict
    from comfy_runtime.diffusion.tiny_ldm_keys import clip_l_to_ldm, hf_text_state_dict, unet_to_ldm, vae_to_ldm
    from comfy_runtime.diffusion.tiny_models import make_text_encoder, make_unet, make_vae

    state = unet_to_ldm(make_unet(SD15_UNET, 0).state_dict(), SD15_UNET, UNET_PREFIX)
    state.update(vae_to_ldm(make_vae(1, SD15_VAE).state_dict(), SD15_VAE, VAE_PREFIX))
    (text_prefix, _layout), = TEXT_PREFIXES["sd1"]
    state.update(clip_l_to_ldm(hf_text_state_dict(make_text_encoder(SD15_CLIP_L, 2)), text_prefix))
    return save_state_dict(state, path)


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


def child(args: argparse.Namespace) -> None:
    """One fresh process: the cold run, then the warm runs; prints one JSON line."""
    started = time.perf_counter()
    from comfygate.comfy_runtime import Executor, RunContext, create_registry
    from comfygate.comfy_runtime.diffusion.library import ModelLibrary
    from comfygate.comfy_runtime.diffusion.model_paths import ModelPaths

    library = ModelLibrary(ModelPaths(Path(args.models_dir)), device=args.device)
    executor = Executor(create_registry(models=library))
    import_s = time.perf_counter() - started
    context = RunContext(input_dir=Path(tempfile.gettempdir()))
    timings = []
    load_ms = 0.0
    for index in range(1 + args.warm_runs):
        start = time.perf_counter()
        result = executor.run(prompt(args.ckpt, 1000 + index, args.size, args.steps), context)
        if library.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
        if index == 0:
            load_ms = result.model_load_ms
        sample_ms = result.node_ms.get("5", 0.0)
    print(json.dumps({"import_s": import_s, "cold_s": timings[0], "warm_s": timings[1:], "load_ms": load_ms,
                      "last_sample_ms": sample_ms, "device": str(library.device)}))


def measure(models_dir: Path, ckpt: str, size: int, steps: int, warm_runs: int, device: str) -> dict:
    command = [sys.executable, __file__, "--child", "--models-dir", str(models_dir), "--ckpt", ckpt,
               "--size", str(size), "--steps", str(steps), "--warm-runs", str(warm_runs), "--device", device]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(label: str, runs: list[dict], steps: int) -> None:
    colds = [run["cold_s"] for run in runs]
    warms = [t for run in runs for t in run["warm_s"]]
    cold, warm = statistics.median(colds), statistics.median(warms)
    loads = statistics.median(run["load_ms"] for run in runs) / 1000
    print(f"{label:<28} cold {cold:7.3f} s (model load {loads:.3f} s; {len(colds)} processes)   "
          f"warm p50 {warm:7.3f} s p95 {percentile(warms, 0.95):7.3f} s ({len(warms)} runs)   "
          f"warm/cold {warm / cold:.3f}")
    sample_s = statistics.median(run["last_sample_ms"] for run in runs) / 1000
    print(f"{'':<28} sampler alone {sample_s:.3f} s = {steps / sample_s:.2f} it/s on {runs[0]['device']}"
          f" (cfg: 2 model calls per step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", default="")
    parser.add_argument("--ckpt", default="tiny_sd1.safetensors")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warm-runs", type=int, default=10)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per figure (cold samples)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sd15", action="store_true", help="also the full-size SD1.5-shaped checkpoint")
    parser.add_argument("--cache-dir", default=str(REPO_ROOT / "data" / "bench-models"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from comfy_runtime.diffusion.tiny_checkpoints import build_sd1_checkpoint

    models_dir = Path(args.cache_dir)
    checkpoints = models_dir / "checkpoints"
    if not (checkpoints / "tiny_sd1.safetensors").exists():
        build_sd1_checkpoint(checkpoints / "tiny_sd1.safetensors")
    import torch

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    figures = [("tiny SD1, 64x64, 2 steps", "tiny_sd1.safetensors", 64, 2, args.warm_runs)]
    if args.sd15 or cuda:
        if not (checkpoints / "sd15_random.safetensors").exists():
            print("building the random-weight SD1.5-shaped checkpoint (once) ...", flush=True)
            build_sd15(checkpoints / "sd15_random.safetensors")
        figures.append(("SD1.5 shape, 64x64, 2 steps", "sd15_random.safetensors", 64, 2, min(args.warm_runs, 5)))
    if cuda:
        figures.append(("SD1.5 shape, 512x512, 20 steps", "sd15_random.safetensors", 512, 20, 3))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    for label, ckpt, size, steps, warm_runs in figures:
        runs = [measure(models_dir, ckpt, size, steps, warm_runs, args.device) for _ in range(args.processes)]
        report(label, runs, steps)


if __name__ == "__main__":
    main()
