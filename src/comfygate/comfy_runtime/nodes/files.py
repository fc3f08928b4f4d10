"""Nodes that read input files and produce output images: LoadImage, SaveImage, PreviewImage."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..paths import resolve_inside, unsafe_name_reason

HASH_CHUNK_BYTES = 1 << 20
PNG_COMPRESS_LEVEL = 4  # zlib level: close to the smallest files at a fraction of level 9's time


class LoadImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        # The choices are files of the run's input folder, known only per run: the list stays empty and
        # validation checks the name's safety instead. INPUT_DIR is comfygate's hidden input for that folder.
        return {"required": {"image": ([], {"image_upload": True})}, "hidden": {"input_dir": "INPUT_DIR"}}

    @classmethod
    def IS_CHANGED(cls, image: str, input_dir: Path):
        """The file's SHA-256: the executor re-runs the node when the file's bytes change, not its folder."""
        path = resolve_inside(Path(input_dir), image)
        if not path.is_file():
            return float("nan")  # always run: the node itself reports the missing file
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(HASH_CHUNK_BYTES), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def load_image(self, image: str, input_dir: Path):
        path = resolve_inside(Path(input_dir), image)  # checked again here: validation may have been skipped
        if not path.is_file():
            raise FileNotFoundError(f"input 'image': file {image!r} is not in the input folder")
        with Image.open(path) as opened:  # Pillow's decompression-bomb guard stays on
            picture = ImageOps.exif_transpose(opened)
            rgb = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
            if picture.has_transparency_data:
                alpha = np.asarray(picture.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
                mask = 1.0 - alpha  # ComfyUI's convention: the mask marks the transparent part
            else:
                mask = np.zeros(rgb.shape[:2], dtype=np.float32)
        return torch.from_numpy(rgb)[None], torch.from_numpy(mask)[None]  # [1, H, W, 3], [1, H, W]


def encode_images(images: torch.Tensor, filename_prefix: str) -> list[dict]:
    """One ui image record per image of the batch: PNG bytes plus the raw float pixels."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected IMAGE [B, H, W, C] with 1, 3 or 4 channels, got {tuple(images.shape)}")
    records = []
    for image in images:
        pixels = np.array(image.detach().to("cpu", torch.float32).numpy(), copy=True)  # [H, W, C], raw
        # NaN/Inf are made safe for encoding only; the sentinel still sees them in `pixels`.
        safe = np.clip(np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        as_bytes = np.rint(safe * 255.0).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(as_bytes[..., 0] if as_bytes.shape[-1] == 1 else as_bytes).save(
            buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL
        )
        height, width = pixels.shape[:2]
        records.append({"png": buffer.getvalue(), "width": width, "height": height, "pixels": pixels,
                        "filename_prefix": filename_prefix})
    return records


def _prefix_problem(filename_prefix: str) -> str | None:
    reason = unsafe_name_reason(filename_prefix)
    return None if reason is None else f"filename_prefix {filename_prefix!r} is not allowed: {reason}"


class SaveImage:
    """Hands the images to the run's outputs. Nothing is written here; the platform stores outputs.

    No workflow metadata is embedded in the PNG: API callers should not receive the workflow's internals.
    """

    CATEGORY = "image"
    DESCRIPTION = "Saves the input images as outputs of the run."
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI",
                                               "tooltip": "Relative name prefix, subfolders with '/'."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix):
        if filename_prefix is None:  # linked: the value is known only when the node runs, and checked then
            return True
        return _prefix_problem(filename_prefix) or True

    def save_images(self, images: torch.Tensor, filename_prefix: str = "ComfyUI"):
        problem = _prefix_problem(filename_prefix)  # again here: the prefix may have come through a link
        if problem is not None:
            raise ValueError(problem)
        return {"ui": {"images": encode_images(images, filename_prefix)}}


class PreviewImage:
    CATEGORY = "image"
    DESCRIPTION = "Shows the input images as outputs of the run."
    RETURN_TYPES = ()
    FUNCTION = "preview_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def preview_images(self, images: torch.Tensor):
        return {"ui": {"images": encode_images(images, "preview")}}
