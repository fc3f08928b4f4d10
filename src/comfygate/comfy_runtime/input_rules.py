"""Rules about node inputs by name, kept as data: which inputs say where a node writes (never exposed by
default), and which ask a node for work that grows without bound (held to an operator's limits).

Matched by input name on any node, core or custom: node packs reuse ComfyUI's names for these inputs, and a
rule that needed every class listed would let each new pack through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .graph import node_sort_key

__all__ = ["OUTPUT_PATH_INPUTS", "PIXEL_INPUTS", "LIMITED_INPUTS", "LimitFinding", "over_limits"]

# Inputs naming where a node writes its files (SaveImage's filename_prefix, custom savers' paths). Exposing
# them lets every caller choose file names on the worker, so a workflow exposes them only by naming them in
# its `inputs` spec (where the platform still refuses values that leave the output folder).
OUTPUT_PATH_INPUTS = frozenset({
    "filename_prefix", "output_path", "save_path", "filename", "output_dir", "output_folder", "file_path",
})

# The image size a node makes: width x height of one node, in pixels (EmptyLatentImage, EmptyImage, ImageScale,
# the video latents); counted only when both are fixed numbers.
PIXEL_INPUTS = ("width", "height")

# Inputs that multiply the work of one run, by kind: images per batch, video frames, sampler steps.
LIMITED_INPUTS: Mapping[str, frozenset[str]] = {
    "batch": frozenset({"batch_size", "amount"}),  # EmptyLatentImage, RepeatLatentBatch, RepeatImageBatch
    "frames": frozenset({"length", "frames", "num_frames", "video_frames", "frame_count"}),  # video latents
    "steps": frozenset({"steps"}),  # KSampler, KSamplerAdvanced, BasicScheduler and their kin
}


@dataclass(frozen=True)
class LimitFinding:
    """One node asking for more than a limit allows: ``inputs`` are its input names (two for pixels)."""

    kind: str  # "pixels" | "batch" | "frames" | "steps"
    node_id: str
    inputs: tuple[str, ...]
    values: tuple[int | float, ...]
    amount: int | float  # the values' product for pixels, else the value
    limit: int


def _number(value: Any) -> int | float | None:
    # A link ([node, slot]) or text decides nothing here; bool is an int to Python, not a count.
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def over_limits(prompt: Mapping[str, Any], limits: Mapping[str, int]) -> list[LimitFinding]:
    """Every node input of ``prompt`` over its limit. ``limits`` maps "pixels", "batch", "frames", "steps"
    to a maximum; a kind left out, or 0, has no limit."""
    findings: list[LimitFinding] = []
    for node_id in sorted(prompt, key=node_sort_key):
        node = prompt[node_id]
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        width, height = (_number(inputs.get(name)) for name in PIXEL_INPUTS)
        if limits.get("pixels") and width is not None and height is not None and width * height > limits["pixels"]:
            findings.append(LimitFinding("pixels", node_id, PIXEL_INPUTS, (width, height), width * height,
                                         limits["pixels"]))
        for kind, names in LIMITED_INPUTS.items():
            for name in sorted(names & set(inputs)):
                value = _number(inputs[name])
                if limits.get(kind) and value is not None and value > limits[kind]:
                    findings.append(LimitFinding(kind, node_id, (name,), (value,), value, limits[kind]))
    return findings
