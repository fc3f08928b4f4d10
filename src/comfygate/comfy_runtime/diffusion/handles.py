"""MODEL, CLIP, VAE and UPSCALE_MODEL values: small handles onto pool entries, never the weights themselves.

The executor's node cache keeps loader outputs across runs. If those outputs held the models, the pool could
never free memory; a handle holds the pool key and the loader instead, and :meth:`PoolRef.use` finds the model
again (loading it anew after an eviction, which the run's load timer counts). Per-run changes — LoRA patches,
CLIP's last layer — live on the handle, so two runs sharing one base model do not see each other's changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import ModelPool

__all__ = ["ClipHandle", "ModelHandle", "PoolRef", "VaeHandle"]


@dataclass(frozen=True, eq=False)
class PoolRef:
    """A pool entry that can be loaded again: the pool, its key and its loader."""

    pool: ModelPool
    key: tuple[str, ...]
    load: Callable[[], Any]
    size_hint: int | None = None  # bytes expected before the first load (the file's size), so room is made first

    def use(self) -> Any:
        """Context manager yielding the loaded object, pinned in the pool while the block runs."""
        return self.pool.use(self.key, self.load, size_hint=self.size_hint)

    def ensure_loaded(self) -> None:
        with self.use():
            pass


@dataclass(frozen=True, eq=False)
class _PartHandle:
    ref: PoolRef
    part: str | None  # attribute of the pool entry ("unet" of a checkpoint) or None for a standalone file

    @contextmanager
    def _entry_part(self) -> Iterator[Any]:
        with self.ref.use() as entry:
            yield getattr(entry, self.part) if self.part else entry


@dataclass(frozen=True, eq=False)
class _Patchable(_PartHandle):
    loras: tuple[tuple[PoolRef, float], ...] = ()  # LoRA files and their strengths, applied in order

    def with_lora(self, lora: PoolRef, strength: float) -> Any:
        if strength == 0:
            return self  # ComfyUI's LoraLoader skips a zero strength too
        return dataclasses.replace(self, loras=(*self.loras, (lora, strength)))

    def check_loras(self) -> None:
        """Match every LoRA against the model now (ModelLoadError for a LoRA made for another architecture)."""
        with ExitStack() as stack:
            model = stack.enter_context(self._entry_part())
            for ref, _strength in self.loras:
                stack.enter_context(ref.use()).patches_for(model)

    @contextmanager
    def use(self) -> Iterator[Any]:
        """The model with this handle's LoRAs applied for the duration of the block (and only then)."""
        from .lora import apply_loras

        with ExitStack() as stack:
            model = stack.enter_context(self._entry_part())
            files = [(stack.enter_context(ref.use()), strength) for ref, strength in self.loras]
            # Entered even without LoRAs: it waits while another run has the shared weights patched.
            stack.enter_context(apply_loras(model, files))
            yield model


@dataclass(frozen=True, eq=False)
class ModelHandle(_Patchable):
    """MODEL: a diffusion model (diffusion.unet.DiffusionModel) plus per-run LoRA patches."""


@dataclass(frozen=True, eq=False)
class ClipHandle(_Patchable):
    """CLIP: text encoders (diffusion.text_encoders.TextEncoder), the layer to stop at, LoRA patches."""

    stop_at_layer: int | None = None  # None: the model's own default (SD2 and SDXL use the penultimate layer)

    def stopping_at(self, layer: int) -> ClipHandle:
        return dataclasses.replace(self, stop_at_layer=layer)

    def encode(self, text: str) -> tuple[Any, Any]:
        with self.use() as encoder:
            return encoder.encode(text, clip_skip=self.stop_at_layer)


@dataclass(frozen=True, eq=False)
class VaeHandle(_PartHandle):
    """VAE: a diffusion.vae.Vae in the pool."""

    def use(self) -> Any:
        return self._entry_part()
