"""The model library: what the diffusion nodes reach for — model files on disk and the warm pool.

One library per worker process (and one per API server, which only lists files for the node schemas). The
pool, the device and torch itself are set up on first use, so building node schemas never imports torch's
model code nor probes the GPU.

Loader nodes call :meth:`ModelLibrary.checkpoint` and friends: the file is loaded into the pool now (so the
loader node carries the load time and any error about the file), and the node gets small handles
(handles.py) that find the model in the pool again when a sampler or decoder needs it, reloading it if it was
evicted in between.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError
from .handles import ClipHandle, ModelHandle, PoolRef, VaeHandle
from .model_paths import ModelPaths

if TYPE_CHECKING:
    import torch

    from .pool import ModelPool

__all__ = ["ModelLibrary", "PRELOADABLE_FOLDERS"]

# What `--preload folder/name` can load, by the folder the file lies in.
PRELOADABLE_FOLDERS = ("checkpoints", "vae", "diffusion_models", "text_encoders", "upscale_models", "loras")


class ModelLibrary:
    """Model files under ``paths`` loaded onto ``device`` ("auto" | "cpu" | "cuda[:N]") at ``dtype``
    ("auto" | "fp16" | "bf16" | "fp32"), kept warm in a pool of ``budget_bytes`` (0: most of the device)."""

    def __init__(self, paths: ModelPaths, *, device: str = "auto", dtype: str = "auto", budget_bytes: int = 0):
        self.paths = paths
        self._device_setting = device
        self._dtype_setting = dtype
        self._budget_bytes = budget_bytes
        self._setup_lock = threading.Lock()
        self._pool: ModelPool | None = None
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None

    @classmethod
    def without_files(cls) -> ModelLibrary:
        """A library with no model folders: its loader nodes list nothing (a registry built without settings)."""
        return cls(ModelPaths(None))

    # -- set up on first use ------------------------------------------------------------------------------
    def _set_up(self) -> None:
        with self._setup_lock:
            if self._pool is not None:
                return
            from .memory import default_budget, pick_device, pick_dtype
            from .pool import ModelPool

            self._device = pick_device(self._device_setting)
            self._dtype = pick_dtype(self._device, self._dtype_setting)
            budget = self._budget_bytes or default_budget(self._device)
            self._pool = ModelPool(budget, name=str(self._device))

    @property
    def pool(self) -> ModelPool:
        self._set_up()
        assert self._pool is not None
        return self._pool

    @property
    def device(self) -> torch.device:
        self._set_up()
        assert self._device is not None
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        self._set_up()
        assert self._dtype is not None
        return self._dtype

    def _ref(self, kind: str, path: Path, load: Callable[[], Any], *options: str,
             device: torch.device | None = None) -> PoolRef:
        key = (kind, str(path), str(device or self.device), *options)
        # The file's size stands for the loaded size until the first load measures it: idle models make room
        # before a large file is read, rather than after both sit in memory.
        ref = PoolRef(self.pool, key, load, size_hint=path.stat().st_size)
        ref.ensure_loaded()
        return ref

    # -- what the loader nodes call -----------------------------------------------------------------------
    def checkpoint(self, name: str) -> tuple[ModelHandle, ClipHandle | None, VaeHandle | None]:
        """CheckpointLoaderSimple: one pool entry holds the UNet, text encoders and VAE of the file."""
        from .checkpoints import load_checkpoint

        path = self.paths.resolve("checkpoints", name)
        ref = self._ref("checkpoint", path, lambda: load_checkpoint(path, self.device, self.dtype), str(self.dtype))
        with ref.use() as loaded:
            has_text, has_vae = loaded.text is not None, loaded.vae is not None
        model = ModelHandle(ref, part="unet")
        clip = ClipHandle(ref, part="text") if has_text else None
        vae = VaeHandle(ref, part="vae") if has_vae else None
        return model, clip, vae

    def diffusion_model(self, name: str, weight_dtype: str = "default") -> ModelHandle:
        """UNETLoader: a bare diffusion model file from diffusion_models/ (ComfyUI's unet/ too)."""
        from .checkpoints import load_diffusion_model

        if weight_dtype != "default":
            raise ModelLoadError(f"weight_dtype {weight_dtype!r} is not supported here: fp8 weights need "
                                 f"ComfyUI's fp8 kernels; use 'default'")
        path = self.paths.resolve("diffusion_models", name)
        ref = self._ref("unet", path, lambda: load_diffusion_model(path, self.device, self.dtype), str(self.dtype))
        return ModelHandle(ref, part=None)

    def text_encoder(self, name: str, kind: str, *, on_cpu: bool = False) -> ClipHandle:
        """CLIPLoader: a standalone text encoder file from text_encoders/ (ComfyUI's clip/ too); ``on_cpu``
        keeps it in RAM in float32 (its "device: cpu" option), leaving the GPU to the diffusion model."""
        import torch

        from .checkpoints import load_text_encoder

        path = self.paths.resolve("text_encoders", name)
        device, dtype = (torch.device("cpu"), torch.float32) if on_cpu else (self.device, self.dtype)
        ref = self._ref("text_encoder", path, lambda: load_text_encoder(path, kind, device, dtype), kind,
                        str(dtype), device=device)
        return ClipHandle(ref, part=None)

    def vae(self, name: str) -> VaeHandle:
        """VAELoader: a standalone VAE file from vae/."""
        from .checkpoints import load_vae

        path = self.paths.resolve("vae", name)
        ref = self._ref("vae", path, lambda: load_vae(path, self.device, self.dtype), str(self.dtype))
        return VaeHandle(ref, part=None)

    def lora(self, name: str) -> PoolRef:
        """A LoRA file from loras/, read once and kept in the pool beside the models it patches."""
        from .lora import load_lora

        path = self.paths.resolve("loras", name)
        return self._ref("lora", path, lambda: load_lora(path))

    def upscale_model(self, name: str) -> PoolRef:
        """UpscaleModelLoader: an upscaler file from upscale_models/ (any architecture spandrel knows)."""
        from .upscale import load_upscale_model

        path = self.paths.resolve("upscale_models", name)
        return self._ref("upscale", path, lambda: load_upscale_model(path, self.device))

    # -- worker start ----------------------------------------------------------------------------------------
    def preload(self, entry: str) -> None:
        """Load ``folder/name`` (e.g. ``checkpoints/sd15.safetensors``) into the pool before runs arrive."""
        folder, _, name = entry.replace("\\", "/").partition("/")
        if folder not in PRELOADABLE_FOLDERS or not name:
            raise ModelLoadError(f"cannot preload {entry!r}: name a file as folder/name with folder one of "
                                 f"{', '.join(PRELOADABLE_FOLDERS)} (e.g. checkpoints/model.safetensors)")
        loaders: dict[str, Callable[[str], Any]] = {
            "checkpoints": self.checkpoint, "vae": self.vae, "diffusion_models": self.diffusion_model,
            "text_encoders": lambda n: self.text_encoder(n, "stable_diffusion"),
            "upscale_models": self.upscale_model, "loras": self.lora,
        }
        loaders[folder](name)

    def free_idle(self) -> int:
        """Evict every model no run is using (the out-of-memory path); bytes freed."""
        return self._pool.free_idle() if self._pool is not None else 0

    def report(self) -> list[dict[str, Any]]:
        """What is warm: one entry per loaded model with its size and load time (empty before first use)."""
        return self._pool.report() if self._pool is not None else []
