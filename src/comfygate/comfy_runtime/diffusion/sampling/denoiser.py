"""Classifier-free guidance over ComfyUI CONDITIONING lists (ComfyUI's ``calc_cond_batch`` + ``cfg_function``).

A CONDITIONING value is a list of ``[cond [1, T, D], options]``. Each entry is run through the network on its
area of the latent (``options["area"] = (h, w, y, x)`` in latent units, or the whole latent); the outputs of
all entries of one side are averaged, weighted by ``strength`` times the entry's mask (or, for a plain area,
a weight that ramps up over the area's inner 8 latent pixels so area borders blend). Where no entry of a side
covers the latent, that side's prediction is 0, as in ComfyUI. The guided prediction is
``uncond + (cond - uncond) * cfg``; with cfg == 1 the negative side is not evaluated at all.

Entries with the same area, token count and extra-input shapes are batched into one network call (positive
and negative of a plain txt2img run go through the UNet together); others run separately, which is
equivalent to ComfyUI's repeat-to-common-length batching because repeated tokens do not change attention.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .schedules import ModelSampling

__all__ = ["CFGDenoiser", "PreparedCond", "prepare_conditioning", "repeat_to_batch"]

Area = tuple[int, int, int, int]  # (h, w, y, x) in latent units


@dataclasses.dataclass(frozen=True)
class PreparedCond:
    """One conditioning entry, resolved against the latent being sampled."""

    context: torch.Tensor  # [1, T, D] on the sampling device
    extra: dict[str, Any]  # extra network inputs from model.extra_conds (SDXL: pooled text + size ids)
    area: Area | None  # clamped to the latent; None = whole latent
    strength: float
    mask: torch.Tensor | None  # [Bm, h, w] at latent size, already times mask_strength
    sigma_start: float | None  # entry is skipped while sigma > sigma_start
    sigma_end: float | None  # entry is skipped while sigma < sigma_end


def repeat_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """``t`` with its first dim cut or tiled to ``batch`` (ComfyUI's repeat_to_batch_size)."""
    if t.shape[0] > batch:
        return t[:batch]
    if t.shape[0] < batch:
        reps = math.ceil(batch / t.shape[0])
        return t.repeat((reps,) + (1,) * (t.ndim - 1))[:batch]
    return t


def _resolve_area(raw: Any, latent_hw: tuple[int, int], what: str) -> Area:
    h_lat, w_lat = latent_hw
    if isinstance(raw, (list, tuple)) and len(raw) == 5 and raw[0] == "percentage":
        _, h, w, y, x = raw
        return (max(1, round(h * h_lat)), max(1, round(w * w_lat)), round(y * h_lat), round(x * w_lat))
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        raise ValueError(f"{what}: 'area' must be (height, width, y, x) in latent units, got {raw!r}")
    try:
        return tuple(int(v) for v in raw)  # type: ignore[return-value]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: 'area' values must be integers, got {raw!r}") from exc


def _resolve_mask(raw: Any, latent_hw: tuple[int, int], what: str) -> torch.Tensor:
    if not isinstance(raw, torch.Tensor) or raw.ndim not in (2, 3, 4) or (raw.ndim == 4 and raw.shape[1] != 1):
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise ValueError(f"{what}: 'mask' must be a [H, W] or [B, H, W] tensor, got {shape}")
    mask = raw.float()
    mask = mask.reshape(-1, *mask.shape[-2:])  # [B, H, W]
    if tuple(mask.shape[-2:]) != latent_hw:
        mask = F.interpolate(mask.unsqueeze(1), size=latent_hw, mode="bilinear").squeeze(1)
    return mask


def _mask_bounds(mask: torch.Tensor) -> Area:
    """Bounding box (min size 8) of the non-zero part of a mask, as ComfyUI's set_area_to_bounds does."""
    bounds = mask.abs().amax(dim=0)
    ys, xs = torch.where(bounds != 0)
    if ys.numel() == 0:
        return (8, 8, 0, 0)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    return (max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0)


def prepare_conditioning(
    conditioning: Any,
    what: str,
    model: Any,
    model_sampling: ModelSampling,
    latent_hw: tuple[int, int],
    device: torch.device,
) -> list[PreparedCond]:
    """Validate a CONDITIONING list and resolve areas, masks, timestep ranges and the model's extra inputs."""
    if not isinstance(conditioning, (list, tuple)):
        kind = type(conditioning).__name__
        raise ValueError(f"{what} conditioning must be a list of [cond, options] pairs, got {kind}")
    extra_conds = getattr(model, "extra_conds", None)
    prepared: list[PreparedCond] = []
    for i, item in enumerate(conditioning):
        label = f"{what} conditioning entry {i}"
        if not isinstance(item, (list, tuple)) or len(item) < 2 or not isinstance(item[1], dict):
            raise ValueError(f"{label} must be a [cond tensor, options dict] pair")
        context, options = item[0], item[1]
        if not isinstance(context, torch.Tensor) or context.ndim not in (2, 3):
            shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(f"{label}: cond must be a [1, tokens, dim] tensor, got {shape}")
        if context.ndim == 2:
            context = context.unsqueeze(0)
        area = _resolve_area(options["area"], latent_hw, label) if "area" in options else None
        mask = None
        if options.get("mask") is not None:
            mask = _resolve_mask(options["mask"], latent_hw, label)
            if options.get("set_area_to_bounds", False):
                area = _mask_bounds(mask)
            mask = mask * float(options.get("mask_strength", 1.0))
        sigma_start = sigma_end = None
        if "start_percent" in options:
            sigma_start = model_sampling.percent_to_sigma(float(options["start_percent"]))
        if "end_percent" in options:
            sigma_end = model_sampling.percent_to_sigma(float(options["end_percent"]))
        # The side matters: the SDXL refiner's default aesthetic score differs between positive and negative.
        extra = dict(extra_conds(options, latent_hw, prompt_type=what)) if callable(extra_conds) else {}
        extra = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in extra.items()}
        prepared.append(
            PreparedCond(
                context=context.to(device),
                extra=extra,
                area=area,
                strength=float(options.get("strength", 1.0)),
                mask=None if mask is None else mask.to(device),
                sigma_start=sigma_start,
                sigma_end=sigma_end,
            )
        )
    return prepared


