"""Shared by the benchmarks: tests/deployment.py (real comfygate processes on loopback), loaded by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["REPO_ROOT", "load_deployment"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_deployment() -> ModuleType:
    """tests/deployment.py as a module (the tests folder is not a package on sys.path)."""
    path = REPO_ROOT / "tests" / "deployment.py"
    spec = importlib.util.spec_from_file_location("comfygate_bench_deployment", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
