"""A key's runs counted in the run table: exact, and the same for every API process.

Both queries go by ``ix_runs_api_key_queued`` (api_key_id, queued_at).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comfygate.platform.models import Run, RunStatus, utcnow

__all__ = ["in_flight", "day_quota_wait", "DAY"]

DAY = timedelta(hours=24)


def in_flight(session: Session, api_key_id: int) -> int:
    """The key's runs that are queued or running."""
    return session.scalar(select(func.count()).select_from(Run).where(
        Run.api_key_id == api_key_id, Run.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)))) or 0


def day_quota_wait(session: Session, api_key_id: int, quota: int) -> float:
    """0.0 when the key started fewer than ``quota`` runs in the last 24 hours; else the seconds until
    enough of them are older than that for one more to fit."""
    since = utcnow() - DAY
    started = select(Run.queued_at).where(Run.api_key_id == api_key_id, Run.queued_at > since)
    count = session.scalar(select(func.count()).select_from(started.subquery())) or 0
    if count < quota:
        return 0.0
    # With count >= quota, one more fits once the (count - quota + 1) oldest have left the window.
    leaves_last = session.scalar(started.order_by(Run.queued_at).offset(count - quota).limit(1))
    if leaves_last is None:  # they all left between the two queries
        return 0.0
    return max(0.0, (leaves_last + DAY - utcnow()).total_seconds())
