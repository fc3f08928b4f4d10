"""Tiny random-weight upscale model files in real layouts spandrel recognises, plus a plain-torch reference.

The RealESRGAN "compact" (SRVGGNetCompact) state dict is written out key by key, the way Real-ESRGAN saves it:
``body.0`` first conv, ``body.1`` PReLU, then ``num_conv`` (conv, PReLU) pairs, and a last conv producing
``3 * scale**2`` channels for a pixel shuffle; the output adds the nearest-upsampled input. spandrel reads the scale
from that last conv's channel count and ``num_conv`` from the body length. :func:`compact_reference` runs the same
network with bare torch ops, so a test can tell that the loader used these weights and not fresh ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "compact_reference",
    "compact_state_dict",
    "esrgan_unshuffle_state_dict",
    "save_pth",
    "save_safetensors",
]


def compact_state_dict(
    scale: int = 2,
    num_feat: int = 4,
    num_conv: int = 1,
    channels: int = 3,
    seed: int = 0,
    weight_std: float = 0.1,
) -> dict[str, Tensor]:
    """A SRVGGNetCompact state dict with random weights (``weight_std`` 0 gives nearest-neighbour upscaling)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return (torch.randn(*shape, generator=gen) * weight_std).contiguous()

    state: dict[str, Tensor] = {}
    convs = [(num_feat, channels)] + [(num_feat, num_feat)] * num_conv + [(channels * scale * scale, num_feat)]
    index = 0
    for n, (out_ch, in_ch) in enumerate(convs):
        state[f"body.{index}.weight"] = rand(out_ch, in_ch, 3, 3)
        state[f"body.{index}.bias"] = rand(out_ch)
        index += 1
        if n < len(convs) - 1:  # PReLU after every conv but the last
            state[f"body.{index}.weight"] = torch.full((num_feat,), 0.25) + rand(num_feat)
            index += 1
    return state


def compact_reference(state: dict[str, Tensor], image: Tensor) -> Tensor:
    """Run a compact state dict on IMAGE [B, H, W, 3] with plain torch ops -> [B, H*s, W*s, 3] clamped to 0..1."""
    x = image.movedim(-1, 1).float()  # [B, 3, H, W]
    in_ch = state["body.0.weight"].shape[1]
    if in_ch == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    last = max(int(k.split(".")[1]) for k in state)
    scale = int((state[f"body.{last}.weight"].shape[0] // in_ch) ** 0.5)
    out = x
    for i in range(last + 1):
        if i % 2 == 0:
            out = F.conv2d(out, state[f"body.{i}.weight"], state[f"body.{i}.bias"], padding=1)
        else:
            out = F.prelu(out, state[f"body.{i}.weight"])
    out = F.pixel_shuffle(out, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")
    out = out.clamp(0, 1)
    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1)
    return out.movedim(1, -1)


def esrgan_unshuffle_state_dict(num_filters: int = 4, num_blocks: int = 1, seed: int = 0) -> dict[str, Tensor]:
    """A Real-ESRGAN x2 style RRDBNet (pixel-unshuffled input, 12 input channels): spandrel says multiple_of=4."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=12, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=4, shuffle_factor=2)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def save_safetensors(state: dict[str, Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def save_pth(state: object, path: Path) -> Path:
    torch.save(state, str(path))
    return path
