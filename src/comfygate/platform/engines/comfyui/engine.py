"""The ``comfyui`` engine: runs prompts on a real ComfyUI server on this host, attached by URL or supervised.

One engine per worker process: one client id (a websocket) shared by the worker's threads, each of which
runs its own jobs through :class:`PromptRun`, and one reaper that cleans up after prompts jobs gave up on.
"""

from __future__ import annotations

import logging
import shlex
import sys
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

from comfygate.settings import Settings

from ..base import Capabilities, EngineJob, EngineResult, EngineUnavailable
from .client import ComfyClient, HTTPStatusError, Unreachable
from .paths import ComfyDirs
from .reaper import Reaper
from .run import PromptRun
from .supervisor import StartFailed, Supervisor

__all__ = ["ComfyUIEngine", "ComfyUIStartError"]

log = logging.getLogger(__name__)


class ComfyUIStartError(RuntimeError):
    """ComfyUI could not be started or reached when the engine started."""


class ComfyUIEngine:
    name = "comfyui"

    def __init__(self, url: str | None = None, *, supervisor: Supervisor | None = None,
                 dirs: ComfyDirs | None = None, start_timeout: float = 300.0,
                 unreachable_grace: float = 10.0) -> None:
        """Attach to ComfyUI at ``url``, or run the one ``supervisor`` starts. ``dirs``: its folders, to delete
        a run's files from (None: they stay). ``unreachable_grace``: how long an attached ComfyUI may refuse
        connections mid-run before the run is handed back."""
        if (url is None) == (supervisor is None):
            raise ValueError("ComfyUIEngine needs a url (attach) or a supervisor (start one), not both")
        self.supervisor = supervisor
        self.url = supervisor.url if supervisor is not None else url.rstrip("/")
        self.dirs = dirs
        self.start_timeout = start_timeout
        self.unreachable_grace = unreachable_grace
        self.client = ComfyClient(self.url, uuid.uuid4().hex)
        self.reaper = Reaper(self.client, dirs)
        self._warned_files_left = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ComfyUIEngine:
        args = shlex.split(settings.comfyui_args or "")
        if any(arg.split("=")[0] in ("--listen", "--port") for arg in args):
            raise ValueError("COMFYGATE_COMFYUI_ARGS must not set --listen or --port: the worker sets them")
        install = Path(settings.comfyui_dir) if settings.comfyui_dir else None
        dirs = ComfyDirs.of(install, args) if install is not None else None
        timeout = settings.comfyui_start_timeout_seconds
        if settings.comfyui_url:
            if urlsplit(settings.comfyui_url).scheme not in ("http", "https"):
                raise ValueError(f"COMFYGATE_COMFYUI_URL must be an http:// URL, got {settings.comfyui_url!r}")
            return cls(settings.comfyui_url, dirs=dirs, start_timeout=timeout)
        if install is None:
            raise ValueError("engine comfyui needs COMFYGATE_COMFYUI_URL (a running ComfyUI to attach to) or "
                             "COMFYGATE_COMFYUI_DIR (a ComfyUI install to start); neither is set")
        python = settings.comfyui_python
        if python is None:
            venv_python = install / ".venv" / "bin" / "python"
            python = venv_python if venv_python.exists() else Path(sys.executable)
        return cls(supervisor=Supervisor(install, python, args, start_timeout=timeout), dirs=dirs,
                   start_timeout=timeout)

    # -- Engine --------------------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            if self.supervisor is not None:
                self.supervisor.start()
            self.client.open()
            if not self.client.connected.wait(self.start_timeout):
                raise ComfyUIStartError(f"ComfyUI at {self.url} did not open a websocket within "
                                        f"{self.start_timeout:g} s (COMFYGATE_COMFYUI_URL / _DIR)")
        except StartFailed as exc:
            self.close()
            raise ComfyUIStartError(str(exc)) from exc
        except BaseException:
            self.close()
            raise
        log.info("engine comfyui ready: ComfyUI at %s (%s)", self.url,
                 "supervised" if self.supervisor is not None else "attached")

    def is_ready(self) -> bool:
        supervised_up = self.supervisor is None or self.supervisor.is_ready()
        return supervised_up and self.client.connected.is_set()

    def run(self, job: EngineJob) -> EngineResult:
        return PromptRun(self, job).execute()

    def free_memory(self) -> None:
        try:
            self.client.call("POST", "/free", json={"unload_models": True, "free_memory": True})
        except (Unreachable, HTTPStatusError) as exc:
            raise EngineUnavailable(str(exc)) from exc

    def capabilities(self) -> Capabilities:
        try:
            object_info = self.client.call("GET", "/object_info", timeout=120, expect=dict)
            models: dict[str, list[str]] = {}
            for folder in self.client.call("GET", "/models", expect=list):
                try:
                    models[folder] = self.client.call("GET", f"/models/{quote(str(folder), safe='')}", expect=list)
                except HTTPStatusError:
                    continue  # a folder ComfyUI lists but cannot list files of
        except (Unreachable, HTTPStatusError) as exc:
            raise EngineUnavailable(str(exc)) from exc
        return Capabilities(object_info=object_info, models=models)

    def close(self) -> None:
        self.reaper.close()  # before the client it uses
        self.client.close()
        if self.supervisor is not None:
            self.supervisor.stop()

    # -- for PromptRun -------------------------------------------------------------------------------------------

    def wait_connected(self) -> None:
        if not self.client.connected.wait(self.unreachable_grace):
            raise EngineUnavailable(f"ComfyUI at {self.url} has not been reachable for "
                                    f"{self.unreachable_grace:g} s")

    def generation(self) -> int:
        return self.supervisor.generation if self.supervisor is not None else 0

    def check_alive(self, generation: int) -> None:
        """Raises EngineUnavailable once the supervised ComfyUI that got the prompt died (its queue with it)."""
        supervisor = self.supervisor
        if supervisor is not None and (not supervisor.is_ready() or supervisor.generation != generation):
            raise EngineUnavailable(f"ComfyUI in {supervisor.install} died while running a prompt; it is being "
                                    "started again")

    def warn_files_left(self) -> None:
        if not self._warned_files_left:
            self._warned_files_left = True
            log.warning("engine comfyui cannot delete the files runs leave in ComfyUI's input, output and temp "
                        "folders: set COMFYGATE_COMFYUI_DIR to its install to have them deleted")
