"""A tiny real open_clip model, trained in seconds on solid colours, for tests that need a CLIP scorer.

``build_tiny_clip(folder)`` registers the ``comfygate-tiny-clip`` config with open_clip, trains the model
contrastively on jittered solid-colour images against captions such as "a red image", and writes
``tiny-clip.pt`` (state dict) plus ``tiny-clip.pt.config.json`` (the model config) to ``folder``. The
config file next to the weights is what lets another process (a worker started with
COMFYGATE_CLIP_MODEL=comfygate-tiny-clip and COMFYGATE_CLIP_WEIGHTS=<folder>/tiny-clip.pt) load the model
through ``ClipScorer`` without any registration of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from comfygate.sentinel import config_sidecar_path, register_model_config

__all__ = ["TINY_CLIP_NAME", "TINY_CLIP_CONFIG", "COLOURS", "caption", "colour_image", "build_tiny_clip"]

TINY_CLIP_NAME = "comfygate-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    # vocab_size is that of open_clip's default (bundled) tokenizer, so no tokenizer is downloaded.
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 40),
}
_STEPS = 300
_IMAGES_PER_COLOUR = 32


def caption(colour: str) -> str:
    return f"a {colour} image"


def colour_image(colour: str, rng: np.random.Generator | None = None, size: int = 32) -> Image.Image:
    """A solid image of ``colour``; with ``rng``, brightness and pixels are jittered a little."""
    rgb = np.array(COLOURS[colour], dtype=np.float32)
    pixels = np.broadcast_to(rgb, (size, size, 3)).copy()
    if rng is not None:
        pixels = pixels * rng.uniform(0.75, 1.15) + rng.normal(0.0, 8.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def build_tiny_clip(folder: Path, steps: int = _STEPS) -> tuple[str, Path]:
    """Train the tiny CLIP and save it under ``folder``; returns (model name, weights path).

    Deterministic: the same seed gives the same weights.
    """
    import open_clip
    import torch
    import torch.nn.functional as F

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    register_model_config(TINY_CLIP_NAME, TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME)
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)

    names = list(COLOURS)
    # Training images go through the same preprocessing ClipScorer applies at inference.
    images = torch.stack([
        torch.stack([preprocess(colour_image(name, rng)) for _ in range(_IMAGES_PER_COLOUR)])
        for name in names
    ])  # [colours, per colour, 3, 32, 32]
    tokens = tokenizer([caption(name) for name in names])  # [colours, 16]
    targets = torch.arange(len(names))  # pair i is (an image of colour i, caption of colour i)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, _IMAGES_PER_COLOUR, (len(names),))
        batch = images[targets, pick]  # [colours, 3, 32, 32], one image per colour
        image_features = model.encode_image(batch, normalize=True)  # [colours, 32]
        text_features = model.encode_text(tokens, normalize=True)  # [colours, 32]
        logits = model.logit_scale.exp() * image_features @ text_features.T  # [colours, colours]
        # CLIP's symmetric loss: each image picks its caption and each caption its image.
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    weights_path = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), weights_path)
    config_sidecar_path(weights_path).write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
    return TINY_CLIP_NAME, weights_path


def main(argv: list[str] | None = None) -> None:
    """``python tests/sentinel/tiny_clip.py FOLDER``: build there, print the model name and weights path."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    name, weights_path = build_tiny_clip(args.folder)
    print(json.dumps({"model": name, "weights": str(weights_path)}))


if __name__ == "__main__":
    main()
