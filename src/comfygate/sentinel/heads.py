"""Scores read off CLIP image embeddings by small linear heads: aesthetic (≈1..10) and NSFW (probability).

A head file uses the layout of LAION's improved aesthetic predictor: a state dict whose keys are
``layers.<i>.weight`` / ``layers.<i>.bias`` for the Linear layers of an ``nn.Sequential``. The Linear layers
are applied in index order with nothing between them (the other indices held dropouts, which do nothing at
inference), to the L2-normalised CLIP image embedding. An NSFW head has the same layout and ends in a logit,
turned into a probability with a sigmoid.

Files are ``.safetensors`` or ``.pt``/``.pth`` read with ``torch.load(weights_only=True)``, which refuses
pickles that would run code. torch is imported inside functions, never at import time.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .clip import ModelCache
from .errors import ScorerUnavailable

__all__ = ["HEAD_KINDS", "EmbeddingHead"]

HEAD_KINDS = ("aesthetic", "nsfw")
_SAFETENSORS_SUFFIXES = (".safetensors",)
_PICKLE_SUFFIXES = (".pt", ".pth")
_LAYER_KEY = re.compile(r"layers\.(\d+)\.(weight|bias)")


@dataclass
class _Layers:
    """The Linear layers of a head, in the order they apply, as float32 tensors on the head's device."""

    weights: list[Any]  # [out, in] each
    biases: list[Any]  # [out] each (zeros for a layer saved without bias)
    size_bytes: int  # for a model cache's budget

    @property
    def input_dim(self) -> int:
        return int(self.weights[0].shape[1])


