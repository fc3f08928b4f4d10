"""``comfygate worker``: a Celery worker whose process keeps one RunProcessor (and its models) warm."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence

from celery import Celery
from celery.signals import worker_ready

from comfygate.platform.broker_check import EXIT_BROKER_LOST, BrokerCheck
from comfygate.platform.celery_app import create_celery
from comfygate.platform.dispatch import Dispatcher
from comfygate.platform.pools import CapabilityReporter
from comfygate.platform.processes import exit_when_orphaned, started_to_die_with_parent
from comfygate.platform.tasks import register_tasks
from comfygate.platform.worker import RunProcessor
from comfygate.platform.worker_health import WorkerHealth
from comfygate.settings import Settings

__all__ = ["run_worker"]

log = logging.getLogger(__name__)

# How long a worker told to stop (broker lost, parent gone) may take to finish what it holds before it is
# ended outright; a run still in hand then goes back to the queue through the watchdog.
STOP_GRACE_SECONDS = 10.0
EXIT_ORPHANED = 1


def run_worker(settings: Settings, concurrency: int, preload: Sequence[str] = ()) -> int:
    """Start a worker: build the processor, preload models, then consume runs. The readiness probe (when
    ``worker_health_port`` is set) answers 200 only once Celery consumes, after every preload finished."""
    # Celery logs two INFO lines per task; the run table already records every run.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app = create_celery(settings)
    processor = RunProcessor(settings)
    # A run whose engine died under it is queued again at once, to this pool's queue (or by the API servers'
    # dispatch relay, when the broker does not take it).
    processor.give_back = Dispatcher(app, settings.queue_name, processor.sessions).send
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
    exit_code: list[int] = []

    def stop_worker(code: int, phase: str, reason: str) -> None:
        """Stop taking runs and exit with ``code``: Celery's warm shutdown, then an outright exit after a grace
        (a consumer stuck on a dead socket may never finish shutting down)."""
        if exit_code:
            return
        exit_code.append(code)
        health.phase, health.error = phase, reason
        log.error("worker stops: %s", reason)
        threading.Timer(STOP_GRACE_SECONDS, os._exit, (code,)).start()
        os.kill(os.getpid(), signal.SIGTERM)

    queues = [settings.queue_name]
    # The filesystem broker is a folder on this host: there is no connection to die.
    check = None if settings.uses_filesystem_broker else BrokerCheck(
        app, settings.broker_lost_seconds, concurrency,
        lambda reason: stop_worker(EXIT_BROKER_LOST, "broker_lost", reason))
    if check is not None:
        queues.append(check.queue)
    if started_to_die_with_parent():
        # Started by `serve`: the kernel signals us when it dies; this covers a missed or blocked signal.
        exit_when_orphaned(lambda: stop_worker(EXIT_ORPHANED, "orphaned", "the parent process is gone"))

    def consuming(**_: object) -> None:
        health.phase = "ready"
        if check is not None:
            check.start()
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
        _consume(app, settings, concurrency, queues)
    finally:
        reporter.stop()
        if check is not None:
            check.stop()
            if not exit_code:
                check.remove_queue()
        processor.close()  # a supervised ComfyUI stops with its worker
    return exit_code[0] if exit_code else 0


def _consume(app: Celery, settings: Settings, concurrency: int, queues: list[str]) -> None:
    app.worker_main([
        "worker",
        # Threads: one process holds the warm models; node code releases the GIL in torch kernels.
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--queues", ",".join(queues),
        "--hostname", f"comfygate-{settings.pool}-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel=INFO",
    ])
