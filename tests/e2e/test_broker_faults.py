"""Broker and database faults lose nothing and stall nothing (issue 12, part 7).

A Redis and a PostgreSQL server of the test's own (``tests/faults``), an API server and two workers on them,
a steady stream of runs while Redis is killed with kill -9 and restarted three times and PostgreSQL is stopped
at once and restarted: every accepted run succeeds, none is left unfinished 30 s after the service is back, no
worker stays frozen, and the API answers 503 with Retry-After while the database is down, then recovers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deployment import Deployment, free_port, wait_for
from faults.play import PhaseReport, play
from faults.scenario import FaultStack, start_fault_stack
from faults.servers import OwnRedis, postgres_bin_dir, redis_server_path
from services import service_missing

pytestmark = pytest.mark.e2e


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[FaultStack]:
    if redis_server_path() is None:
        service_missing("redis-server (to start a Redis of the test's own)", "not installed")
    if postgres_bin_dir() is None:
        service_missing("PostgreSQL's pg_ctl and initdb (to start a server of the test's own)", "not installed")
    stack = start_fault_stack(tmp_path / "data")
    try:
        yield stack
    finally:
        stack.stop()


def _all_succeeded(phase: PhaseReport, what: str) -> None:
    assert phase.accepted > 0, f"no run was accepted during {what}: {phase.answers}"
    assert not phase.lost, f"accepted runs the API no longer knows after {what}: {phase.lost}"
    assert not phase.stuck, f"runs still unfinished 30 s after {what}: {phase.stuck}"
    assert not phase.other_end, f"runs that did not succeed around {what}: {phase.other_end}"
    assert phase.succeeded == phase.accepted
    assert 500 not in phase.answers, f"500 answers during {what}: {phase.answers}"


def test_broker_and_database_restarts_lose_and_stall_no_run(fault_stack: FaultStack) -> None:
    report = play(fault_stack)

    _all_succeeded(report.broker, "three Redis restarts")
    # The broker was down while runs came in, yet each restart's runs ended well within 30 s of it.
    assert all(seconds is not None and seconds < 30 for seconds in report.broker.recovery), report.broker.recovery
    # No worker stays frozen: every worker alive after the last restart takes runs again.
    assert report.live_worker_pids and report.live_worker_pids <= report.burst_worker_pids, (
        f"live workers {report.live_worker_pids}, took the burst: {report.burst_worker_pids}; "
        f"replaced: {report.worker_exits}")

    _all_succeeded(report.database, "a PostgreSQL restart")
    assert 503 in report.ready_while_database_down, report.ready_while_database_down
    assert report.database.answers[503] > 0, f"no 503 while PostgreSQL was down: {report.database.answers}"
    assert report.database.retry_after_missing == 0
    assert report.api_ready_after is not None, "the API's /ready did not answer 200 after PostgreSQL came back"


def test_worker_whose_broker_is_gone_says_so_and_exits(tmp_path: Path) -> None:
    if redis_server_path() is None:
        service_missing("redis-server (to start a Redis of the test's own)", "not installed")
    redis = OwnRedis()
    redis.start()
    health_port = free_port()
    deployment = Deployment(tmp_path / "data", env_overrides={
        "COMFYGATE_BROKER_URL": redis.url, "COMFYGATE_BROKER_LOST_SECONDS": "3",
        "COMFYGATE_WORKER_HEALTH_PORT": str(health_port), "COMFYGATE_POOL": f"lost-{uuid.uuid4().hex[:6]}"})
    try:
        deployment.migrate()
        worker = deployment.start_worker()

        def ready_status() -> int:
            try:
                return requests.get(f"http://127.0.0.1:{health_port}/ready", timeout=2).status_code
            except requests.RequestException:
                return 0

        assert ready_status() == 200
        redis.kill()

        # /ready says 503 (or the probe is gone with the process) and the worker ends with EX_TEMPFAIL.
        wait_for(lambda: ready_status() in (503, 0), 60, "the worker's /ready to stop answering 200")
        wait_for(lambda: worker.poll() is not None, 60, "the worker to exit")
        assert worker.returncode == 75, deployment.log("worker-0.log")[-3000:]
        assert "broker" in deployment.log("worker-0.log")
    finally:
        deployment.stop()
        redis.stop()
