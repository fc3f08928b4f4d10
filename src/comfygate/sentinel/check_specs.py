"""The table of checks: run order, what kind each is, which way its score is better, its valid range, and
which kinds of output it judges.

Policy validation, the gate and the verdicts all read this one table, so a check's facts live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["CheckSpec", "CHECKS", "CHECK_NAMES", "REASON_CODES", "Kind", "MEDIA_KINDS", "SILENCE_FLOOR_DBFS"]

# yesno: passes or fails, no score threshold; scored: reject/review bands; soft: a flag band only.
Kind = Literal["yesno", "scored", "soft"]

# What an output is, as the gate judges it (see media.py): each check applies to some of these.
MEDIA_KINDS = ("image", "animation", "video", "audio", "model", "text", "other", "unknown")
_VISUAL = frozenset({"image", "animation", "video"})  # the pixel and model checks look at frames
# The level reported for digital silence (RMS 0, minus infinity in dB): low enough that no threshold passes it.
SILENCE_FLOOR_DBFS = -150.0


@dataclass(frozen=True)
class CheckSpec:
    name: str
    kind: Kind
    higher_is_better: bool
    low: float  # valid range of the score, and so of any threshold for it
    high: float
    integer: bool = False  # thresholds must be whole numbers (duplicate: Hamming distance)
    uses_clip: bool = False
    kinds: frozenset[str] = _VISUAL  # the kinds of output it judges; on others it reports not_run


_SPECS = (
    CheckSpec("decode", "yesno", True, 0.0, 1.0, kinds=frozenset(MEDIA_KINDS)),
    CheckSpec("finite", "yesno", True, 0.0, 1.0),
    CheckSpec("blank", "scored", True, 0.0, 1.0),
    CheckSpec("noise", "scored", True, -1.0, 1.0),
    # RMS level of the whole track in dBFS (0 is full scale).
    CheckSpec("silence", "scored", True, SILENCE_FLOOR_DBFS, 0.0, kinds=frozenset({"audio"})),
    CheckSpec("duplicate", "scored", True, 0.0, 64.0, integer=True),
    CheckSpec("clip_alignment", "scored", True, -1.0, 1.0, uses_clip=True),
    CheckSpec("aesthetic", "scored", True, 0.0, 10.0, uses_clip=True),
    CheckSpec("nsfw", "scored", False, 0.0, 1.0, uses_clip=True),
    # Variance of a Laplacian of 8-bit values stays below (4 * 255) ** 2; the bound keeps thresholds sane.
    CheckSpec("blur", "soft", True, 0.0, 1_000_000.0),
    CheckSpec("colour_entropy", "soft", True, 0.0, 12.0),
)

CHECKS: Mapping[str, CheckSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
# Order is the order checks run and are reported in: cheapest first.
CHECK_NAMES: tuple[str, ...] = tuple(CHECKS)

# Stable, machine-readable codes of failures and flags.
REASON_CODES: tuple[str, ...] = (
    "undecodable", "wrong_size", "wrong_type", "wrong_mode", "not_finite", "blank", "noise",
    "exact_duplicate", "near_duplicate", "prompt_mismatch", "low_aesthetic", "nsfw", "blurry",
    "low_colour_entropy", "empty", "silent",
)