class EmbeddingHead:
    """A linear head over CLIP image embeddings, loaded from a file in the LAION aesthetic-predictor layout.

    Build one with ``from_file``, which reads and checks the file at once (a broken file is an operator's
    error to see at start, not at the first image). ``kind`` is ``"aesthetic"`` (the raw output, ≈1..10 for
    LAION's predictor) or ``"nsfw"`` (sigmoid of the output: a probability). With a ``cache`` (the worker's
    model pool) the weights live there under ``cache_key`` and are read again from the file after an eviction.
    """

    def __init__(self, path: Path, kind: str, device: str, cache: ModelCache | None, layers: _Layers) -> None:
        """Use ``from_file``: ``layers`` are what it read from ``path``."""
        self.path = path
        self.kind = kind
        self.device = device
        self.cache = cache
        self.input_dim = layers.input_dim
        self._layers = layers if cache is None else None  # held here only without a cache

    @classmethod
    def from_file(
        cls, path: Path | str, *, kind: str, device: str = "cpu", cache: ModelCache | None = None
    ) -> EmbeddingHead:
        """Read and check the head in ``path``; ``ScorerUnavailable`` naming the file when it cannot be used."""
        if kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
        path = Path(path).expanduser().absolute()
        if cache is None:
            layers = _read_layers(path, kind, device)
        else:
            with cache.use(_cache_key(path, kind, device), lambda: _read_layers(path, kind, device),
                           _file_size(path)) as layers:
                pass
        return cls(path, kind, device, cache, layers)

    def __repr__(self) -> str:
        return f"EmbeddingHead({str(self.path)!r}, kind={self.kind!r}, input_dim={self.input_dim})"

    @property
    def cache_key(self) -> tuple[str, ...]:
        return _cache_key(self.path, self.kind, self.device)

    def check_input_dim(self, clip_dim: int) -> None:
        """Raise ``ScorerUnavailable`` unless this head reads embeddings ``clip_dim`` wide."""
        if clip_dim != self.input_dim:
            raise ScorerUnavailable(
                f"{self.kind} head {str(self.path)!r} takes {self.input_dim}-wide embeddings, but the CLIP "
                f"model gives {clip_dim}-wide ones: the head was trained for another CLIP model"
            )

    def load(self) -> None:
        """Make sure the weights are resident (into the cache again after an eviction); cheap otherwise."""
        with self._use():
            pass

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """One score per row of ``embeddings`` (``[N, input_dim]``, L2-normalised): float64 ``[N]``."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be [N, {self.input_dim}], got shape {embeddings.shape}")
        self.check_input_dim(embeddings.shape[1])
        if len(embeddings) == 0:
            return np.zeros(0, dtype=np.float64)
        import torch

        with self._use() as layers, torch.inference_mode():
            values = torch.from_numpy(np.ascontiguousarray(embeddings)).to(self.device)  # [N, D]
            for weight, bias in zip(layers.weights, layers.biases, strict=True):
                values = values @ weight.T + bias  # [N, out]
            values = values[:, 0]  # [N]: the last layer has one output
            if self.kind == "nsfw":
                values = torch.sigmoid(values)
            return values.cpu().numpy().astype(np.float64)

    @contextlib.contextmanager
    def _use(self) -> Iterator[_Layers]:
        if self._layers is not None:
            yield self._layers
            return
        with self.cache.use(self.cache_key, lambda: _read_layers(self.path, self.kind, self.device),
                            _file_size(self.path)) as layers:
            yield layers


def _cache_key(path: Path, kind: str, device: str) -> tuple[str, ...]:
    return ("embedding-head", kind, str(path), str(device))


def _file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def _read_layers(path: Path, kind: str, device: str) -> _Layers:
    """The head's Linear layers from ``path``, checked: keys, shapes, the chain of widths, one output."""
    state = _read_state_dict(path, kind)
    what = f"{kind} head {str(path)!r}"
    parts: dict[int, dict[str, Any]] = {}
    unexpected = []
    for key, tensor in state.items():
        match = _LAYER_KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            unexpected.append(str(key))
            continue
        parts.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
    if unexpected or not parts:
        found = ", ".join(sorted(unexpected)[:5]) if unexpected else "no tensors"
        raise ScorerUnavailable(
            f"{what} is not in the LAION aesthetic-predictor layout (layers.<i>.weight / layers.<i>.bias); "
            f"found {found}"
        )

    import torch

    weights, biases = [], []
    width: int | None = None  # outputs of the previous layer
    for index in sorted(parts):
        weight, bias = parts[index].get("weight"), parts[index].get("bias")
        name = f"layers.{index}"
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or not weight.is_floating_point():
            raise ScorerUnavailable(f"{what}: {name}.weight must be a 2-D float tensor [out, in]; got "
                                    f"{_describe(weight)}")
        out_dim, in_dim = weight.shape
        if width is not None and in_dim != width:
            raise ScorerUnavailable(f"{what}: {name}.weight takes {in_dim} inputs, but the layer before it "
                                    f"gives {width}")
        if bias is None:
            bias = torch.zeros(out_dim)
        elif not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (out_dim,) or not bias.is_floating_point():
            raise ScorerUnavailable(f"{what}: {name}.bias must be a float tensor [{out_dim}]; got {_describe(bias)}")
        weights.append(weight.to(device=device, dtype=torch.float32))
        biases.append(bias.to(device=device, dtype=torch.float32))
        width = out_dim
    if width != 1:
        raise ScorerUnavailable(f"{what}: its last layer (layers.{max(parts)}) gives {width} outputs; "
                                "a head must give one score")
    size = sum(t.numel() * t.element_size() for t in (*weights, *biases))
    return _Layers(weights, biases, size)


def _read_state_dict(path: Path, kind: str) -> dict[Any, Any]:
    what = f"{kind} head file {str(path)!r}"
    if not path.is_file():
        raise ScorerUnavailable(f"{what} does not exist (nothing is downloaded)")
    suffix = path.suffix.lower()
    if suffix in _SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ScorerUnavailable(f"cannot read {what}: not a readable .safetensors file ({exc})") from exc
    elif suffix in _PICKLE_SUFFIXES:
        import torch

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # Also what weights_only raises for a pickle that holds more than tensors (it would run code).
            raise ScorerUnavailable(
                f"cannot read {what}: not a weights-only torch checkpoint ({str(exc).splitlines()[0]})"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise ScorerUnavailable(f"cannot read {what}: not a readable torch checkpoint ({exc})") from exc
    else:
        raise ScorerUnavailable(
            f"cannot read {what}: unknown file type {suffix or '(no extension)'}; expected one of "
            f"{', '.join(_SAFETENSORS_SUFFIXES + _PICKLE_SUFFIXES)}"
        )
    if not isinstance(state, dict):
        raise ScorerUnavailable(f"{what} holds a {type(state).__name__}, not a state dict")
    return state


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return f"shape {tuple(shape)} {dtype}" if shape is not None else type(value).__name__
