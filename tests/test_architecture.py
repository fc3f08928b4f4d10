"""The boundaries in ARCHITECTURE.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "comfygate"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files_of(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


FORBIDDEN = {
    "comfy_runtime": ("aiohttp", "sqlalchemy", "celery", "kombu", "comfygate.platform", "comfygate.sentinel"),
    "sentinel": ("comfygate.platform", "comfygate.comfy_runtime", "aiohttp", "sqlalchemy", "celery"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_library_packages_stay_libraries(package):
    offenders = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in files_of(package)
        for name in imported_modules(path)
        if name.startswith(FORBIDDEN[package])
    ]
    assert offenders == []


def test_torch_is_imported_only_by_node_packs_the_model_library_and_the_clip_scorer():
    allowed = {"comfy_runtime/nodes", "comfy_runtime/diffusion", "sentinel/clip.py"}
    offenders = []
    for path in SRC.rglob("*.py"):
        relative = str(path.relative_to(SRC))
        if any(relative.startswith(prefix) for prefix in allowed):
            continue
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports inside functions are fine
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] in {"torch", "open_clip"} for n in names):
                    offenders.append(relative)
    assert offenders == []


def test_services_never_import_the_web_framework():
    offenders = [str(p.relative_to(SRC)) for p in files_of("platform/services")
                 if any(n.startswith("aiohttp") for n in imported_modules(p))]
    assert offenders == []


def test_only_settings_reads_the_environment():
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.name != "settings.py" and ("os.environ" in p.read_text() or "os.getenv" in p.read_text())]
    assert offenders == []


def test_building_the_node_registry_does_not_import_the_model_libraries():
    # The API server builds a registry for node schemas at start; diffusers and transformers take seconds to
    # import and are needed only by a worker that runs a diffusion node.
    probe = ("import sys; from comfygate.comfy_runtime import create_registry; "
             "create_registry().schemas(); "
             "print(sorted(m for m in ('diffusers', 'transformers', 'accelerate', 'spandrel') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
