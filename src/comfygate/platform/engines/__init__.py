"""Engines: what runs a worker's prompts. ``builtin`` is comfygate's own executor (the default, no ComfyUI
needed); ``comfyui`` drives a real ComfyUI server on the same host, attached by URL or supervised as a child
process. The worker talks to both through :class:`Engine` (base.py)."""

from __future__ import annotations

from comfygate.comfy_runtime import NodeRegistry
from comfygate.settings import Settings

from .base import (
    FILE_INPUTS,
    Capabilities,
    Engine,
    EngineJob,
    EngineOutput,
    EngineResult,
    EngineUnavailable,
    OutOfMemory,
    RunInterrupted,
)
from .builtin import BuiltinEngine

__all__ = ["ENGINES", "FILE_INPUTS", "Capabilities", "Engine", "EngineJob", "EngineOutput", "EngineResult",
           "EngineUnavailable", "OutOfMemory", "RunInterrupted", "create_engine"]

ENGINES = ("builtin", "comfyui")


def create_engine(settings: Settings, registry: NodeRegistry) -> Engine:
    """The engine ``settings.engine`` names, not started yet."""
    if settings.engine == "comfyui":
        from .comfyui import ComfyUIEngine  # aiohttp client code only workers on ComfyUI need

        return ComfyUIEngine.from_settings(settings)
    return BuiltinEngine(registry, cache_entries=settings.node_cache_entries)
