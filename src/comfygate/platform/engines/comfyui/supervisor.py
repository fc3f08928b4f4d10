"""A ComfyUI server run as the worker's child process: started, watched, restarted when it dies, stopped.

``<python> main.py --listen 127.0.0.1 --port <port> <args>`` runs in the install's folder; its output goes to
the worker's log line by line. It is ready once GET /system_stats answers. When it dies it is started again on
the same port (so the engine's URL stays the same) after 1, 2, 4 ... 30 s; the wait starts over once a child
has lived a minute.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from comfygate.platform.processes import die_with_parent

__all__ = ["StartFailed", "Supervisor", "free_port"]

log = logging.getLogger(__name__)

STABLE_SECONDS = 60.0  # a child that lived this long resets the restart backoff
MAX_BACKOFF = 30.0
STOP_GRACE = 10.0  # SIGTERM, then SIGKILL after this long
# Reaches ComfyUI directly, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StartFailed(RuntimeError):
    """ComfyUI exited or did not answer in time while starting; the message ends with its last output."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Supervisor:
    def __init__(self, install: Path, python: Path, args: Sequence[str], *, start_timeout: float,
                 port: int | None = None) -> None:
        self.install = install
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [str(python), "main.py", "--listen", "127.0.0.1", "--port", str(self.port), *args]
        self.start_timeout = start_timeout
        self.generation = 0  # counts children that came up; a run started under another one is lost
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._process: subprocess.Popen | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=30)
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Whether ComfyUI answers within ``timeout`` seconds (e.g. after a restart)."""
        return self._ready.wait(timeout)

    def start(self) -> None:
        """Starts ComfyUI and blocks until it answers; raises StartFailed. Then watches it."""
        if not (self.install / "main.py").is_file():
            raise StartFailed(f"COMFYGATE_COMFYUI_DIR {self.install} holds no main.py (is it a ComfyUI install?)")
        self._launch()
        watcher = threading.Thread(target=self._watch, name="comfyui-supervisor", daemon=True)
        watcher.start()
        self._threads.append(watcher)

    def _launch(self) -> None:
        log.info("starting ComfyUI in %s: %s", self.install, " ".join(self.command))
        self._tail.clear()
        try:
            process = subprocess.Popen(self.command, cwd=self.install, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       errors="replace", start_new_session=True,
                                       # SIGKILL when the worker dies, so a worker killed outright (or by
                                       # the OOM killer) leaves no ComfyUI holding its port and GPU memory.
                                       # The threads that start children (the worker's main thread, the
                                       # watcher) live as long as the supervisor.
                                       preexec_fn=die_with_parent(signal.SIGKILL))
        except OSError as exc:
            raise StartFailed(f"cannot start ComfyUI in {self.install} ({' '.join(self.command)}): {exc}") from exc
        self._process = process
        reader = threading.Thread(target=self._read_output, args=(process,), name="comfyui-output", daemon=True)
        reader.start()
        self._threads.append(reader)
        deadline = time.monotonic() + self.start_timeout
        while not self._answers():
            if self._stopping.is_set():
                return
            with contextlib.suppress(subprocess.TimeoutExpired):  # waits on the child: ends when it exits
                process.wait(timeout=min(0.25, max(deadline - time.monotonic(), 0.01)))
            exited = process.poll() is not None
            if exited or time.monotonic() >= deadline:
                self._kill(process)
                reader.join(timeout=5)
                what = (f"exited with code {process.returncode}" if exited
                        else f"did not answer within {self.start_timeout:g} s")
                raise StartFailed(f"ComfyUI in {self.install} ({' '.join(self.command)}) {what}; its last "
                                  f"output:\n" + "".join(self._tail))
        self.generation += 1
        self._ready.set()
        log.info("ComfyUI is up at %s (pid %d)", self.url, process.pid)

    def _answers(self) -> bool:
        try:
            with _OPENER.open(f"{self.url}/system_stats", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _read_output(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self._tail.append(line)
            log.info("comfyui| %s", line.rstrip())

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            process = self._process
            came_up = time.monotonic()
            code = process.wait()
            self._ready.clear()
            if self._stopping.is_set():
                return
            if time.monotonic() - came_up >= STABLE_SECONDS:
                backoff = 1.0
            log.warning("ComfyUI (pid %d) exited with code %s; starting it again in %g s", process.pid, code,
                        backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF)
            try:
                self._launch()
            except StartFailed as exc:
                log.error("%s", exc)  # its process is gone: the loop waits longer and tries again

    def stop(self) -> None:
        """SIGTERM to ComfyUI's process group, SIGKILL after a grace period; no restart after this."""
        self._stopping.set()
        self._ready.clear()
        process = self._process
        if process is not None and process.poll() is None:
            log.info("stopping ComfyUI (pid %d)", process.pid)
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("ComfyUI (pid %d) did not stop in %g s; killing it", process.pid, STOP_GRACE)
                self._kill(process)
        for thread in self._threads:
            thread.join(timeout=5)

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the child leads its session: its children get it too
        os.killpg(process.pid, signum)
