"""End-to-end fixtures: real comfygate processes on loopback, talked to over HTTP as a user would.

``production`` (module scope) starts stacks shaped like a production install: PostgreSQL (a fresh database),
Redis as the Celery broker, outputs on the loopback S3 server, ``comfygate serve --no-worker`` and separate
``comfygate worker`` processes. ``embedded`` starts the zero-setup default (SQLite, filesystem broker, local
files, ``comfygate serve --worker``). Both load the test node pack ``tests/nodepacks/slow_nodes.py`` and use
a fast watchdog, so a killed worker is noticed within seconds.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import requests
from PIL import Image

from deployment import Deployment, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO_ROOT / "workflows"
NODE_PACKS_DIR = REPO_ROOT / "tests" / "nodepacks"

TERMINAL = ("succeeded", "rejected", "failed", "canceled")

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
    """EmptyImage -> SlowPassImage(seconds) -> SaveImage: a run that stays 'running' as long as we ask."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": height, "batch_size": 1, "color": 3355443}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
        "3": {"class_type": "SlowPassImage", "inputs": {"image": ["2", 0], "seconds": 1.0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "slow"}},
    }


SLOW_INPUTS = {"seconds": {"node": "3", "input": "seconds"}, "color": {"node": "1", "input": "color"}}


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


def _stop(stack: Stack) -> None:
    stack.deployment.stop()


@pytest.fixture(scope="module")
def production(postgres_server: str, redis_url: str, s3_server: str, aws_test_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """``start(**env) -> Stack``: a migrated production-shaped install with its API server up, no workers
    yet (``stack.deployment.start_worker()``). Everything it started is stopped and dropped at module end."""
    started: list[tuple[Stack, str]] = []

    def start(**env: str) -> Stack:
        db_name = f"comfygate_e2e_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db_name}"')
        database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
        bucket = f"e2e-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
        deployment = Deployment(tmp_path_factory.mktemp("production"), env_overrides={
            "COMFYGATE_DATABASE_URL": database_url,
            "COMFYGATE_BROKER_URL": redis_url,
            "COMFYGATE_STORAGE_URL": f"s3://{bucket}/comfygate",
            "COMFYGATE_S3_ENDPOINT_URL": s3_server,
            "COMFYGATE_NODE_PACKS": "slow_nodes",
            "PYTHONPATH": os.pathsep.join([str(NODE_PACKS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]),
            **FAST_WATCHDOG,
            **env,
        })
        stack = Stack(deployment, database_url)
        started.append((stack, db_name))
        deployment.migrate()
        deployment.start_server(with_worker=False)
        assert deployment.admin_key, f"no admin key printed on first start:\n{deployment.log('server.log')}"
        return stack

    yield start
    for stack, db_name in started:
        _stop(stack)
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    """The zero-setup default: ``comfygate serve`` with its supervised local worker, SQLite, files on disk."""
    deployment = Deployment(tmp_path / "data", env_overrides={
        "COMFYGATE_NODE_PACKS": "slow_nodes",
        "PYTHONPATH": os.pathsep.join([str(NODE_PACKS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]),
        **FAST_WATCHDOG,
    })
    stack = Stack(deployment, f"sqlite:///{deployment.data_dir / 'comfygate.db'}")
    try:
        deployment.migrate()
        deployment.start_server(with_worker=True)
        yield stack
    finally:
        _stop(stack)
