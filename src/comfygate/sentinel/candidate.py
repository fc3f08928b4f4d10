"""What the sentinel judges: one output file, plus what is known about how it was made."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Candidate"]


@dataclass
class Candidate:
    """One output to judge.

    ``data`` is the encoded file exactly as the caller would receive it, ``content_type`` the media type it
    will be served with: an image (still or animated), ``video/mp4``/``video/webm``, ``audio/flac``/``mpeg``/
    ``ogg``/``wav``, ``model/gltf-binary``, ``text/plain`` or ``application/octet-stream`` (see media.py).
    ``expected_width``/``expected_height`` (images and video) and ``expected_mode`` (a Pillow mode such as
    ``"RGB"``, images only) are what the workflow declared, when known. ``pixels`` are the raw values the
    file was encoded from (float ``[H, W, C]`` in 0..1); they may hold NaN/Inf, which encoding to PNG would
    hide, so the finite check reads them rather than the file. ``prompt`` is the text the prompt-alignment
    check compares the image with. ``request_key`` identifies the request that produced it: the duplicate
    check ignores recent outputs with the same key, since repeating a request may rightly repeat its image.
    """

    data: bytes
    content_type: str
    expected_width: int | None = None
    expected_height: int | None = None
    expected_mode: str | None = None
    pixels: np.ndarray | None = None
    prompt: str | None = None
    request_key: str | None = None
