"""``comfygate worker``: a Celery worker whose process keeps one RunProcessor (and its models) warm."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

from celery import Celery
from celery.signals import worker_ready

from comfygate.platform.celery_app import create_celery
from comfygate.platform.dispatch import Dispatcher
from comfygate.platform.pools import CapabilityReporter
from comfygate.platform.tasks import register_tasks
from comfygate.platform.worker import RunProcessor
from comfygate.platform.worker_health import WorkerHealth
from comfygate.settings import Settings

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings, concurrency: int, preload: Sequence[str] = ()) -> int:
    """Start a worker: build the processor, preload models, then consume runs. The readiness probe (when
    ``worker_health_port`` is set) answers 200 only once Celery consumes, after every preload finished."""
    # Celery logs two INFO lines per task; the run table already records every run.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app = create_celery(settings)
    processor = RunProcessor(settings)
    # A run whose engine died under it is queued again at once, to this pool's queue.
    processor.give_back = Dispatcher(app, settings.queue_name).send
    health = WorkerHealth(processor.models_report, processor.engine.is_ready, processor.engine.name)
    if settings.worker_health_port:
        port = health.serve(settings.host, settings.worker_health_port)
        log.info("readiness probe on http://%s:%s/ready", settings.host, port)
    health.phase = "preloading"
    try:
        processor.warm_up([*settings.preload, *preload])
    except Exception as exc:
        health.phase, health.error = "failed", f"{type(exc).__name__}: {exc}"
        processor.close()
        raise
    register_tasks(app, processor)

    def consuming(**_: object) -> None:
        health.phase = "ready"
        log.info("worker ready: consuming %s with %s models warm", settings.queue_name, len(processor.models_report()))

    # weak=False: the closure would otherwise be collected before Celery sends the signal.
    worker_ready.connect(consuming, weak=False)
    # Uploads for this pool are checked against what this worker's engine offers: its node schemas and model
    # files, published now and whenever they change.
    # The first report is made before taking runs, so an upload right after "ready" is checked against it.
    reporter = CapabilityReporter(processor.sessions, settings.pool, processor.engine.name, processor.name,
                                  processor.capabilities, settings.capabilities_seconds)
    try:
        reporter.report_once()
    except Exception as exc:  # the thread below tries again; a worker that cannot report still runs
        log.warning("could not report the capabilities of pool %s: %s: %s", settings.pool, type(exc).__name__, exc)
    reporter.start()
    try:
        _consume(app, settings, concurrency)
    finally:
        reporter.stop()
        processor.close()  # a supervised ComfyUI stops with its worker
    return 0


def _consume(app: Celery, settings: Settings, concurrency: int) -> None:
    app.worker_main([
        "worker",
        # Threads: one process holds the warm models; node code releases the GIL in torch kernels.
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--queues", settings.queue_name,
        "--hostname", f"comfygate-{settings.pool}-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel=INFO",
    ])
