from __future__ import annotations

from pathlib import Path

import pytest

from comfygate.sentinel import ClipScorer


@pytest.fixture(scope="session")
def tiny_clip_scorer(tiny_clip: tuple[str, Path]) -> ClipScorer:
    name, weights_path = tiny_clip
    return ClipScorer(name, weights_path)
