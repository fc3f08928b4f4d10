"""Tiny embedding-head files in the LAION aesthetic-predictor layout, for tests of aesthetic and NSFW scoring.

LAION's predictor is an ``nn.Sequential`` of Linear layers with Dropouts between them, saved as a state dict:
``layers.0.weight``, ``layers.0.bias``, ``layers.2.weight``, ... (the Dropouts at odd indices hold no tensors).
``save_head`` writes such a file from a list of (weight ``[out, in]``, bias ``[out]``) pairs; the suffix picks
the format (``.pth``/``.pt``: ``torch.save``; ``.safetensors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["constant_head", "direction_head", "head_output", "random_layers", "save_head", "save_state_dict"]

Layer = tuple[np.ndarray, np.ndarray]  # (weight [out, in], bias [out])


def random_layers(input_dim: int, hidden: Sequence[int] = (16, 8), seed: int = 0) -> list[Layer]:
    """Random Linear layers input_dim -> *hidden -> 1 (like LAION's 768 -> 1024 -> 128 -> 64 -> 16 -> 1)."""
    rng = np.random.default_rng(seed)
    widths = [input_dim, *hidden, 1]
    return [
        (rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_out, fan_in)).astype(np.float32),
         rng.normal(0.0, 0.1, fan_out).astype(np.float32))
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True)
    ]


def constant_head(path: Path, input_dim: int, value: float) -> Path:
    """A head that outputs ``value`` for every embedding (zero weights, last bias ``value``)."""
    layers = [(np.zeros((4, input_dim), np.float32), np.zeros(4, np.float32)),
              (np.zeros((1, 4), np.float32), np.array([value], np.float32))]
    return save_head(path, layers)


def direction_head(path: Path, direction: np.ndarray, scale: float, offset: float) -> Path:
    """One Linear layer: ``scale * (embedding · direction) + offset``, high for embeddings near ``direction``."""
    weight = (scale * np.asarray(direction, np.float32)).reshape(1, -1)
    return save_head(path, [(weight, np.array([offset], np.float32))])


def head_output(layers: Sequence[Layer], embeddings: np.ndarray) -> np.ndarray:
    """What the head computes, in numpy: the Linear layers applied in order, nothing between them."""
    values = np.asarray(embeddings, np.float64)
    for weight, bias in layers:
        values = values @ weight.T.astype(np.float64) + bias
    return values[:, 0]


def save_head(path: Path, layers: Sequence[Layer]) -> Path:
    """Write ``layers`` as a LAION-layout state dict (Linear layers at indices 0, 2, 4, ...)."""
    import torch

    state = {}
    for position, (weight, bias) in enumerate(layers):
        state[f"layers.{2 * position}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        state[f"layers.{2 * position}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return save_state_dict(path, state)


def save_state_dict(path: Path, state: dict) -> Path:
    """Write ``state`` as ``.safetensors`` or with ``torch.save``, by the suffix of ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        import torch

        torch.save(state, path)
    return path
