"""Progress reports from inside a running node, and the cancel check that rides on them.

A node calls :func:`report_progress` (a sampler once per step). The executor turns each call into a
``progress`` event for the node that is running and, before that, polls the run's ``should_cancel``: a
canceled run stops at the next step with :class:`RunCanceled` instead of finishing the node.

The current node is held in a context variable, so two runs on two threads never see each other's
reports, and async node functions (run as tasks, which copy the context) report like plain ones. Called
outside a run, or from a thread a node started itself, these functions do nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import RunCanceled

__all__ = ["NodeProgress", "ProgressBar", "node_progress", "raise_if_canceled", "report_progress"]


@dataclass(frozen=True)
class NodeProgress:
    """Where the reports of the node now running go."""

    node_id: str
    emit: Callable[[str, float, float], None]  # (node id, value, max) -> a "progress" event
    should_cancel: Callable[[], bool] | None = None


_current: ContextVar[NodeProgress | None] = ContextVar("comfygate_node_progress", default=None)


@contextmanager
def node_progress(progress: NodeProgress) -> Iterator[None]:
    """Route report_progress() calls made inside the block (and in tasks it starts) to ``progress``."""
    token = _current.set(progress)
    try:
        yield
    finally:
        _current.reset(token)


def raise_if_canceled() -> None:
    """Raise RunCanceled when the run now executing was asked to stop; a no-op outside a run."""
    current = _current.get()
    if current is not None and current.should_cancel is not None and current.should_cancel():
        raise RunCanceled(f"run canceled during node {current.node_id}")


def report_progress(value: float, total: float) -> None:
    """Tell the run that the current node is at ``value`` of ``total`` steps (raises RunCanceled if canceled)."""
    current = _current.get()
    if current is None:
        return
    if current.should_cancel is not None and current.should_cancel():
        raise RunCanceled(f"run canceled during node {current.node_id} at step {value} of {total}")
    current.emit(current.node_id, value, total)


class ProgressBar:
    """A step counter in the style of ComfyUI's ``comfy.utils.ProgressBar``: ``update(1)`` after each step."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.current: float = 0

    def update_absolute(self, value: float, total: float | None = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        report_progress(self.current, self.total)

    def update(self, steps: float = 1) -> None:
        self.update_absolute(self.current + steps)
