"""What the sentinel judges: one output file, plus the raw pixels it was encoded from when known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Candidate"]


@dataclass
class Candidate:
    """One output to judge.

    ``data`` is the encoded file exactly as the caller would receive it, ``content_type`` the media type it
    will be served with. ``expected_width``/``expected_height`` are the size the workflow declared, when
    known. ``pixels`` are the raw values the file was encoded from (float ``[H, W, C]`` in 0..1); they may
    hold NaN/Inf, which encoding to PNG would hide, so the finite check reads them rather than the file.
    """

    data: bytes
    content_type: str
    expected_width: int | None = None
    expected_height: int | None = None
    pixels: np.ndarray | None = None
