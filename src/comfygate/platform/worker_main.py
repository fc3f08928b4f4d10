"""``comfygate worker``: a Celery worker whose process keeps one RunProcessor (and its models) warm."""

from __future__ import annotations

import logging
import os
import socket

from comfygate.platform.celery_app import create_celery
from comfygate.platform.tasks import register_tasks
from comfygate.platform.worker import RunProcessor
from comfygate.settings import Settings

__all__ = ["run_worker"]


def run_worker(settings: Settings, concurrency: int) -> int:
    # Celery logs two INFO lines per task; the run table already records every run.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app = create_celery(settings)
    processor = RunProcessor(settings)
    processor.warm_up()
    register_tasks(app, processor)
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
    return 0
