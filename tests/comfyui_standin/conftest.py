"""One stand-in process shared by the stand-in's tests (each test uses its own prompts, colors and prefixes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfyui_standin import StandinProcess, standin_process


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinProcess]:
    base = tmp_path_factory.mktemp("comfyui")
    # The checkpoint the recordings' server had: a name in CheckpointLoaderSimple's list (never loaded here).
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "random-sd15.safetensors").write_bytes(b"")
    with standin_process(base) as process:
        yield process
