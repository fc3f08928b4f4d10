"""The zero-setup default: one ``comfygate serve`` process tree (SQLite, filesystem broker, local files)."""

from __future__ import annotations

import os
import signal

import pytest
from e2e_support import SLOW_INPUTS, SLOW_POLICY, Stack, decode_png, load_workflow, slow_workflow, worker_children

from deployment import wait_for

pytestmark = pytest.mark.e2e


def test_embedded_default_runs_and_survives_a_killed_worker(embedded: Stack) -> None:
    stack = embedded
    # Without an inputs spec every constant widget input but the output paths is exposed as
    # "<node id>.<input name>".
    card = stack.push_ok("card", load_workflow("gradient_card.json"))
    assert card["version"] == 1
    exposed = set(card["input_schema"]["properties"])
    assert {"1.width", "1.height", "7.sigma"} <= exposed
    assert "8.filename_prefix" not in exposed
    finished = stack.post(card["run_url"] + "?wait=30", {"inputs": {"1.width": 96}})
    assert finished.status_code == 200, finished.text
    run = finished.json()
    assert run["status"] == "succeeded", stack.explain(run)
    image = stack.get(run["outputs"][0]["url"])
    assert image.status_code == 200
    assert decode_png(image.content).size == (96, 128)
    assert stack.count_runs() == 1  # the SQLite file in the data dir is the run table

    # Kill the supervised worker mid-run. The filesystem broker has already handed its message out, so
    # only the watchdog can bring the run back; the server's supervisor restarts the worker.
    stack.push_ok("slow", slow_workflow(), SLOW_INPUTS, policy=SLOW_POLICY)
    run_id = stack.submit("slow", {"seconds": 3.0})
    assert stack.wait_status(run_id, ("running",), timeout=20)["attempt"] == 1
    server = stack.deployment.server
    assert server is not None
    [worker_pid] = worker_children(server.pid)
    os.kill(worker_pid, signal.SIGKILL)

    run = stack.wait_status(run_id, timeout=45)
    assert run["status"] == "succeeded", stack.explain(run)
    assert run["attempt"] == 2
    replacement = wait_for(lambda: worker_children(server.pid), 10, "the restarted worker")
    assert replacement != [worker_pid]
