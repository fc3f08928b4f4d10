"""The watchdog: no broker or worker crash leaves a run stuck.

- A ``running`` run whose heartbeat is older than ``stale_after_seconds`` lost its worker: it is re-queued
  as the next attempt, or failed with a reason once ``max_attempts`` are used up.
- A ``queued`` run not dispatched for ``queued_timeout_seconds`` may have lost its broker message (the
  embedded broker drops unacked messages when a worker dies): it is sent again. A duplicate is harmless,
  since a worker only claims (run id, attempt) once. Refused sends and broker restarts are the dispatch
  relay's (``dispatch_relay.py``), within seconds; this is the slow net under it.

Every change is a conditional UPDATE, so several API servers may run watchdogs side by side. A run it ends
gets its webhook queued in the same transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from comfygate.platform.db import session_scope
from comfygate.platform.dispatch import Dispatcher
from comfygate.platform.models import Run, RunStatus, WorkflowVersion, utcnow
from comfygate.platform.services.runs import announce
from comfygate.platform.services.webhooks import EVENT_ENDED
from comfygate.settings import Settings

__all__ = ["SweepReport", "sweep"]

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # ended by the watchdog: failed, or canceled as asked
    redispatched: list[str] = field(default_factory=list)


def sweep(factory: sessionmaker[Session], settings: Settings, dispatcher: Dispatcher) -> SweepReport:
    report = SweepReport()
    to_send: list[tuple[str, int, str]] = []
    now = utcnow()
    with session_scope(factory) as session:
        stale_cutoff = now - timedelta(seconds=settings.stale_after_seconds)
        stale = session.execute(
            select(Run.id, Run.attempt, Run.worker, Run.cancel_requested, WorkflowVersion.pool)
            .join(WorkflowVersion, WorkflowVersion.id == Run.version_id)
            .where(Run.status == RunStatus.RUNNING, Run.heartbeat_at < stale_cutoff)
        ).all()
        for run_id, attempt, worker, cancel_requested, pool in stale:
            owned = ((Run.id == run_id) & (Run.attempt == attempt) & (Run.status == RunStatus.RUNNING)
                     & (Run.heartbeat_at < stale_cutoff))
            if cancel_requested:
                # The caller asked to stop it and its worker is gone: that is the end the caller wanted.
                if session.execute(update(Run).where(owned).values(
                        status=RunStatus.CANCELED, finished_at=now,
                        error={"message": "canceled at the caller's request; its worker went silent"})).rowcount:
                    report.failed.append(run_id)
                    announce(session, run_id, EVENT_ENDED)
            elif attempt < settings.max_attempts:
                if session.execute(update(Run).where(owned).values(
                        status=RunStatus.QUEUED, attempt=attempt + 1, worker=None, heartbeat_at=None,
                        started_at=None, dispatched_at=now)).rowcount:
                    report.requeued.append(run_id)
                    to_send.append((run_id, attempt + 1, pool))
            else:
                reason = (f"worker {worker} went silent (no heartbeat for {settings.stale_after_seconds:g} s) "
                          f"on attempt {attempt} of {settings.max_attempts}; giving up")
                if session.execute(update(Run).where(owned).values(
                        status=RunStatus.FAILED, finished_at=now,
                        error={"message": reason, "type": "worker_lost"})).rowcount:
                    report.failed.append(run_id)
                    announce(session, run_id, EVENT_ENDED)

        # A cancel that reached a run while its worker handed it back to the queue: no worker claims a run with
        # the flag set, so it is ended here as the caller asked.
        for (run_id,) in session.execute(select(Run.id).where(Run.status == RunStatus.QUEUED,
                                                              Run.cancel_requested.is_(True))).all():
            if session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED).values(
                    status=RunStatus.CANCELED, finished_at=now,
                    error={"message": "canceled at the caller's request", "type": "canceled"})).rowcount:
                report.failed.append(run_id)
                announce(session, run_id, EVENT_ENDED)

        lost_cutoff = now - timedelta(seconds=settings.queued_timeout_seconds)
        lost = session.execute(
            select(Run.id, Run.attempt, WorkflowVersion.pool)
            .join(WorkflowVersion, WorkflowVersion.id == Run.version_id)
            .where(Run.status == RunStatus.QUEUED, Run.dispatched_at < lost_cutoff)
        ).all()
        for run_id, attempt, pool in lost:
            if session.execute(update(Run).where(
                    Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.QUEUED,
                    Run.dispatched_at < lost_cutoff).values(dispatched_at=now)).rowcount:
                report.redispatched.append(run_id)
                to_send.append((run_id, attempt, pool))

    # Sent only after the commit: a worker must find the row in its new state.
    for run_id, attempt, pool in to_send:
        dispatcher.send(run_id, attempt, pool)
    if report.requeued or report.failed or report.redispatched:
        log.warning("watchdog: requeued %s, failed %s, re-sent %s",
                    report.requeued, report.failed, report.redispatched)
    return report
