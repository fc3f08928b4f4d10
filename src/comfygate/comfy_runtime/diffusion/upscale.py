"""Image upscale models (ESRGAN, RealESRGAN compact, SwinIR, ... anything spandrel knows), run in overlapping tiles.

Backs UpscaleModelLoader and ImageUpscaleWithModel. spandrel detects the architecture and its hyperparameters from
the state dict's keys and shapes; this module only reads the file safely, refuses what is not an image-to-image
model, and runs the model the way ComfyUI does: tiles of 512 pixels overlapping by 32, blended with a linear
feather, the tile halved and the whole image retried when the device runs out of memory.

Model files are never unpickled with arbitrary classes: ``.safetensors`` is read by safetensors, everything else by
``torch.load(weights_only=True)``.

Imported only when an upscale node runs, so torch and spandrel are imported at the top.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import ModelLoadError
from .weights import read_weights

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "MIN_TILE",
    "UpscaleModel",
    "load_upscale_model",
    "read_upscale_state_dict",
    "tile_starts",
]

DEFAULT_TILE = 512  # ComfyUI's ImageUpscaleWithModel tile side (input pixels)
DEFAULT_OVERLAP = 32  # ... and overlap between neighbouring tiles (input pixels)
MIN_TILE = 128  # out of memory with a tile smaller than this: give up, as ComfyUI does

_LUMA = (0.299, 0.587, 0.114)  # RGB -> grey for single-channel models (ITU-R BT.601)

ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles in all)


def read_upscale_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a model file into a flat ``{key: tensor}`` dict, without running any pickled code.

    Wrapped layouts (``params_ema``, ``state_dict``, a lone top-level key) are unwrapped and the ``module.`` prefix of
    DataParallel saves is stripped, so spandrel sees the keys the architecture defines.
    """
    from spandrel import canonicalize_state_dict

    loaded = read_weights(path, "upscale model file")
    state = canonicalize_state_dict(dict(loaded))
    if not isinstance(state, Mapping):
        raise ModelLoadError(f"upscale model file {path} holds no state dict")
    return _strip_module_prefix(dict(state))


