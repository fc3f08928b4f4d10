"""The weight change each LoRA family makes, computed in float32 (formulas as in ComfyUI's weight_adapter).

Every adapter knows the shape of the change it makes (so a file for another architecture is refused before
anything is patched) and applies itself to a float32 copy of the weight::

    LoRA / LoCon   W += s * alpha/rank * up @ down        up [out, r(,1,1)], down [r, in(,kh,kw)]
                   with lora_mid [r, r, kh, kw]: up @ (mid * down) as a kh x kw convolution ("tucker" LoCon)
    LoHa           W += s * alpha/rank * (w1_a @ w1_b) * (w2_a @ w2_b)          (element-wise product)
    LoKr           W += s * alpha/rank * kron(w1, w2)   (w1 / w2 stored whole or as a @ b)
    diff           W += s * diff                         (full weight or bias difference)
    DoRA           any of the above with dora_scale: the changed weight is renormalised per input channel

rank is the inner dimension of the factorisation; without an ``alpha`` key the scale is 1 (ComfyUI's rule).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

__all__ = ["Adapter", "DiffAdapter", "LohaAdapter", "LokrAdapter", "LoraAdapter"]


def _f32(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.to(device=device, dtype=torch.float32)


def _tucker(t: torch.Tensor, b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Rebuild [out, in, kh, kw] from a core t [r, r, kh, kw], b [r, in] and a [r, out] (LyCORIS CP layout)."""
    return torch.einsum("i j k l, j r, i p -> p r k l", t, b, a)


@dataclass(eq=False)
class Adapter(ABC):
    """One weight's change. Subclasses give ``shape`` (of the change) and ``_delta`` (alpha-scaled, float32)."""

    alpha: float | None
    dora_scale: torch.Tensor | None

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]: ...

    @abstractmethod
    def _delta(self, device: torch.device) -> torch.Tensor: ...

    def _rank(self) -> int | None:
        return None

    def scale(self) -> float:
        rank = self._rank()
        return self.alpha / rank if self.alpha is not None and rank else 1.0

    def fits(self, weight_shape: tuple[int, ...]) -> bool:
        """Whether the change can be laid onto a weight of this shape (same rows, same flattened columns)."""
        shape = self.shape
        if math.prod(shape) != math.prod(weight_shape) or shape[0] != weight_shape[0]:
            return False
        # A 4-D change onto a 4-D weight must agree on the kernel too, not only on the element count.
        return not (len(shape) == 4 and len(weight_shape) == 4 and shape != tuple(weight_shape))

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """``weight`` (float32) with this change at ``strength``; may modify and return ``weight`` itself."""
        delta = self._delta(weight.device).reshape(weight.shape)
        if self.dora_scale is None:
            return weight.add_(delta, alpha=strength * self.scale())
        return _dora(weight, delta * self.scale(), _f32(self.dora_scale, weight.device), strength)


def _dora(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor, strength: float) -> torch.Tensor:
    """DoRA: scale the changed weight so each input channel's norm is the trained magnitude (ComfyUI's rule)."""
    changed = weight + delta
    # norm over every dim except 1 (input channels): [1, in, 1, ...]
    norm = changed.transpose(0, 1).reshape(changed.shape[1], -1).norm(dim=1, keepdim=True)
    norm = norm.reshape(changed.shape[1], *[1] * (changed.dim() - 1)).transpose(0, 1)
    changed = changed * (dora_scale / norm)
    return weight.add_(changed - weight, alpha=strength)


@dataclass(eq=False)
class LoraAdapter(Adapter):
    """Classic LoRA and LoCon: up [out, r, (1, 1)], down [r, in, (kh, kw)], optional mid [r, r, kh, kw]."""

    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None

    def _rank(self) -> int:
        return self.down.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        if self.mid is not None:
            return (self.up.shape[0], self.down.shape[1], *self.mid.shape[2:])
        out = self.up.shape[0]
        if self.down.dim() == 4:
            return (out, *self.down.shape[1:])
        return (out, math.prod(self.down.shape[1:]))

    def _delta(self, device: torch.device) -> torch.Tensor:
        up = _f32(self.up, device).flatten(1)  # [out, r]
        down = _f32(self.down, device)
        if self.mid is None:
            return up @ down.flatten(1)  # [out, in * kh * kw]
        # [out, r] . [r, r2, kh, kw] . [r2, in] -> [out, in, kh, kw]
        return torch.einsum("o a, a b h w, b i -> o i h w", up, _f32(self.mid, device), down.flatten(1))


@dataclass(eq=False)
class LohaAdapter(Adapter):
    """LoHa: the Hadamard product of two low-rank products; t1 / t2 are optional CP cores for convolutions."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    def _rank(self) -> int:
        return self.w1_b.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        if self.t1 is not None:
            return (self.w1_a.shape[1], self.w1_b.shape[1], *self.t1.shape[2:])
        return (self.w1_a.shape[0], self.w1_b.shape[1])

    def _delta(self, device: torch.device) -> torch.Tensor:
        f = [_f32(t, device) for t in (self.w1_a, self.w1_b, self.w2_a, self.w2_b)]
        if self.t1 is not None and self.t2 is not None:
            m1 = _tucker(_f32(self.t1, device), f[1], f[0])
            m2 = _tucker(_f32(self.t2, device), f[3], f[2])
        else:
            m1, m2 = f[0] @ f[1], f[2] @ f[3]
        return m1 * m2


@dataclass(eq=False)
class LokrAdapter(Adapter):
    """LoKr: kron(w1, w2); each factor stored whole (w1 / w2) or as a low-rank product (w*_a @ w*_b, CP t2)."""

    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    def _rank(self) -> int | None:
        # ComfyUI scales by the rank of the last factorised factor; an unfactorised LoKr is not scaled.
        if self.w2 is None and self.w2_b is not None:
            return self.w2_b.shape[0]
        if self.w1 is None and self.w1_b is not None:
            return self.w1_b.shape[0]
        return None

    def _factors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        def get(t: torch.Tensor | None) -> torch.Tensor:
            assert t is not None  # load_lora checked that each factor is whole or has both halves
            return _f32(t, device)

        w1 = get(self.w1) if self.w1 is not None else get(self.w1_a) @ get(self.w1_b)
        if self.w2 is not None:
            w2 = get(self.w2)
        elif self.t2 is not None:
            w2 = _tucker(get(self.t2), get(self.w2_b), get(self.w2_a))
        else:
            w2 = get(self.w2_a) @ get(self.w2_b)
        while w1.dim() < w2.dim():
            w1 = w1.unsqueeze(-1)
        return w1, w2

    @property
    def shape(self) -> tuple[int, ...]:
        w1, w2 = self._factors(torch.device("meta"))
        return tuple(a * b for a, b in zip(w1.shape, w2.shape, strict=True))

    def _delta(self, device: torch.device) -> torch.Tensor:
        w1, w2 = self._factors(device)
        return torch.kron(w1.contiguous(), w2.contiguous())


@dataclass(eq=False)
class DiffAdapter(Adapter):
    """A stored full difference for a weight or bias (no factorisation, no alpha)."""

    diff: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.diff.shape)

    def fits(self, weight_shape: tuple[int, ...]) -> bool:
        return tuple(self.diff.shape) == tuple(weight_shape)

    def _delta(self, device: torch.device) -> torch.Tensor:
        return _f32(self.diff, device)

    def scale(self) -> float:
        return 1.0
