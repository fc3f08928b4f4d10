"""A tiny real open_clip model, trained in seconds on coloured shapes, for tests that need a CLIP scorer.

``build_tiny_clip(folder)`` registers the ``comfygate-tiny-clip`` config with open_clip, trains the model
contrastively on jittered pictures against their captions, and writes ``tiny-clip.pt`` (state dict) plus
``tiny-clip.pt.config.json`` (the model config) to ``folder``. The config file next to the weights is what
lets another process (a worker started with COMFYGATE_CLIP_MODEL=comfygate-tiny-clip and
COMFYGATE_CLIP_WEIGHTS=<folder>/tiny-clip.pt) load the model through ``ClipScorer`` without any registration
of its own.

The pictures are each colour of ``COLOURS`` as a shape of ``SHAPES`` on a grey background ("a red circle",
``shape_image``/``caption_for``) and as a solid image ("a red image", ``colour_image``/``caption``). A caption
that gets the colour right but the shape wrong (or the reverse) is a mismatch the model has learned to tell.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from comfygate.sentinel import config_sidecar_path, register_model_config

__all__ = [
    "TINY_CLIP_NAME",
    "TINY_CLIP_CONFIG",
    "COLOURS",
    "SHAPES",
    "caption",
    "caption_for",
    "colour_image",
    "shape_image",
    "build_tiny_clip",
]

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
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (128, 128, 128)
_STEPS = 300
_IMAGES_PER_CLASS = 24


def caption(colour: str) -> str:
    """The caption of a solid image of ``colour``: "a red image"."""
    return f"a {colour} image"


def caption_for(colour: str, shape: str) -> str:
    """The caption of ``shape_image(colour, shape)``: "a red circle"."""
    return f"a {colour} {shape}"


def colour_image(colour: str, rng: np.random.Generator | None = None, size: int = 32) -> Image.Image:
    """A solid image of ``colour``; with ``rng``, brightness and pixels are jittered a little."""
    rgb = np.array(COLOURS[colour], dtype=np.float32)
    pixels = np.broadcast_to(rgb, (size, size, 3)).copy()
    return _jitter(pixels, rng)


def shape_image(colour: str, shape: str, rng: np.random.Generator | None = None, size: int = 32) -> Image.Image:
    """A ``colour`` ``shape`` centred on a grey background; with ``rng``, its place, size and pixels vary."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    centre_x = centre_y = size / 2
    radius = 0.34 * size
    if rng is not None:
        centre_x, centre_y = centre_x + rng.uniform(-0.05, 0.05, 2) * size
        radius *= rng.uniform(0.9, 1.05)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    box = (centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:  # triangle, pointing up
        draw.polygon([(centre_x, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return _jitter(np.asarray(image, dtype=np.float32), rng)


def _jitter(pixels: np.ndarray, rng: np.random.Generator | None) -> Image.Image:
    if rng is not None:
        pixels = pixels * rng.uniform(0.75, 1.15) + rng.normal(0.0, 8.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _classes() -> list[tuple[str, str | None]]:
    """Every (colour, shape) pair the model learns; shape None is the solid image."""
    return [(colour, shape) for colour in COLOURS for shape in (*SHAPES, None)]


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

    classes = _classes()

    def picture(colour: str, shape: str | None) -> Image.Image:
        return colour_image(colour, rng) if shape is None else shape_image(colour, shape, rng)

    # Training images go through the same preprocessing ClipScorer applies at inference.
    images = torch.stack([
        torch.stack([preprocess(picture(colour, shape)) for _ in range(_IMAGES_PER_CLASS)])
        for colour, shape in classes
    ])  # [classes, per class, 3, 32, 32]
    tokens = tokenizer([caption(c) if s is None else caption_for(c, s) for c, s in classes])  # [classes, 16]
    targets = torch.arange(len(classes))  # pair i is (an image of class i, caption of class i)

    # The word embeddings stay as initialised (random, so distinct): training all 49408 rows of the bundled
    # vocabulary would cost most of each step, for the dozen words the captions use.
    model.token_embedding.weight.requires_grad_(False)
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.0)
    # One thread: ops this small gain nothing from two, threads spinning against a busy machine's other
    # processes slow training many times over, and the weights do not depend on the core count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            pick = torch.randint(0, _IMAGES_PER_CLASS, (len(classes),))
            batch = images[targets, pick]  # [classes, 3, 32, 32], one image per class
            image_features = model.encode_image(batch, normalize=True)  # [classes, 32]
            text_features = model.encode_text(tokens, normalize=True)  # [classes, 32]
            logits = model.logit_scale.exp() * image_features @ text_features.T  # [classes, classes]
            # CLIP's symmetric loss: each image picks its caption and each caption its image.
            loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)

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
