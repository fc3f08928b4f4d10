"""Handing a committed run to the broker. Called only after the run's row has committed.

A send that the broker refuses does not hold the caller: the publish is tried once, and the run is marked not
dispatched (``dispatched_at`` NULL) so the relay of every API server (``dispatch_relay.py``) sends it as soon
as the broker takes messages again. The happy path writes nothing more than the run row itself.
"""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import KombuError
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from comfygate.platform.celery_app import RUN_TASK
from comfygate.platform.db import session_scope
from comfygate.platform.models import Run, RunStatus

__all__ = ["Dispatcher", "pool_queue", "mark_not_dispatched"]

log = logging.getLogger(__name__)


def pool_queue(pool: str) -> str:
    """The Celery queue of a worker pool: every worker of the pool consumes it."""
    return f"pool.{pool}"


def mark_not_dispatched(session: Session, run_id: str, attempt: int) -> bool:
    """The broker did not take the run's message: leave it to the relay. False when the run moved on."""
    return bool(session.execute(update(Run).where(
        Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.QUEUED).values(dispatched_at=None)
    ).rowcount)


class Dispatcher:
    def __init__(self, celery: Celery, queue: str, sessions: sessionmaker[Session] | None = None) -> None:
        self._celery = celery
        self._queue = queue  # for sends that name no pool
        self._sessions = sessions  # where a refused send is recorded for the relay

    def publish(self, run_id: str, attempt: int, pool: str | None = None) -> bool:
        """One try at handing the task to the broker; True when it took it."""
        queue = pool_queue(pool) if pool else self._queue
        try:
            # No retries here: a broker that is down must not hold the caller's 202; the relay retries.
            self._celery.send_task(RUN_TASK, args=[run_id, attempt], queue=queue, retry=False)
        except (KombuError, OSError) as exc:
            log.warning("broker refused run %s (attempt %s): %s", run_id, attempt, exc)
            return False
        return True

    def send(self, run_id: str, attempt: int, pool: str | None = None) -> bool:
        """Queue the run for ``pool``'s workers. True when the broker took the task; else the run is marked
        not dispatched so the relay sends it once the broker is back (or, when the database cannot be reached
        either, the watchdog after ``queued_timeout_seconds``). A broker outage delays runs but loses none."""
        if self.publish(run_id, attempt, pool):
            return True
        if self._sessions is not None:
            try:
                with session_scope(self._sessions) as session:
                    mark_not_dispatched(session, run_id, attempt)
            except SQLAlchemyError as exc:
                log.warning("could not mark run %s for the relay (%s); the watchdog will resend it", run_id, exc)
        return False
