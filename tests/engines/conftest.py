"""Fixtures: ComfyUI stand-in processes and engines attached to them (helpers in comfyui_process.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from comfyui_process import attached

from comfygate.platform.engines.comfyui import ComfyUIEngine
from comfyui_standin import StandinProcess, start_standin


@pytest.fixture
def own_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., StandinProcess]]:
    """Starts a stand-in of the test's own (options as for start_standin), stopped after the test."""
    started: list[StandinProcess] = []

    def start(**options: object) -> StandinProcess:
        started.append(start_standin(tmp_path_factory.mktemp("comfyui"), **options))
        return started[-1]

    yield start
    for standin in started:
        standin.stop()


@pytest.fixture(scope="module")
def shared_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinProcess]:
    """One stand-in for the tests that leave nothing behind that another would see."""
    standin = start_standin(tmp_path_factory.mktemp("comfyui-shared"))
    yield standin
    standin.stop()


@pytest.fixture
def engine(shared_standin: StandinProcess) -> Iterator[ComfyUIEngine]:
    engine = attached(shared_standin)
    yield engine
    engine.close()
