"""The webhook outbox: rows written beside the run change they announce, claimed and settled by the senders.

A row is added in the same transaction as the run's status change (``enqueue``), so a webhook is never
announced for a change that rolled back, nor lost for one that committed. Senders (``platform/webhooks/``,
one per API server) take due rows with a conditional UPDATE — the claim bumps ``attempts`` and pushes
``next_attempt_at`` past the delivery timeout, so several servers never send one attempt twice — then record
the outcome: delivered on a 2xx, else retried with backoff until ``max_attempts``, then failed.

A URL's credentials (``https://user:secret@host/``) are kept for delivery but never shown back: listings, run
bodies, logs and errors show ``https://user:***@host/`` (``masked_url``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from comfygate.platform.models import Run, WebhookDelivery, utcnow

__all__ = ["enqueue", "claim_due", "settle", "deliveries_of", "delivery_to_dict", "ClaimedDelivery",
           "backoff_seconds", "masked_url", "without_credentials", "EVENT_ENDED", "EVENT_REVIEWED"]

EVENT_ENDED = "run.ended"
EVENT_REVIEWED = "run.reviewed"
# Backoff doubles from 1 s and stops growing here: a receiver that is down for long is tried every 5 min.
_MAX_BACKOFF_SECONDS = 300.0


def _userinfo(url: str) -> str:
    """The ``user:password`` part of ``url`` as written, "" when there is none. Read by hand rather than with
    urlsplit, which raises on some malformed URLs: their credentials must be masked too."""
    _, slashes, rest = url.partition("//")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0] if slashes else ""
    userinfo, at, _ = authority.rpartition("@")
    return userinfo if at else ""


def _masked(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:***" if colon else "***"  # a lone user name is often a token


def masked_url(url: str | None) -> str | None:
    """``url`` with its password (or a lone user name) shown as ``***``."""
    userinfo = _userinfo(url or "")
    if not url or not userinfo:
        return url
    return url.replace(userinfo + "@", _masked(userinfo) + "@", 1)


def without_credentials(text: str, url: str) -> str:
    """``text`` (an error message about ``url``) with the URL's credentials masked wherever it quotes them."""
    userinfo = _userinfo(url)
    if not userinfo:
        return text
    user, colon, password = userinfo.partition(":")
    secret = password if colon else user
    text = text.replace(userinfo + "@", _masked(userinfo) + "@")
    return text.replace(secret, "***") if secret else text


def enqueue(session: Session, run: Run, event: str, run_body: dict[str, Any]) -> WebhookDelivery | None:
    """Add the delivery of ``event`` for ``run`` (None when the run asked for no webhook)."""
    if not run.webhook_url:
        return None
    delivery = WebhookDelivery(run_id=run.id, url=run.webhook_url, event=event,
                               payload={"event": event, "run": run_body}, state="pending", attempts=0,
                               next_attempt_at=utcnow())
    session.add(delivery)
    return delivery


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    run_id: str
    url: str
    event: str
    payload: dict[str, Any]
    attempt: int  # 1 for the first try


def backoff_seconds(attempt: int) -> float:
    """Wait after failed try number ``attempt``: 1, 2, 4, ... s."""
    return min(2.0 ** (attempt - 1), _MAX_BACKOFF_SECONDS)


def claim_due(session: Session, lease_seconds: float, limit: int = 20) -> list[ClaimedDelivery]:
    """Take up to ``limit`` due deliveries for one try each. ``lease_seconds`` (longer than a try may take)
    keeps them from other senders; a sender that dies mid-try leaves the row due again after it."""
    now = utcnow()
    due = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)
    ).all()
    claimed = []
    for delivery_id, attempts in due:
        row = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending",
                   WebhookDelivery.attempts == attempts, WebhookDelivery.next_attempt_at <= now)
            .values(attempts=attempts + 1, next_attempt_at=now + timedelta(seconds=lease_seconds))
            .returning(WebhookDelivery.run_id, WebhookDelivery.url, WebhookDelivery.event, WebhookDelivery.payload)
        ).one_or_none()
        if row is not None:  # else another sender took it between our SELECT and UPDATE
            claimed.append(ClaimedDelivery(delivery_id, row.run_id, row.url, row.event, row.payload, attempts + 1))
    return claimed


def settle(session: Session, delivery: ClaimedDelivery, status: int | None, error: str | None,
           max_attempts: int) -> str:
    """Record the outcome of one try; returns the delivery's state afterwards."""
    now = utcnow()
    values: dict[str, Any] = {"last_status": status, "last_error": error}
    if status is not None and 200 <= status < 300:
        values.update(state="delivered", delivered_at=now, last_error=None)
    elif delivery.attempt >= max_attempts:
        values.update(state="failed")
    else:
        values.update(next_attempt_at=now + timedelta(seconds=backoff_seconds(delivery.attempt)))
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.id == delivery.id, WebhookDelivery.attempts == delivery.attempt,
        WebhookDelivery.state == "pending").values(**values))
    return str(values.get("state", "pending"))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def delivery_to_dict(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "run_id": delivery.run_id,
        "url": masked_url(delivery.url),
        "event": delivery.event,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_at": _iso(delivery.next_attempt_at) if delivery.state == "pending" else None,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "created_at": _iso(delivery.created_at),
        "delivered_at": _iso(delivery.delivered_at),
    }


def deliveries_of(session: Session, run_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.run_id == run_id)
                           .order_by(WebhookDelivery.id))
    return [delivery_to_dict(row) for row in rows]
