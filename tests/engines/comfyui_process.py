"""Helpers for tests of the comfyui engine against the ComfyUI stand-in (tests/comfyui_standin), a real server
process built from recordings of ComfyUI 0.3.64; fixtures are in conftest.py."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from comfygate.platform.engines.comfyui import ComfyDirs, ComfyUIEngine
from comfyui_standin import StandinProcess

__all__ = ["attached", "dirs_of", "files_in", "post"]

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def dirs_of(standin: StandinProcess) -> ComfyDirs:
    return ComfyDirs(input=standin.input_dir, output=standin.output_dir, temp=standin.temp_dir)


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def post(standin: StandinProcess, path: str) -> int:
    request = urllib.request.Request(standin.url + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with _opener.open(request, timeout=10) as response:
        return response.status


def attached(standin: StandinProcess, **kwargs: object) -> ComfyUIEngine:
    """An engine attached to the stand-in, started, knowing its folders."""
    engine = ComfyUIEngine(standin.url, dirs=dirs_of(standin), start_timeout=30, **kwargs)
    engine.start()
    return engine
