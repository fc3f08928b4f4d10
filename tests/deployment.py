"""Start real comfygate processes on loopback for tests and benchmarks.

``Deployment`` is one comfygate installation: an environment (settings), a migrated database, an API server
process and zero or more worker processes, each logging to a file in the data dir.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

__all__ = ["Deployment", "free_port", "wait_for"]

REPO_ROOT = Path(__file__).resolve().parent.parent
RATE_LIMIT_VARIABLES = ("COMFYGATE_RATE_LIMIT_REQUESTS_PER_SECOND", "COMFYGATE_RATE_LIMIT_RUNS_PER_MINUTE",
                        "COMFYGATE_RATE_LIMIT_CONCURRENT_RUNS", "COMFYGATE_RATE_LIMIT_RUNS_PER_DAY")
_NAMING = threading.Lock()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        # A short pause on a deadline: what we wait for happens in another process.
        threading.Event().wait(interval)


@dataclass
class Deployment:
    data_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    admin_key: str = ""
    admin_password: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYGATE_")}
        env.update({
            "COMFYGATE_DATA_DIR": str(self.data_dir),
            "COMFYGATE_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        })
        # Rate limits off unless a test sets them: tests and benchmarks send bursts of runs and polls from one
        # key, and are not about the limits (tests/platform/test_rate_limits.py is).
        env.update(dict.fromkeys(RATE_LIMIT_VARIABLES, "0"))
        env.update(self.env_overrides)
        return env

    def __post_init__(self) -> None:
        # The pool name is fixed once so the server and all workers share one queue.
        self.env_overrides.setdefault("COMFYGATE_POOL", f"test-{uuid.uuid4().hex[:8]}")
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _comfygate(self, *args: str, log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / log_name, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        return subprocess.Popen([sys.executable, "-m", "comfygate", *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=self.data_dir, start_new_session=True)

    def log(self, name: str) -> str:
        path = self.data_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def migrate(self) -> None:
        subprocess.run([sys.executable, "-m", "comfygate", "db", "upgrade"], env=self.env, check=True,
                       capture_output=True)

    def start_server(self, *, with_worker: bool = False, timeout: float = 60) -> None:
        self.server = self._comfygate("serve", "--worker" if with_worker else "--no-worker",
                                      log_name="server.log")

        def healthy() -> bool:
            if self.server is not None and self.server.poll() is not None:
                raise RuntimeError(f"server exited with {self.server.returncode}:\n{self.log('server.log')}")
            try:
                return requests.get(self.base_url + "/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_for(healthy, timeout, "the API server to answer /healthz")
        log = self.log("server.log")
        key = re.search(r"API key:\s+(\S+)", log)
        password = re.search(r"password:\s+(\S+)", log)
        if key and password:
            self.admin_key, self.admin_password = key.group(1), password.group(1)
        if with_worker:
            wait_for(lambda: " ready." in self.log("server.log"), timeout, "the embedded worker")

    def start_worker(self, *args: str, timeout: float = 60) -> subprocess.Popen[bytes]:
        """``comfygate worker *args``; returns once Celery consumes (after any --preload)."""
        with _NAMING:  # workers may be started from several threads (tests/faults restarts them side by side)
            name = f"worker-{len(self.workers)}.log"
            worker = self._comfygate("worker", *args, log_name=name)
            self.workers.append(worker)

        def ready() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}:\n{self.log(name)}")
            return " ready." in self.log(name)

        wait_for(ready, timeout, "the worker to be ready")
        return worker

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process group: no cleanup, as in a crash or an OOM kill."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in [*self.workers, self.server]:
            if process is None or process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.server]:
            if process is None:
                continue
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    # --- a tiny client ----------------------------------------------------------------------------------

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    def post(self, path: str, body: object, key: str | None = None, **kwargs: object) -> requests.Response:
        return requests.post(self.base_url + path, json=body, headers=self.headers(key), timeout=90, **kwargs)

    def get(self, path: str, key: str | None = None, **kwargs: object) -> requests.Response:
        return requests.get(self.base_url + path, headers=self.headers(key), timeout=90, **kwargs)
