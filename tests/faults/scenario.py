"""The broker and database fault scenario: a production-shaped comfygate (API server, two workers) on a Redis and
a PostgreSQL of its own, a steady stream of runs, Redis killed with kill -9 and started again, PostgreSQL
stopped at once and started again, and what became of every run.

Used by ``tests/e2e/test_broker_faults.py`` (which asserts) and ``bench/faults.py`` (which prints figures).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from deployment import REPO_ROOT, Deployment, wait_for
from faults.servers import OwnPostgres, OwnRedis

__all__ = ["CARD_WORKFLOW", "ENDED", "FaultStack", "Outage", "RunStream", "Settled", "WorkerSlots",
           "database_ready", "kill_and_restart", "settle", "start_fault_stack", "workers_of"]

ENDED = ("succeeded", "rejected", "held", "failed", "canceled")

# A card on a background, blurred, held for a quarter second (the test node pack's SlowPassImage): passes the
# gate, and runs last long enough that some end while the broker is down (their acks fail: the case that used
# to freeze workers for good).
CARD_WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1, "color": 0x1E3A5F}},
    "2": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 12, "batch_size": 1, "color": 0xF0C040}},
    "3": {"class_type": "ImageCompositeMasked",
          "inputs": {"destination": ["1", 0], "source": ["2", 0], "x": 8, "y": 8, "resize_source": False}},
    "4": {"class_type": "ImageBlur", "inputs": {"image": ["3", 0], "blur_radius": 2, "sigma": 1.0}},
    "5": {"class_type": "SlowPassImage", "inputs": {"image": ["4", 0], "seconds": 0.25}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "card"}},
}
CARD_INPUTS = {"color": {"node": "1", "input": "color"}}
# Every run draws nearly the same picture: repeats are expected, not duplicates.
CARD_POLICY = {"checks": {"duplicate": "off"}}

FAULT_ENV = {
    "COMFYGATE_NODE_PACK_DIRS": str(REPO_ROOT / "tests" / "nodepacks"),
    # A worker that gets nothing from the broker for 8 s is replaced (the default is 30 s).
    "COMFYGATE_BROKER_LOST_SECONDS": "8",
    "COMFYGATE_HEARTBEAT_SECONDS": "0.5",
    "COMFYGATE_WATCHDOG_SECONDS": "1",
    "COMFYGATE_WORKER_CONCURRENCY": "1",
    # Rate limits would refuse the stream; they are not what this scenario is about.
    "COMFYGATE_RATE_LIMIT_REQUESTS_PER_SECOND": "0",
    "COMFYGATE_RATE_LIMIT_RUNS_PER_MINUTE": "0",
    "COMFYGATE_RATE_LIMIT_CONCURRENT_RUNS": "0",
    "COMFYGATE_RATE_LIMIT_RUNS_PER_DAY": "0",
}


class WorkerSlots:
    """N worker processes kept running as a supervisor (systemd, Kubernetes) would: one that exits is started
    again. ``exits`` records (pid, exit code) of each one that ended."""

    def __init__(self, deployment: Deployment, count: int) -> None:
        self.deployment = deployment
        self.slots = [deployment.start_worker() for _ in range(count)]
        self.exits: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_running, name="worker-slots", daemon=True)
        self._thread.start()

    def _keep_running(self) -> None:
        while not self._stop.wait(0.5):
            exited = [index for index, worker in enumerate(self.slots) if worker.poll() is not None]
            # Started side by side, as systemd or Kubernetes would: each start waits until its worker is ready.
            starts = [threading.Thread(target=self._replace, args=(index,)) for index in exited]
            for start in starts:
                start.start()
            for start in starts:
                start.join()

    def _replace(self, index: int) -> None:
        worker = self.slots[index]
        self.exits.append((worker.pid, worker.returncode))
        if not self._stop.is_set():
            self.slots[index] = self.deployment.start_worker()

    def live_pids(self) -> set[int]:
        return {worker.pid for worker in self.slots if worker.poll() is None}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


@dataclass
class FaultStack:
    deployment: Deployment
    redis: OwnRedis
    postgres: OwnPostgres
    database_url: str = ""
    workers: WorkerSlots | None = None

    def stop(self) -> None:
        if self.workers is not None:
            self.workers.stop()
        self.deployment.stop()
        self.redis.stop()
        self.postgres.stop()


def start_fault_stack(data_dir: Path, workers: int = 2) -> FaultStack:
    """Own Redis and PostgreSQL, a migrated database, ``serve --no-worker`` and ``workers`` worker slots, with
    the card workflow pushed."""
    redis, postgres = OwnRedis(), OwnPostgres()
    stack = FaultStack(Deployment(data_dir), redis, postgres)
    try:
        redis.start()
        postgres.init()
        postgres.start()
        stack.database_url = database_url = postgres.create_database(f"comfygate_{uuid.uuid4().hex[:8]}")
        stack.deployment.env_overrides.update({**FAULT_ENV, "COMFYGATE_DATABASE_URL": database_url,
                                               "COMFYGATE_BROKER_URL": redis.url})
        stack.deployment.migrate()
        stack.deployment.start_server(with_worker=False)
        stack.workers = WorkerSlots(stack.deployment, workers)
        pushed = stack.deployment.post("/v1/workflows", {"name": "card", "workflow": CARD_WORKFLOW,
                                                         "inputs": CARD_INPUTS, "policy": CARD_POLICY})
        assert pushed.status_code in (200, 201), pushed.text
    except BaseException:
        stack.stop()
        raise
    return stack


class RunStream:
    """A client thread that starts a run every ``1 / rate`` s and remembers what the API answered."""

    def __init__(self, deployment: Deployment, rate: float = 3.0) -> None:
        self.deployment = deployment
        self.interval = 1.0 / rate
        self.accepted: dict[str, float] = {}  # run id -> when it was accepted (time.time())
        self.answers: Counter[int] = Counter()  # HTTP status -> count (0: no answer)
        self.retry_after_missing = 0  # 503s without a Retry-After header
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._submit, name="run-stream", daemon=True)

    def start(self) -> RunStream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _submit(self) -> None:
        number = 0
        while not self._stop.wait(self.interval):
            number += 1
            try:
                response = requests.post(self.deployment.base_url + "/v1/workflows/card/runs",
                                         json={"inputs": {"color": number % 0xFFFFFF}},
                                         headers=self.deployment.headers(), timeout=15)
            except requests.RequestException:
                self.answers[0] += 1
                continue
            self.answers[response.status_code] += 1
            if response.status_code == 202:
                self.accepted[response.json()["id"]] = time.time()
            elif response.status_code == 503 and "Retry-After" not in response.headers:
                self.retry_after_missing += 1


@dataclass
class Outage:
    """One fault: when the service went down and when it was back (time.time())."""

    what: str
    down_at: float
    back_at: float


def kill_and_restart(outage_what: str, kill: Any, start: Any, down_seconds: float) -> Outage:
    down_at = time.time()
    kill()
    time.sleep(down_seconds)
    start()
    return Outage(outage_what, down_at, time.time())


@dataclass
class Settled:
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> its last body (None: 404)
    lost: list[str] = field(default_factory=list)  # accepted, then unknown to the API

    def with_status(self, *statuses: str) -> list[str]:
        return [run_id for run_id, run in self.runs.items() if run["status"] in statuses]

    def unfinished(self) -> list[str]:
        return [run_id for run_id, run in self.runs.items() if run["status"] not in ENDED]

    def finished_at(self, run_id: str) -> float | None:
        stamp = self.runs[run_id].get("finished_at")
        if not stamp:
            return None
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()

    def recovery_seconds(self, outage: Outage, accepted: dict[str, float]) -> float | None:
        """Seconds from the service being back to the last run finishing among those accepted before it was
        back that had not finished when it went down; None when no run was affected."""
        affected = [self.finished_at(run_id) for run_id, at in accepted.items()
                    if at <= outage.back_at and run_id in self.runs
                    and (self.finished_at(run_id) is None or self.finished_at(run_id) >= outage.down_at)]
        if not affected:
            return None
        if any(end is None for end in affected):
            return float("inf")
        return max(0.0, max(end for end in affected if end is not None) - outage.back_at)


def settle(deployment: Deployment, run_ids: list[str], timeout: float) -> Settled:
    """Poll until every run ended (or ``timeout`` s passed); the runs as the API shows them."""
    settled = Settled()
    pending = set(run_ids)

    def all_ended() -> bool:
        for run_id in list(pending):
            response = deployment.get(f"/v1/runs/{run_id}")
            if response.status_code == 404:
                settled.lost.append(run_id)
                pending.discard(run_id)
                continue
            if response.status_code != 200:
                return False  # e.g. 503 while a fault lasts: ask again
            settled.runs[run_id] = response.json()
            if settled.runs[run_id]["status"] in ENDED:
                pending.discard(run_id)
        return not pending

    with contextlib.suppress(TimeoutError):  # what did not end is the caller's to report
        wait_for(all_ended, timeout, "every accepted run to end", interval=0.5)
    return settled


def database_ready(deployment: Deployment) -> int:
    """The API's /ready status (0: no answer)."""
    try:
        return requests.get(deployment.base_url + "/ready", timeout=5).status_code
    except requests.RequestException:
        return 0


def workers_of(database_url: str, run_ids: list[str]) -> dict[str, str | None]:
    """The worker (host:pid) that ran each run, read straight from the run table."""
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT id, worker FROM runs WHERE id = ANY(%s)", (run_ids,)).fetchall()
    return {run_id: worker for run_id, worker in rows}