def _strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Drop ``module.`` from the keys that have it (spandrel only strips it when every key has it)."""
    prefix = "module."
    if not any(isinstance(k, str) and k.startswith(prefix) for k in state):
        return state
    stripped = {(k[len(prefix) :] if isinstance(k, str) and k.startswith(prefix) else k): v for k, v in state.items()}
    return stripped if len(stripped) == len(state) else state  # a clash would lose tensors: leave the keys alone


def load_upscale_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    registry: Any = None,
) -> UpscaleModel:
    """Load an upscale model file into an :class:`UpscaleModel` on ``device`` (float32 unless ``dtype``).

    ``registry`` is a spandrel ``ArchRegistry`` (default: spandrel's main registry), for callers that add
    architectures of their own. Raises :class:`ModelLoadError` naming the file when spandrel does not recognise the
    state dict, cannot build the architecture it detected, or detects a model that is not image-to-image.
    """
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, ModelLoader, UnsupportedModelError

    path = Path(path)
    registry = MAIN_REGISTRY if registry is None else registry
    state = read_upscale_state_dict(path)
    if not any(isinstance(v, Tensor) for v in state.values()):
        raise ModelLoadError(f"upscale model file {path} holds no tensors")
    try:
        descriptor = ModelLoader(registry=registry).load_from_state_dict(state)
    except UnsupportedModelError:
        keys = ", ".join(sorted(str(k) for k in state)[:5])
        raise ModelLoadError(
            f"upscale model file {path} is not an architecture spandrel recognises ({len(state)} keys, first: {keys})"
        ) from None
    except Exception as exc:  # detected, but the shapes or keys do not fit the architecture's own loader
        arch = _detected_architecture(registry, state)
        raise ModelLoadError(
            f"upscale model file {path} looks like a {arch} model to spandrel, but it cannot be built from the "
            f"file: {type(exc).__name__}: {exc}"
        ) from exc

    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelLoadError(
            f"upscale model file {path} is a {descriptor.architecture.name} model ({descriptor.purpose}, "
            f"{type(descriptor).__name__}); an upscale model must take one image and return one image"
        )
    for what, channels in (("input", descriptor.input_channels), ("output", descriptor.output_channels)):
        if channels not in (1, 3):
            raise ModelLoadError(
                f"upscale model file {path} ({descriptor.architecture.name}) has {channels} {what} channels; "
                "only RGB (3) and greyscale (1) models can run on IMAGE values"
            )
    model = UpscaleModel(descriptor, path)
    model.to(device, dtype)
    return model


def _detected_architecture(registry: Any, state: Mapping[str, Any]) -> str:
    """Name of the first architecture whose detector accepts ``state`` (for error messages)."""
    try:
        for support in registry.architectures("detection"):
            if support.detect(state):
                return support.architecture.name
    except Exception:  # a detector tripping over odd values: the message just gets vaguer
        pass
    return "known"


def tile_starts(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, size) of the tiles along one axis, placed as ComfyUI's tiled_scale places them.

    One tile when the axis fits; otherwise tiles every ``tile - overlap`` pixels, the last ones cut at the edge.
    """
    if length <= tile:
        return [(0, length)]
    spans = []
    for start in range(0, length - overlap, tile - overlap):
        start = max(0, min(length - overlap, start))
        spans.append((start, min(tile, length - start)))
    return spans


def _feather(size: int, feather: int) -> Tensor:
    """1-D blend weights [size]: ramps of ``feather`` pixels up from both ends, like ComfyUI's tile mask."""
    if feather <= 0 or feather >= size:
        return torch.ones(size)
    idx = torch.arange(size, dtype=torch.float32)
    rising = ((idx + 1) / feather).clamp(max=1.0)
    falling = ((size - idx) / feather).clamp(max=1.0)
    return rising * falling


class UpscaleModel:
    """A loaded spandrel image-to-image model; what the UPSCALE_MODEL value points at (stored in the model pool)."""

    def __init__(self, descriptor: Any, path: str | Path) -> None:
        self.descriptor = descriptor  # spandrel ImageModelDescriptor
        self.path = Path(path)
        self.scale: int = int(descriptor.scale)
        self.architecture: str = descriptor.architecture.name
        self.input_channels: int = int(descriptor.input_channels)
        self.output_channels: int = int(descriptor.output_channels)
        module = descriptor.model
        self.size_bytes: int = sum(t.numel() * t.element_size() for t in chain(module.parameters(), module.buffers()))
        descriptor.eval()

    def __repr__(self) -> str:
        return f"UpscaleModel({self.architecture} x{self.scale}, {self.path.name})"

    @property
    def device(self) -> torch.device:
        return self.descriptor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.descriptor.dtype

    @property
    def size_requirements(self) -> Any:
        """spandrel's SizeRequirements (minimum side, multiple_of, square) for the model's input."""
        return self.descriptor.size_requirements

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> UpscaleModel:
        """Move (and optionally cast) the weights; half precision is refused for models spandrel marks unsafe."""
        from spandrel import UnsupportedDtypeError

        try:
            self.descriptor.to(torch.device(device), dtype)
        except UnsupportedDtypeError as exc:
            raise ValueError(f"upscale model {self.path.name}: {exc}") from None
        return self

    def fit_tile(self, tile: int) -> int:
        """Largest tile side <= ``tile`` that satisfies the model's size requirements (so full tiles need no pad)."""
        req = self.size_requirements
        multiple = max(1, int(req.multiple_of))
        fitted = (tile // multiple) * multiple
        return max(fitted, int(req.minimum), multiple)

    def upscale(
        self,
        image: Tensor,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        progress: ProgressCallback | None = None,
        on_oom: Callable[[], object] | None = None,
    ) -> Tensor:
        """Upscale IMAGE [B, H, W, 3] 0..1 -> [B, H*scale, W*scale, 3] float32 on the CPU, clamped to 0..1.

        Out of device memory, ``on_oom`` (e.g. the pool's free_idle) is called, the tile side halved and the image
        started again; below MIN_TILE the error is raised. ``progress(done, total)`` is called after each tile.
        """
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"upscale expects an IMAGE tensor [B, H, W, 3], got shape {list(image.shape)}")
        if tile < 1 or overlap < 0 or overlap >= tile:
            raise ValueError(f"upscale needs 0 <= overlap < tile, got tile={tile} overlap={overlap}")
        from spandrel import ModelTiling

        pixels = image.detach().to(torch.float32).movedim(-1, 1)  # [B, 3, H, W]
        if self.descriptor.tiling == ModelTiling.INTERNAL:  # the model needs the whole image at once
            tile = max(tile, pixels.shape[-2], pixels.shape[-1])
        while True:
            try:
                with torch.no_grad():  # not inference_mode: the result must be an ordinary tensor for later nodes
                    out = self._tiled(pixels, self.fit_tile(tile), overlap, progress)  # [B, 3, H*s, W*s]
                break
            except torch.OutOfMemoryError:
                if on_oom is not None:
                    on_oom()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                tile //= 2
                if tile < MIN_TILE:
                    raise
        return out.clamp_(0.0, 1.0).movedim(1, -1).contiguous()  # [B, H*s, W*s, 3]

    def _tiled(self, pixels: Tensor, tile: int, overlap: int, progress: ProgressCallback | None) -> Tensor:
        """Run every image of the batch tile by tile; blend overlapping tiles with feathered weights."""
        batch, _, height, width = pixels.shape
        s = self.scale
        rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
        total, done = batch * len(rows) * len(cols), 0
        out = torch.empty(batch, 3, height * s, width * s)  # [B, 3, H*s, W*s] float32 cpu
        feather = round(overlap * s)
        for b in range(batch):
            if len(rows) == 1 and len(cols) == 1:
                out[b : b + 1] = self._run(pixels[b : b + 1])
                done += 1
                if progress is not None:
                    progress(done, total)
                continue
            acc = torch.zeros(3, height * s, width * s)
            weight = torch.zeros(1, height * s, width * s)
            for y, h in rows:
                for x, w in cols:
                    result = self._run(pixels[b : b + 1, :, y : y + h, x : x + w])[0]  # [3, h*s, w*s]
                    mask = _feather(h * s, feather)[:, None] * _feather(w * s, feather)[None, :]  # [h*s, w*s]
                    acc[:, y * s : (y + h) * s, x * s : (x + w) * s] += result * mask
                    weight[:, y * s : (y + h) * s, x * s : (x + w) * s] += mask
                    done += 1
                    if progress is not None:
                        progress(done, total)
            out[b] = acc / weight
        return out

    def _run(self, tile: Tensor) -> Tensor:
        """One tile [1, 3, h, w] (CPU float32) -> [1, 3, h*s, w*s] CPU float32, through the model's channels."""
        x = tile
        if self.input_channels == 1:
            luma = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * luma).sum(dim=1, keepdim=True)  # [1, 1, h, w]
        y = self._forward(x.to(device=self.device, dtype=self.dtype))
        y = y.to(device="cpu", dtype=torch.float32)
        if y.shape[1] == 1:
            y = y.expand(-1, 3, -1, -1)
        expected = (tile.shape[0], 3, tile.shape[2] * self.scale, tile.shape[3] * self.scale)
        if tuple(y.shape) != expected:
            raise ValueError(
                f"upscale model {self.path.name} ({self.architecture}) returned shape {list(y.shape)} for a tile of "
                f"{list(tile.shape)}; expected {list(expected)}"
            )
        return y

    def _forward(self, x: Tensor) -> Tensor:
        """The model itself on one device tile; spandrel pads to the size requirements and clamps to 0..1."""
        return self.descriptor(x)
