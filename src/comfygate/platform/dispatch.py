"""Handing a committed run to the broker. Called only after the run's row has committed."""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import KombuError

from comfygate.platform.celery_app import RUN_TASK

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, celery: Celery, queue: str) -> None:
        self._celery = celery
        self._queue = queue

    def send(self, run_id: str, attempt: int) -> bool:
        """True when the broker took the task. A run whose send failed stays queued and the watchdog
        sends it again, so a broker outage delays runs but loses none."""
        try:
            self._celery.send_task(RUN_TASK, args=[run_id, attempt], queue=self._queue)
        except (KombuError, OSError) as exc:
            log.warning("broker refused run %s (attempt %s): %s; the watchdog will resend it",
                        run_id, attempt, exc)
            return False
        return True
