"""A worker's readiness probe: a tiny HTTP endpoint that says 503 until the worker takes runs (and while its
engine, a ComfyUI server, does not answer, and once its broker connection counts as lost: phase
``broker_lost``, see ``broker_check.py``), then 200.

A deployment points its readiness probe at ``GET /ready`` (Kubernetes ``httpGet``), so a GPU host gets no
traffic while it is still loading its preloaded models. ``GET /models`` lists what is warm in the pool.
Plain ``http.server`` on a daemon thread: the worker process runs Celery, not an event loop.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["WorkerHealth"]

log = logging.getLogger(__name__)


class WorkerHealth:
    """Readiness of one worker process: ``phase`` moves starting -> preloading -> ready (or failed), and ends
    broker_lost or orphaned when the worker stops on its own."""

    def __init__(self, models_report: Callable[[], list[dict[str, Any]]],
                 engine_ready: Callable[[], bool] = lambda: True, engine: str = "builtin") -> None:
        self.phase = "starting"
        self.error: str | None = None
        self._models_report = models_report
        self._engine_ready = engine_ready  # False while a ComfyUI engine is down or restarting
        self._engine = engine
        self._server: ThreadingHTTPServer | None = None

    @property
    def ready(self) -> bool:
        return self.phase == "ready" and self._engine_ready()

    def status(self) -> dict[str, Any]:
        engine_ready = self._engine_ready()
        return {"ready": self.phase == "ready" and engine_ready, "phase": self.phase, "error": self.error,
                "engine": {"name": self._engine, "ready": engine_ready}, "models": self._models_report()}

    def serve(self, host: str, port: int) -> int:
        """Answer probes on host:port from a daemon thread; returns the bound port (port 0 picks one)."""
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/ready":
                    self._answer(200 if health.ready else 503, health.status())
                elif self.path == "/models":
                    self._answer(200, {"models": health._models_report()})
                else:
                    self._answer(404, {"error": f"no such path {self.path!r}; try /ready or /models"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # a probe every few seconds would flood the worker log

        self._server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, name="worker-health", daemon=True).start()
        return self._server.server_address[1]
