"""The executor: runs validated prompts with ComfyUI's semantics, keeping node outputs cached across runs.

Build one :class:`Executor` per worker process and call :meth:`Executor.run` from as many threads as you
like: each run keeps its own state (runner.py); the output cache (cache.py) is shared under a lock.

What a run does, in ComfyUI's terms:

- Only the nodes the output nodes need run, each after its inputs; among ready nodes the lowest id first.
- Caching: a node whose class, IS_CHANGED answer, constant inputs and ancestors are unchanged since an
  earlier run is not run again (cache_keys.py). A run that changes only a seed re-runs the sampler and what
  follows it, not the loaders. As in ComfyUI, output nodes are cached too: a cached output node is not called
  again but hands over the UI results it produced before, so every run returns its images.
- Lazy inputs, list semantics, node expansion and async node functions (runner.py, lists.py, expansion.py,
  calls.py); progress reports and cancel (progress.py); events (events.py).
- Out of memory in a node (MemoryError, torch's OutOfMemoryError): the cache is emptied, idle models leave
  the model pool, CUDA's cache is emptied too, and NodeExecutionError says so; the Executor stays usable.
- Model loads (diffusion/pool.py) are timed per run: ``RunResult.model_load_ms`` apart from execution.

Output nodes hand images over the ComfyUI way: their function returns ``{"ui": {"images": [record, ...]}}``
where each record is a dict with ``png`` (bytes), ``width``, ``height``, ``pixels`` (float32 [H, W, C]) and
``filename_prefix``. The executor turns records into :class:`OutputImage` and numbers them across the run.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from .cache import OutputCache
from .context import RunContext
from .diffusion.pool import load_timer
from .outputs import RunResult
from .registry import NodeRegistry
from .runner import PromptRun
from .validation import validate_prompt

__all__ = ["DEFAULT_CACHE_ENTRIES", "Executor", "execute"]

DEFAULT_CACHE_ENTRIES = 64  # node outputs kept across runs (one entry per node, least recently used goes first)


class Executor:
    """Runs prompts against ``registry``; thread-safe, with an output cache of ``cache_entries`` nodes."""

    def __init__(self, registry: NodeRegistry, *, cache_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.registry = registry
        self._cache = OutputCache(cache_entries)

    @property
    def cached_entries(self) -> int:
        """How many node outputs the cache holds now."""
        return len(self._cache)

    def run(self, prompt: dict[str, dict[str, Any]], context: RunContext) -> RunResult:
        """Validate and run ``prompt``. Raises WorkflowInvalid (also when only some outputs validate),
        NodeExecutionError or RunCanceled."""
        # ComfyUI would run the outputs that validated and drop the others; a run here refuses instead.
        validate_prompt(prompt, self.registry).raise_for_node_errors()
        with load_timer() as loads:
            result = PromptRun(prompt, self.registry, context, self._cache, self._free_after_out_of_memory).execute()
        result.model_load_ms = round(loads.ms, 3)
        result.model_loads = [{"model": "/".join(str(part) for part in load["key"][:2]), "ms": round(load["ms"], 3),
                               "shared": load["shared"]} for load in loads.loads]
        return result

    def free_cache(self) -> None:
        """Drop every cached node output (models included); the next run computes everything again."""
        self._cache.clear()

    def _free_after_out_of_memory(self) -> None:
        self.free_cache()
        if self.registry.models is not None:
            self.registry.models.free_idle()
        gc.collect()  # tensors in reference cycles go now, before CUDA's cache is emptied
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def execute(prompt: dict[str, dict[str, Any]], registry: NodeRegistry, context: RunContext) -> RunResult:
    """Run ``prompt`` on a fresh Executor: nothing is cached between calls. Same errors as Executor.run."""
    return Executor(registry).run(prompt, context)
