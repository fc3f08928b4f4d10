"""No orphans: the embedded worker of ``comfygate serve`` dies with it, however it dies (SIGKILL included)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from e2e_support import Stack, worker_children

from deployment import wait_for

pytestmark = pytest.mark.e2e


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet (our parent is gone, so is its reaper)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] in ("Z", "X")


def test_embedded_worker_exits_when_serve_is_killed(embedded: Stack) -> None:
    server = embedded.deployment.server
    assert server is not None
    [worker_pid] = worker_children(server.pid)

    os.kill(server.pid, signal.SIGKILL)  # the server alone, not its process group
    server.wait()

    assert wait_for(lambda: _gone(worker_pid), 30, f"the embedded worker {worker_pid} to exit with its server")
