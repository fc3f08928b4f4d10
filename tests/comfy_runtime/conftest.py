import json
from pathlib import Path

import pytest

from comfygate.comfy_runtime import NodeRegistry, create_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE = REPO_ROOT / ".." / "shared" / "reference" / "comfyui-0.3.64-object_info.json"
WORKFLOWS = REPO_ROOT / "workflows"


@pytest.fixture(scope="session")
def registry() -> NodeRegistry:
    return create_registry()


@pytest.fixture(scope="session")
def reference() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"ComfyUI reference object_info not found at {REFERENCE}")
    return json.loads(REFERENCE.read_text())


def run_node(registry: NodeRegistry, class_type: str, **inputs):
    """Call one node's function directly, as the executor would."""
    cls = registry.get(class_type)
    return getattr(cls(), cls.FUNCTION)(**inputs)


def save_prompt(images_link=("1", 0), prefix="out", **empty_inputs) -> dict:
    """EmptyImage -> SaveImage, the smallest runnable prompt."""
    empty = {"width": 8, "height": 8, "batch_size": 1, "color": 0, **empty_inputs}
    return {
        "1": {"class_type": "EmptyImage", "inputs": empty},
        "2": {"class_type": "SaveImage", "inputs": {"images": list(images_link), "filename_prefix": prefix}},
    }
