"""Images that callers send as run inputs: decoded, checked with Pillow, stored content-addressed.

The stored name (``<sha256>.<ext>``) is what the workflow's LoadImage receives, so nothing a caller names
ever reaches a filesystem path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from comfygate.platform.errors import PayloadTooLarge, Unprocessable
from comfygate.platform.storage import Storage

__all__ = ["ImageLimits", "CheckedImage", "decode_base64_image", "check_input_image", "store_input_image",
           "input_key"]

_FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp")}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


def input_key(name: str) -> str:
    return f"inputs/{name}"


def decode_base64_image(input_name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise Unprocessable(f"input {input_name!r}: expected a base64 string or an uploaded file",
                            details={"input": input_name})
    payload = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unprocessable(f"input {input_name!r}: not valid base64 ({exc})",
                            details={"input": input_name}) from exc


def _check_image(input_name: str, data: bytes, limits: ImageLimits) -> tuple[str, str]:
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"input {input_name!r}: image is {len(data)} bytes, the limit is {limits.max_bytes}",
                              details={"input": input_name})
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x the limit; we refuse anything over it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > limits.max_pixels:
                    raise PayloadTooLarge(
                        f"input {input_name!r}: image is {image.width}x{image.height} pixels, "
                        f"the limit is {limits.max_pixels} pixels", details={"input": input_name})
                image.verify()
                fmt = image.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"input {input_name!r}: {exc}", details={"input": input_name}) from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise Unprocessable(f"input {input_name!r}: not a readable image ({exc})",
                            details={"input": input_name}) from exc
    if fmt not in _FORMATS:
        raise Unprocessable(f"input {input_name!r}: {fmt} images are not accepted; send PNG, JPEG or WebP",
                            details={"input": input_name})
    return _FORMATS[fmt]


@dataclass(frozen=True)
class CheckedImage:
    name: str  # what LoadImage will be given: <sha256>.<ext>
    data: bytes
    content_type: str


def check_input_image(input_name: str, data: bytes, limits: ImageLimits) -> CheckedImage:
    ext, content_type = _check_image(input_name, data, limits)
    return CheckedImage(f"{hashlib.sha256(data).hexdigest()}.{ext}", data, content_type)


def store_input_image(storage: Storage, image: CheckedImage) -> None:
    if not storage.exists(input_key(image.name)):
        storage.put(input_key(image.name), image.data, image.content_type)