def _area_inside(inner: Area, outer: Area) -> bool:
    return (
        inner[2] >= outer[2]
        and inner[3] >= outer[3]
        and inner[0] + inner[2] <= outer[0] + outer[2]
        and inner[1] + inner[3] <= outer[1] + outer[3]
    )


def _add_matching_areas(conds: list[PreparedCond], other: PreparedCond) -> None:
    """Give ``conds`` an entry on ``other``'s area (ComfyUI's create_cond_with_same_area_if_none).

    Without it an area-limited positive prompt would be guided against a negative averaged over the whole
    image; the copy takes ``other``'s area/strength/mask and the text of the smallest entry that covers it.
    """
    if other.area is None:
        return
    smallest: PreparedCond | None = None
    for c in conds:
        if c.area is not None:
            if _area_inside(other.area, c.area) and (
                smallest is None or smallest.area is None or smallest.area[0] * smallest.area[1] > c.area[0] * c.area[1]
            ):
                smallest = c
        elif smallest is None:
            smallest = c
    if smallest is None or (smallest.area is not None and smallest.area == other.area):
        return
    conds.append(dataclasses.replace(other, context=smallest.context, extra=smallest.extra))


class CFGDenoiser:
    """``denoiser(x [B,C,h,w], sigma [B]) -> guided x0 estimate`` for the samplers.

    ``model(x_in, timestep, context, **extra)`` returns the raw eps / v prediction; ``model_sampling``
    converts it to x0 and maps sigma to the model's input scale and timestep.
    """

    def __init__(
        self,
        model: Any,
        model_sampling: ModelSampling,
        positive: Any,
        negative: Any,
        cfg: float,
        latent_shape: Sequence[int],
        device: torch.device,
    ) -> None:
        self.model = model
        self.model_sampling = model_sampling
        self.cfg = float(cfg)
        self.batch = int(latent_shape[0])
        hw = (int(latent_shape[2]), int(latent_shape[3]))
        self.positive = prepare_conditioning(positive, "positive", model, model_sampling, hw, device)
        self.negative = prepare_conditioning(negative, "negative", model, model_sampling, hw, device)
        for c in list(self.positive):
            _add_matching_areas(self.negative, c)
        for c in list(self.negative):
            _add_matching_areas(self.positive, c)
        self._mults: dict[tuple[int, tuple[int, ...]], tuple[Area | None, torch.Tensor]] = {}

    def _area_and_mult(self, cond: PreparedCond, x: torch.Tensor) -> tuple[Area | None, torch.Tensor]:
        """Clamped area and the [B, C, h, w] weight of ``cond``'s prediction (cached per latent shape)."""
        key = (id(cond), tuple(x.shape))
        if key in self._mults:
            return self._mults[key]
        full_h, full_w = x.shape[2], x.shape[3]
        area = cond.area
        if area is not None:
            h, w, y, x0 = area
            area = (min(full_h - y, h), min(full_w - x0, w), y, x0)
        h, w, y, x0 = area if area is not None else (full_h, full_w, 0, 0)
        if cond.mask is not None:
            mask = repeat_to_batch(cond.mask, x.shape[0])[:, y : y + h, x0 : x0 + w]
            mult = mask.unsqueeze(1).expand(-1, x.shape[1], -1, -1).to(x.dtype) * cond.strength
        else:
            mult = torch.full((x.shape[0], x.shape[1], max(h, 0), max(w, 0)), cond.strength, device=x.device)
            if area is not None and h > 0 and w > 0:
                mult = mult.clone()
                for dim, size, offset, full in ((2, h, y, full_h), (3, w, x0, full_w)):
                    ramp = min(8, size // 4)
                    for t in range(ramp):  # fade the weight in over the inner border of a partial area
                        if offset != 0:
                            mult.narrow(dim, t, 1).mul_((t + 1) / ramp)
                        if size + offset < full:
                            mult.narrow(dim, size - 1 - t, 1).mul_((t + 1) / ramp)
        result = ((h, w, y, x0) if area is not None else None, mult.contiguous())
        self._mults[key] = result
        return result

    def _run_model(self, x_in: torch.Tensor, sigma: torch.Tensor, conds: list[PreparedCond]) -> torch.Tensor:
        """x0 predictions [n*B, C, h, w] of ``conds`` (same shapes) on the crops ``x_in`` [n*B, C, h, w]."""
        b = self.batch
        context = torch.cat([repeat_to_batch(c.context, b) for c in conds])
        extra: dict[str, Any] = {}
        for k, v in conds[0].extra.items():
            if isinstance(v, torch.Tensor):
                extra[k] = torch.cat([repeat_to_batch(c.extra[k], b) for c in conds])
            else:
                extra[k] = v
        ms = self.model_sampling
        out = self.model(ms.calculate_input(sigma, x_in), ms.timestep(sigma), context, **extra)
        return ms.calculate_denoised(sigma, out.float(), x_in)

    @staticmethod
    def _batch_key(cond: PreparedCond, area: Area | None) -> tuple:
        extra_sig = tuple(
            (k, tuple(v.shape) if isinstance(v, torch.Tensor) else repr(v)) for k, v in sorted(cond.extra.items())
        )
        return (area, tuple(cond.context.shape[1:]), extra_sig)

    def _calc(self, sides: list[list[PreparedCond] | None], x: torch.Tensor, sigma: torch.Tensor) -> list[torch.Tensor]:
        outs = [torch.zeros_like(x) for _ in sides]
        counts = [torch.full_like(x, 1e-37) for _ in sides]
        s0 = float(sigma.reshape(-1)[0])
        groups: dict[tuple, list[tuple[int, PreparedCond, Area | None, torch.Tensor]]] = {}
        for side_index, conds in enumerate(sides):
            for cond in conds or ():
                if cond.sigma_start is not None and s0 > cond.sigma_start:
                    continue
                if cond.sigma_end is not None and s0 < cond.sigma_end:
                    continue
                area, mult = self._area_and_mult(cond, x)
                if mult.numel() == 0:
                    continue
                groups.setdefault(self._batch_key(cond, area), []).append((side_index, cond, area, mult))
        for members in groups.values():
            area = members[0][2]
            crop = x if area is None else x[:, :, area[2] : area[2] + area[0], area[3] : area[3] + area[1]]
            n = len(members)
            preds = self._run_model(torch.cat([crop] * n), torch.cat([sigma] * n), [m[1] for m in members]).chunk(n)
            for (side_index, _, _, mult), pred in zip(members, preds, strict=True):
                out, cnt = outs[side_index], counts[side_index]
                if area is not None:
                    h, w, y, x0 = area
                    out, cnt = out[:, :, y : y + h, x0 : x0 + w], cnt[:, :, y : y + h, x0 : x0 + w]
                out += pred * mult
                cnt += mult
        return [o / c for o, c in zip(outs, counts, strict=True)]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if math.isclose(self.cfg, 1.0):
            return self._calc([self.positive], x, sigma)[0]
        cond, uncond = self._calc([self.positive, self.negative], x, sigma)
        return uncond + (cond - uncond) * self.cfg
