"""Starting the stand-in as a real process on loopback, and fake ComfyUI install folders that start it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StandinProcess", "make_install", "standin_process", "start_standin", "wait_ready"]

TESTS_DIR = Path(__file__).resolve().parent.parent
READY_LINE = re.compile(r"To see the GUI go to: http://[^:\s]+:(\d+)")
START_TIMEOUT_SECONDS = 90.0
INSTALL_FOLDERS = ("input", "output", "custom_nodes", "models/checkpoints", "models/vae", "models/loras",
                   "models/diffusion_models", "models/text_encoders", "models/upscale_models", "models/embeddings",
                   "models/configs")
MAIN_PY = '''"""ComfyUI's main.py in a fake install: starts comfygate's ComfyUI stand-in (tests/comfyui_standin)."""
import sys
from pathlib import Path

sys.path.insert(0, {tests_dir!r})

from comfyui_standin.__main__ import main

main(default_base=Path(__file__).resolve().parent)
'''


@dataclass
class StandinProcess:
    """A running stand-in: its URL, folders and process (killed or stopped by the caller)."""

    base_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.base_dir / "temp"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash: sockets reset, the port refuses connections, the in-memory history is gone."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/system_stats", timeout=2) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_standin(base_dir: Path, *, port: int = 0, history_lag_ms: int = 0, object_info: Path | None = None,
                  extra_args: Sequence[str] = ()) -> StandinProcess:
    """Start ``python -m comfyui_standin`` with its install in ``base_dir``; return once /system_stats answers.
    ``port=0`` lets the server pick a free port (read back from its start-up line)."""
    base_dir = Path(base_dir).absolute()
    base_dir.mkdir(parents=True, exist_ok=True)
    args = ["--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base_dir),
            "--history-lag-ms", str(history_lag_ms), *(["--object-info", str(object_info)] if object_info else []),
            *extra_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log_path = base_dir / f"standin-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "comfyui_standin", *args], cwd=base_dir, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return wait_ready(StandinProcess(base_dir, port, process, log_path))


def wait_ready(standin: StandinProcess) -> StandinProcess:
    """Wait until the process printed its start-up line and /system_stats answers (its port is then known)."""
    process = standin.process
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        found = READY_LINE.search(standin.logs())
        if found and _answers(f"http://127.0.0.1:{found.group(1)}"):
            standin.port = int(found.group(1))
            return standin
        if time.monotonic() > deadline:
            standin.kill()
            raise TimeoutError(f"the stand-in did not answer within {START_TIMEOUT_SECONDS} s:\n{standin.logs()}")
        try:  # waiting on the process is the pause between checks, and notices a crash at once
            process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"the stand-in exited with status {process.returncode}:\n{standin.logs()}")


@contextmanager
def standin_process(base_dir: Path, **options) -> Iterator[StandinProcess]:  # type: ignore[no-untyped-def]
    """A stand-in for the block (options as for :func:`start_standin`), stopped afterwards."""
    standin = start_standin(base_dir, **options)
    try:
        yield standin
    finally:
        standin.stop()


def make_install(directory: Path) -> Path:
    """A fake ComfyUI install: ``main.py`` (starting the stand-in, base directory = its folder) and the usual
    folders. Start it as ComfyUI: ``<python> main.py --listen 127.0.0.1 --port N ...`` with cwd=directory."""
    directory = Path(directory).absolute()
    for folder in INSTALL_FOLDERS:
        (directory / folder).mkdir(parents=True, exist_ok=True)
    main_py = directory / "main.py"
    main_py.write_text(MAIN_PY.format(tests_dir=str(TESTS_DIR)))
    return directory
