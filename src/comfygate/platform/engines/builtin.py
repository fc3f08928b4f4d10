"""The built-in engine: comfygate's own executor in the worker process (the embedded default).

Its node cache and model pool live as long as the worker, so an unchanged loader is not run again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from comfygate.comfy_runtime import Executor, NodeExecutionError, NodeRegistry, RunCanceled, RunContext

from .base import (
    Capabilities,
    EngineJob,
    EngineOutput,
    EngineResult,
    OutOfMemory,
    RunInterrupted,
    is_out_of_memory_type,
)

__all__ = ["BuiltinEngine"]


class BuiltinEngine:
    name = "builtin"

    def __init__(self, registry: NodeRegistry, *, cache_entries: int) -> None:
        self.registry = registry
        self.executor = Executor(registry, cache_entries=cache_entries)

    def start(self) -> None:
        pass  # the registry is built; models load on first use or at preload

    def is_ready(self) -> bool:
        return True

    def run(self, job: EngineJob) -> EngineResult:
        with tempfile.TemporaryDirectory(prefix="cg-inputs-") as tmp:
            input_dir = Path(tmp)
            for name, data in job.input_files.items():
                path = input_dir / name  # names were checked safe when the run was created
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            context = RunContext(input_dir=input_dir, on_event=job.on_event,
                                 should_cancel=lambda: job.stop_reason() is not None, run_id=job.run_id)
            try:
                result = self.executor.run(job.prompt, context)
            except RunCanceled as exc:
                raise RunInterrupted(job.stop_reason() or "canceled", exc.node_id, str(exc)) from exc
            except NodeExecutionError as exc:
                if is_out_of_memory_type(exc.exception_type):
                    raise OutOfMemory(exc.node_id, exc.class_type, exc.message, exc.exception_type,
                                      traceback=exc.traceback) from exc
                raise
        outputs = [EngineOutput(node_id=o.node_id, class_type=o.class_type,
                                filename=f"{o.filename_prefix}_{o.index:05d}_.png", data=o.png,
                                content_type="image/png", width=o.width, height=o.height, pixels=o.pixels)
                   for o in result.outputs]
        return EngineResult(outputs, execute_ms=result.execute_ms, node_ms=result.node_ms,
                            cached_nodes=result.cached_nodes, model_load_ms=result.model_load_ms,
                            model_loads=result.model_loads)

    def free_memory(self) -> None:
        # The executor already emptied its cache when the error happened; idle models go too.
        self.executor.free_cache()
        if self.registry.models is not None:
            self.registry.models.free_idle()

    def capabilities(self) -> Capabilities:
        models: dict[str, list[str]] = {}
        if self.registry.models is not None:
            paths = self.registry.models.paths
            models = {kind: paths.list_files(kind) for kind in paths.kinds()}
        return Capabilities(object_info=self.registry.schemas().object_info(), models=models)

    def close(self) -> None:
        pass
