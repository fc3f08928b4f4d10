"""The runtime pieces a server or worker process builds from settings: the model library and node registry."""

from __future__ import annotations

from comfygate.comfy_runtime import NodeRegistry, create_registry
from comfygate.comfy_runtime.diffusion.library import ModelLibrary
from comfygate.comfy_runtime.diffusion.model_paths import ModelPaths
from comfygate.settings import Settings

__all__ = ["model_library", "node_registry"]

MIB = 1024 * 1024


def model_library(settings: Settings) -> ModelLibrary:
    """The model files of ``settings`` and, once a node loads one, the process's warm pool."""
    assert settings.models_dir is not None  # Settings fills it in
    paths = ModelPaths(settings.models_dir, settings.extra_model_paths)
    return ModelLibrary(paths, device=settings.device, dtype=settings.dtype,
                        budget_bytes=settings.model_memory_mb * MIB)


def node_registry(settings: Settings) -> NodeRegistry:
    """Built-in nodes (loaders bound to this process's model library) and the configured node packs."""
    return create_registry(settings.node_pack_dirs, models=model_library(settings))
