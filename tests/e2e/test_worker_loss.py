"""A worker killed mid-run (SIGKILL: no cleanup, as in an OOM kill or a lost host) must not lose the run.

Production shape: Redis broker, PostgreSQL, S3, a fast watchdog (heartbeat 0.3 s, stale after 2 s, swept
every 0.5 s, at most 2 attempts). Redis keeps the killed worker's unacknowledged message for an hour, so the
run comes back only because the run table says its worker went silent and the watchdog re-queued it.
"""

from __future__ import annotations

import pytest
from e2e_support import SLOW_INPUTS, SLOW_POLICY, Stack, decode_png, slow_workflow

from deployment import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(production) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = production()
    stack.push_ok("slow", slow_workflow(64, 40), SLOW_INPUTS, policy=SLOW_POLICY)
    return stack


def _kill_live_workers(stack: Stack) -> None:
    for worker in stack.deployment.workers:
        if worker.poll() is None:
            stack.deployment.kill(worker)


def test_run_on_a_killed_worker_is_retried_on_another(stack: Stack) -> None:
    _kill_live_workers(stack)
    worker_a = stack.deployment.start_worker()
    run_id = stack.submit("slow", {"seconds": 3.0})
    running = stack.wait_status(run_id, ("running",), timeout=20)
    assert running["attempt"] == 1

    stack.deployment.kill(worker_a)
    stack.deployment.start_worker()

    run = stack.wait_status(run_id, timeout=45)
    assert run["status"] == "succeeded", stack.explain(run)
    assert run["attempt"] == 2
    assert run["error"] is None
    [output] = run["outputs"]
    image = stack.get(output["url"])
    assert image.status_code == 200
    assert decode_png(image.content).size == (64, 40)


def test_run_fails_with_a_reason_when_its_workers_keep_dying(stack: Stack) -> None:
    _kill_live_workers(stack)
    first = stack.deployment.start_worker()
    run_id = stack.submit("slow", {"seconds": 5.0})
    assert stack.wait_status(run_id, ("running",), timeout=20)["attempt"] == 1
    stack.deployment.kill(first)

    second = stack.deployment.start_worker()

    def second_attempt_running() -> bool:
        run = stack.run(run_id)
        return run["status"] == "running" and run["attempt"] == 2

    wait_for(second_attempt_running, 30, "the second attempt to start")
    stack.deployment.kill(second)

    run = stack.wait_status(run_id, timeout=30)
    assert run["status"] == "failed", stack.explain(run)
    assert run["attempt"] == 2
    assert "went silent" in run["error"]["message"]
    assert "attempt 2 of 2" in run["error"]["message"]
    assert run["outputs"] == []

    # A fresh worker does not resurrect it, and new runs still go through.
    stack.deployment.start_worker()
    after = stack.post("/v1/workflows/slow/runs?wait=30", {"inputs": {"seconds": 0}}).json()
    assert after["status"] == "succeeded", stack.explain(after)
    assert stack.run(run_id)["status"] == "failed"
