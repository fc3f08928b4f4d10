"""The operator's limits on what one run may ask of a GPU: pixels per image, batch size, video frames, sampler
steps (``COMFYGATE_MAX_*``; 0: no limit). Held at upload (a version whose fixed values are over a limit is
refused) and on every run (the bound prompt, every node); the typed endpoint's schema shows them as maxima.

Which inputs count is ``comfy_runtime.input_rules`` (by input name, on any node).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from comfygate.comfy_runtime import ExposedInput, LimitFinding, over_limits
from comfygate.comfy_runtime.input_rules import LIMITED_INPUTS, PIXEL_INPUTS
from comfygate.platform.errors import Unprocessable
from comfygate.settings import Settings

__all__ = ["RunLimits", "DEFAULT_RUN_LIMITS", "check_run_limits", "limited_schema"]

_SETTINGS = {"pixels": "COMFYGATE_MAX_RUN_PIXELS", "batch": "COMFYGATE_MAX_BATCH_SIZE",
             "frames": "COMFYGATE_MAX_FRAMES", "steps": "COMFYGATE_MAX_STEPS"}
_UNITS = {"pixels": "pixels per image", "batch": "images per batch", "frames": "frames", "steps": "steps"}


@dataclass(frozen=True)
class RunLimits:
    """The limits a server holds runs to; the defaults are the settings' defaults. 0: no limit."""

    max_pixels: int = Settings.max_run_pixels
    max_batch: int = Settings.max_batch_size
    max_frames: int = Settings.max_frames
    max_steps: int = Settings.max_steps

    @classmethod
    def from_settings(cls, settings: Settings) -> RunLimits:
        return cls(settings.max_run_pixels, settings.max_batch_size, settings.max_frames, settings.max_steps)

    def by_kind(self) -> dict[str, int]:
        return {"pixels": self.max_pixels, "batch": self.max_batch, "frames": self.max_frames,
                "steps": self.max_steps}


# What services hold runs to when their caller passes no limits (the API passes the server's settings).
DEFAULT_RUN_LIMITS = RunLimits()


def _labels(exposed: Sequence[ExposedInput]) -> dict[tuple[str, str], str]:
    return {(e.node_id, e.input_name): e.name for e in exposed}


def _error(finding: LimitFinding, labels: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    names = [labels.get((finding.node_id, name), f"node {finding.node_id} {name}") for name in finding.inputs]
    values = [str(v) for v in finding.values]
    said = f"{' x '.join(names)} = {' x '.join(values)}"
    if len(values) > 1:
        said += f" = {finding.amount}"
    message = (f"{said} {'pixels ' if finding.kind == 'pixels' else ''}is over this server's limit of "
               f"{finding.limit} {_UNITS[finding.kind]} ({_SETTINGS[finding.kind]})")
    return {"input": names[0], "inputs": names, "node": finding.node_id, "message": message,
            "limit": finding.limit, "setting": _SETTINGS[finding.kind]}


def check_run_limits(prompt: Mapping[str, Any], exposed: Sequence[ExposedInput], limits: RunLimits,
                     where: str) -> None:
    """Unprocessable naming every input over a limit (its exposed name, or node id and input name when it is
    fixed in the workflow). ``where`` starts the message: "inputs" for a run, "workflow" for an upload."""
    findings = over_limits(prompt, limits.by_kind())
    if not findings:
        return
    labels = _labels(exposed)
    errors = [_error(finding, labels) for finding in findings]
    raise Unprocessable(f"{where}: " + "; ".join(e["message"] for e in errors), details={"errors": errors})


def _lowered(current: Any, limit: int) -> int:
    return limit if not isinstance(current, int | float) else min(current, limit)


def limited_schema(schema: dict[str, Any], prompt: Mapping[str, Any], exposed: Sequence[ExposedInput],
                   limits: RunLimits) -> dict[str, Any]:
    """``schema`` (the version's input schema) with the ``maximum`` of each exposed number input lowered to
    the limit that applies to it. A side of an image gets the pixel limit over the other side's smallest value
    (its fixed value, or its minimum when callers set it too)."""
    limited = copy.deepcopy(schema)
    properties = limited.get("properties", {})
    by_target = {(e.node_id, e.input_name): e for e in exposed}
    by_kind = limits.by_kind()
    for e in exposed:
        prop = properties.get(e.name)
        if prop is None or e.kind not in ("int", "float"):
            continue
        for kind, names in LIMITED_INPUTS.items():
            if e.input_name in names and by_kind[kind]:
                prop["maximum"] = _lowered(prop.get("maximum"), by_kind[kind])
        if e.input_name in PIXEL_INPUTS and by_kind["pixels"]:
            other_name = PIXEL_INPUTS[1 - PIXEL_INPUTS.index(e.input_name)]
            other = by_target.get((e.node_id, other_name))
            smallest = (other.schema.get("minimum", 1) if other is not None
                        else prompt.get(e.node_id, {}).get("inputs", {}).get(other_name))
            if isinstance(smallest, int | float) and not isinstance(smallest, bool) and smallest >= 1:
                prop["maximum"] = _lowered(prop.get("maximum"), int(by_kind["pixels"] // smallest))
    return limited
