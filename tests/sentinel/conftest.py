from __future__ import annotations

from pathlib import Path

import pytest
from tiny_clip import build_tiny_clip

from comfygate.sentinel import ClipScorer


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(model name, weights path) of a tiny open_clip model trained on solid colours (~10 s on CPU)."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_clip_scorer(tiny_clip: tuple[str, Path]) -> ClipScorer:
    name, weights_path = tiny_clip
    return ClipScorer(name, weights_path)
