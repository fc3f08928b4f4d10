"""What the end-to-end tests share: example workflows, images, and ``Stack``, a running install with the
checks a user or an operator makes on it (HTTP calls, ``comfygate keys create``, a look at the run table).
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests
from PIL import Image

from deployment import Deployment, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO_ROOT / "workflows"
NODE_PACKS_DIR = REPO_ROOT / "tests" / "nodepacks"

# "held": an output fell in a review band and waits for a person; the worker is done with the run.
TERMINAL = ("succeeded", "rejected", "held", "failed", "canceled")

# Heartbeats every 0.3 s; a run silent for 2 s is taken as lost; the watchdog looks twice a second.
FAST_WATCHDOG = {
    "COMFYGATE_HEARTBEAT_SECONDS": "0.3",
    "COMFYGATE_STALE_AFTER_SECONDS": "2",
    "COMFYGATE_WATCHDOG_SECONDS": "0.5",
    "COMFYGATE_MAX_ATTEMPTS": "2",
}


def load_workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / name).read_text())


def slow_workflow(width: int = 48, height: int = 40) -> dict[str, Any]:
    """A card on a background -> SlowPassImage(seconds) -> SaveImage: passes the gate, and stays 'running'
    as long as we ask."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": height, "batch_size": 1, "color": 0x1E3A5F}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 12, "batch_size": 1, "color": 0xF0C040}},
        "3": {"class_type": "ImageCompositeMasked",
              "inputs": {"destination": ["1", 0], "source": ["2", 0], "x": 8, "y": 8, "resize_source": False}},
        "4": {"class_type": "ImageBlur", "inputs": {"image": ["3", 0], "blur_radius": 2, "sigma": 1.0}},
        "5": {"class_type": "SlowPassImage", "inputs": {"image": ["4", 0], "seconds": 1.0}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "slow"}},
    }


SLOW_INPUTS = {"seconds": {"node": "5", "input": "seconds"}, "color": {"node": "1", "input": "color"}}
# Runs that differ only in how long they wait draw the same picture: repeats are expected, not duplicates.
SLOW_POLICY = {"checks": {"duplicate": "off"}}


def gradient_png(width: int = 64, height: int = 48) -> bytes:
    """A structured image (gradients and a block): neither blank nor noise, so it passes the gate."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 255 // (width - 1), y * 255 // (height - 1), 40) for y in range(height)
                   for x in range(width)])
    image.paste((250, 250, 250), (width // 4, height // 4, width // 2, height // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Stack:
    """One running comfygate installation and the checks a user (or an operator) can make on it."""

    deployment: Deployment
    database_url: str  # SQLAlchemy URL

    @property
    def base_url(self) -> str:
        return self.deployment.base_url

    def logs(self) -> str:
        names = ["server.log", *(f"worker-{i}.log" for i in range(len(self.deployment.workers)))]
        return "\n".join(f"--- {n} (tail) ---\n{self.deployment.log(n)[-4000:]}" for n in names)

    def explain(self, body: object) -> str:
        return f"{json.dumps(body, indent=1)[:3000]}\n{self.logs()}"

    # --- HTTP ---------------------------------------------------------------------------------------

    def post(self, path: str, body: object, key: str | None = None, **kwargs: Any) -> requests.Response:
        return self.deployment.post(path, body, key, **kwargs)

    def get(self, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
        return self.deployment.get(path, key, **kwargs)

    def push(self, name: str, workflow: object, inputs: object = None, **extra: Any) -> requests.Response:
        body: dict[str, Any] = {"name": name, "workflow": workflow, **extra}
        if inputs is not None:
            body["inputs"] = inputs
        return self.post("/v1/workflows", body)

    def push_ok(self, name: str, workflow: object, inputs: object = None, **extra: Any) -> dict[str, Any]:
        response = self.push(name, workflow, inputs, **extra)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def submit(self, workflow: str, inputs: dict[str, Any] | None = None) -> str:
        response = self.post(f"/v1/workflows/{workflow}/runs", {"inputs": inputs or {}})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, run_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 40
                    ) -> dict[str, Any]:
        """The run once its status is one of ``statuses`` (long-polling with ?wait while it is not)."""
        seen: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            wait = "?wait=2" if set(statuses) <= set(TERMINAL) else ""
            response = self.get(f"/v1/runs/{run_id}{wait}")
            assert response.status_code == 200, response.text
            seen["run"] = response.json()
            return seen["run"] if seen["run"]["status"] in statuses else None

        try:
            return wait_for(reached, timeout, f"run {run_id} to reach {statuses}", interval=0.05)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; last seen:\n{self.explain(seen.get('run'))}") from exc

    # --- operator's side ----------------------------------------------------------------------------

    def create_key(self, name: str, *, admin: bool = False) -> str:
        """``comfygate keys create NAME`` as an operator runs it; returns the secret it prints once."""
        args = [sys.executable, "-m", "comfygate", "keys", "create", name, *(["--admin"] if admin else [])]
        done = subprocess.run(args, env=self.deployment.env, cwd=self.deployment.data_dir, capture_output=True,
                              text=True, timeout=60, check=True)
        return done.stdout.strip().splitlines()[-1]

    def count_runs(self) -> int:
        """Rows in the run table, read straight from the database (what was queued, whatever the API says)."""
        if self.database_url.startswith("sqlite:///"):
            with sqlite3.connect(self.database_url.removeprefix("sqlite:///")) as conn:
                return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        with psycopg.connect(self.database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            row = conn.execute("SELECT count(*) FROM runs").fetchone()
            assert row is not None
            return int(row[0])


def worker_children(server_pid: int) -> list[int]:
    """Pids of the ``comfygate worker`` processes that the server at ``server_pid`` started (from /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        try:
            children += [int(pid) for pid in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended while we looked
            continue
    workers = []
    for pid in children:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"comfygate" in argv and b"worker" in argv:
            workers.append(pid)
    return workers
