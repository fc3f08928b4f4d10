"""Per-run settings handed to the executor by its caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunContext"]


@dataclass
class RunContext:
    input_dir: Path  # LoadImage resolves names here, never outside it
    # One dict per event ({"type": "executing", "node": "3", ...}); names and fields in events.py.
    on_event: Callable[[dict], None] | None = None
    # Polled before each node and at each report_progress() of a running node -> RunCanceled.
    should_cancel: Callable[[], bool] | None = None
    run_id: str | None = None  # sent as "prompt_id" in every event
