"""Handing a committed run to the broker. Called only after the run's row has committed."""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import KombuError

from comfygate.platform.celery_app import RUN_TASK

__all__ = ["Dispatcher", "pool_queue"]

log = logging.getLogger(__name__)


def pool_queue(pool: str) -> str:
    """The Celery queue of a worker pool: every worker of the pool consumes it."""
    return f"pool.{pool}"


class Dispatcher:
    def __init__(self, celery: Celery, queue: str) -> None:
        self._celery = celery
        self._queue = queue  # for sends that name no pool

    def send(self, run_id: str, attempt: int, pool: str | None = None) -> bool:
        """Queue the run for ``pool``'s workers. True when the broker took the task. A run whose send failed
        stays queued and the watchdog sends it again, so a broker outage delays runs but loses none."""
        queue = pool_queue(pool) if pool else self._queue
        try:
            self._celery.send_task(RUN_TASK, args=[run_id, attempt], queue=queue)
        except (KombuError, OSError) as exc:
            log.warning("broker refused run %s (attempt %s): %s; the watchdog will resend it",
                        run_id, attempt, exc)
            return False
        return True
