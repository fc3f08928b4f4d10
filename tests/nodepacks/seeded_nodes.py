"""A test node pack in ComfyUI's format: a frame that depends on its seed, for the gate loop's retries.

``SeededFrame(seed, width, height, blank_below)`` draws a flat grey frame (the gate rejects it as blank, a
fault a new seed can fix) when ``seed < blank_below``, else a structured picture: a diagonal gradient with a
bar, whose contrast varies with the seed (so best_of has something to rank). ``SeededFaultyFrame`` gives NaN
pixels whatever the seed: a precision fault a new seed cannot fix. ``SeededFlakyFrame`` is blank for small seeds
and fails to run for the others.
"""

from __future__ import annotations

import torch

SEED_MAX = 2**32 - 1


def _seed_inputs() -> dict:
    return {
        "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
        "width": ("INT", {"default": 64, "min": 8, "max": 512}),
        "height": ("INT", {"default": 48, "min": 8, "max": 512}),
    }


class _SeededNode:
    """What the three frames share: one IMAGE out of ``draw(seed, width, height, ...)``."""

    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "draw"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": _seed_inputs()}


class SeededFrame(_SeededNode):
    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        inputs = _seed_inputs()
        inputs["blank_below"] = ("INT", {"default": 1 << 16, "min": 0, "max": SEED_MAX})
        return {"required": inputs}

    def draw(self, seed: int, width: int, height: int, blank_below: int):
        if seed < blank_below:
            return (torch.full((1, height, width, 3), 0.5),)
        contrast = 0.3 + 0.7 * ((seed >> 4) % 1000) / 1000  # image [1, H, W, 3] in 0..1
        ys = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
        xs = torch.linspace(0, 1, width).view(1, width).expand(height, width)
        picture = torch.stack([xs, ys, (xs + ys) / 2], dim=-1)
        picture[height // 3: height // 2, width // 5: 4 * width // 5] = torch.tensor([0.9, 0.9, 0.2])
        return ((0.5 + (picture - 0.5) * contrast).unsqueeze(0),)


class SeededFaultyFrame(_SeededNode):
    def draw(self, seed: int, width: int, height: int):
        return (torch.full((1, height, width, 3), float("nan")),)


class SeededFlakyFrame(_SeededNode):
    """Blank for small seeds, and fails outright for the others: a retry that cannot even run."""

    def draw(self, seed: int, width: int, height: int):
        if seed >= 1 << 16:
            raise RuntimeError(f"this frame cannot be drawn with seed {seed}")
        return (torch.full((1, height, width, 3), 0.5),)


NODE_CLASS_MAPPINGS = {"SeededFrame": SeededFrame, "SeededFaultyFrame": SeededFaultyFrame,
                       "SeededFlakyFrame": SeededFlakyFrame}
