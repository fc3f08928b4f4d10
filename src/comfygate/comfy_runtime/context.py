"""Per-run settings handed to the executor by its caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunContext"]


@dataclass
class RunContext:
    input_dir: Path  # LoadImage resolves names here, never outside it
    on_event: Callable[[dict], None] | None = None  # {"type": "executing", "node": id}; node None when done
    should_cancel: Callable[[], bool] | None = None  # polled between nodes -> RunCanceled
