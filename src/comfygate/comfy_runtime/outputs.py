"""What a run produces: encoded images with their raw pixels, and timings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy

__all__ = ["OutputImage", "RunResult"]


@dataclass
class OutputImage:
    index: int  # position among all images of the run, in execution order
    node_id: str  # the prompt node it came from (for a node an expansion added: the node that expanded)
    class_type: str  # class of the node that made the image
    filename_prefix: str
    png: bytes
    width: int
    height: int
    pixels: numpy.ndarray = field(repr=False)  # float32 [H, W, C] as the node produced it; may hold NaN/Inf


@dataclass
class RunResult:
    outputs: list[OutputImage]
    execute_ms: float
    node_ms: dict[str, float]  # nodes that ran (expanded nodes under their own ids), in order; cached ones absent
    cached_nodes: list[str] = field(default_factory=list)  # nodes whose outputs came from the cache
    model_load_ms: float = 0.0  # part of execute_ms spent loading model files into the pool
    model_loads: list[dict] = field(default_factory=list)  # {"model": "kind/path", "ms", "shared"} per load
