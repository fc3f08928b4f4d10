"""A worker's end-to-end check that its broker connection still delivers, since Celery's own view can lie.

After a broker restart a worker's consumer can stay stuck for good on a dead socket (``Couldn't ack ...
ConnectionError``, the socket left in CLOSE-WAIT: known Celery/kombu behaviour) while everything else in the
process looks fine. So the worker sends itself a tiny ping task, on a queue only it consumes, over a fresh
producer connection, and counts its broker as working while pings come back (or while every slot is busy
with a run: then the consumer is not asked for more and cannot answer). Without a sign of life for
``lost_after`` seconds the broker counts as lost: the worker's ``/ready`` answers 503 and the worker stops
with ``EXIT_BROKER_LOST`` so its supervisor (``serve``, systemd, Kubernetes) starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from celery import Celery
from celery.signals import task_postrun, task_prerun
from kombu.exceptions import KombuError

from comfygate.platform.celery_app import RUN_TASK

__all__ = ["PING_TASK", "EXIT_BROKER_LOST", "BrokerCheck", "ping_queue"]

log = logging.getLogger(__name__)

PING_TASK = "comfygate.broker_ping"
EXIT_BROKER_LOST = 75  # EX_TEMPFAIL: a supervisor should start the worker again


def ping_queue() -> str:
    """This worker process's own queue, for its pings only."""
    return f"comfygate.ping.{socket.gethostname()}-{os.getpid()}"


class BrokerCheck:
    def __init__(self, app: Celery, lost_after: float, concurrency: int, on_lost: Callable[[str], None]) -> None:
        self.queue = ping_queue()
        self._app = app
        self._lost_after = lost_after
        self._concurrency = concurrency
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._in_hand = 0  # run tasks executing now
        self._last_sign = time.monotonic()  # the last time the consumer was seen delivering (or all slots busy)
        self._ping_sent: float | None = None  # when the outstanding ping was sent
        self._stop = threading.Event()
        app.task(name=PING_TASK, acks_late=False, ignore_result=True)(self._pong)
        # weak=False: bound methods would otherwise be collected before Celery sends the signals.
        task_prerun.connect(self._run_started, weak=False)
        task_postrun.connect(self._run_ended, weak=False)

    def _pong(self) -> None:
        with self._lock:
            self._last_sign, self._ping_sent = time.monotonic(), None

    def _run_started(self, sender: object = None, **_: object) -> None:
        if getattr(sender, "name", None) == RUN_TASK:
            with self._lock:
                self._in_hand += 1
                self._last_sign = time.monotonic()

    def _run_ended(self, sender: object = None, **_: object) -> None:
        if getattr(sender, "name", None) == RUN_TASK:
            with self._lock:
                self._in_hand -= 1
                self._last_sign = time.monotonic()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="broker-check", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        interval = max(0.2, self._lost_after / 6)
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                if self._in_hand >= self._concurrency:
                    self._last_sign = now  # busy: the consumer takes nothing more until a slot frees
                silent = now - self._last_sign
                due = self._ping_sent is None or now - self._ping_sent >= self._lost_after / 3
            if silent > self._lost_after:
                self._on_lost(f"no message from the broker for {silent:.0f} s (COMFYGATE_BROKER_LOST_SECONDS="
                              f"{self._lost_after:g}): its connection is dead or stuck")
                return
            if due:
                self._ping()

    def _ping(self) -> None:
        try:
            self._app.send_task(PING_TASK, queue=self.queue, retry=False, expires=self._lost_after)
        except (KombuError, OSError) as exc:
            log.warning("broker check: cannot reach the broker: %s", exc)
            return
        with self._lock:
            self._ping_sent = time.monotonic()

    def remove_queue(self) -> None:
        """On a clean stop: delete this process's ping queue from the broker (a crash leaves it, with at most
        one expired ping in it)."""
        try:
            with self._app.connection_for_write() as connection:
                connection.default_channel.queue_delete(self.queue)
        except (KombuError, OSError) as exc:
            log.info("could not delete ping queue %s: %s", self.queue, exc)
