"""The dispatch relay: runs the broker did not take, or whose messages a broker restart lost, are sent again
within seconds of the broker taking messages.

A queued run with ``dispatched_at`` NULL is owed a message (``Dispatcher.send`` marks it so when the broker
refuses). Every API server runs this relay every ``RELAY_SECONDS``: it claims such runs with a conditional
UPDATE (several servers may run it side by side; each run is claimed by one), publishes them, and puts back
the ones the broker refused. Redis keeps its queues in memory, so a broker that restarted has lost every
message of runs not yet claimed: when the relay sees the broker come back (its Redis ``run_id`` changed, or
it refused a send and then took one), every queued run is owed a message again. A duplicate message is
harmless: a worker claims a (run id, attempt) only once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from comfygate.platform.db import session_scope
from comfygate.platform.dispatch import Dispatcher, mark_not_dispatched
from comfygate.platform.models import Run, RunStatus, WorkflowVersion, utcnow

__all__ = ["RELAY_SECONDS", "BrokerRestarts", "DispatchRelay", "RelayReport", "relay_loop"]

log = logging.getLogger(__name__)

RELAY_SECONDS = 1.0
BATCH = 200  # runs claimed per pass: a long outage's backlog drains over a few passes


class BrokerRestarts:
    """Notices a broker that came back: Redis answers with another ``run_id`` (a restart: its in-memory
    queues are empty), or answered nothing and now answers. Brokers that keep their queues (the filesystem
    broker, RabbitMQ's durable queues) are not asked; the relay's own refused sends still count."""

    def __init__(self, broker_url: str) -> None:
        self._client = (redis.Redis.from_url(broker_url, socket_timeout=1, socket_connect_timeout=1)
                        if broker_url.startswith(("redis://", "rediss://")) else None)
        self._run_id: str | None = None
        self._down = False

    def came_back(self) -> bool:
        if self._client is None:
            return False
        try:
            run_id = str(self._client.info("server")["run_id"])
        except redis.RedisError:
            self._down = True
            return False
        back = self._down or (self._run_id is not None and run_id != self._run_id)
        self._run_id, self._down = run_id, False
        return back

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@dataclass
class RelayReport:
    sent: list[str] = field(default_factory=list)
    refused: int = 0  # runs put back because the broker did not take them
    owed_again: int = 0  # queued runs whose messages a broker restart may have lost


class DispatchRelay:
    def __init__(self, factory: sessionmaker[Session], dispatcher: Dispatcher, broker_url: str) -> None:
        self._factory = factory
        self._dispatcher = dispatcher
        self._restarts = BrokerRestarts(broker_url)
        self._refused = False  # the last publish failed: a success after it means the broker came back

    def relay_once(self) -> RelayReport:
        report = RelayReport()
        if self._restarts.came_back():
            report.owed_again = self._owe_again()
        with session_scope(self._factory) as session:
            claimed = self._claim(session)
        for index, (run_id, attempt, pool) in enumerate(claimed):
            if self._dispatcher.publish(run_id, attempt, pool):
                report.sent.append(run_id)
                if self._refused:
                    # The broker refused earlier and takes messages now: it may have restarted empty.
                    self._refused = False
                    report.owed_again += self._owe_again()
                continue
            self._refused = True
            rest = claimed[index:]
            with session_scope(self._factory) as session:
                for run_id_back, attempt_back, _ in rest:
                    mark_not_dispatched(session, run_id_back, attempt_back)
            report.refused = len(rest)
            break
        if report.sent or report.owed_again:
            log.warning("dispatch relay: sent %d runs the broker had not taken; %d queued runs owed a message "
                        "again after the broker came back", len(report.sent), report.owed_again)
        return report

    def _claim(self, session: Session) -> list[tuple[str, int, str | None]]:
        now = utcnow()
        owed = session.execute(
            select(Run.id, Run.attempt, WorkflowVersion.pool)
            .join(WorkflowVersion, WorkflowVersion.id == Run.version_id)
            .where(Run.status == RunStatus.QUEUED, Run.dispatched_at.is_(None), Run.cancel_requested.is_(False))
            .order_by(Run.queued_at).limit(BATCH)
        ).all()
        claimed = []
        for run_id, attempt, pool in owed:
            if session.execute(update(Run).where(
                    Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.QUEUED,
                    Run.dispatched_at.is_(None)).values(dispatched_at=now)).rowcount:
                claimed.append((run_id, attempt, pool))
        return claimed

    def _owe_again(self) -> int:
        """Every queued run sent before now may have lost its message: send each one again."""
        with session_scope(self._factory) as session:
            return int(session.execute(update(Run).where(
                Run.status == RunStatus.QUEUED, Run.dispatched_at.is_not(None), Run.dispatched_at <= utcnow(),
                Run.cancel_requested.is_(False)).values(dispatched_at=None)).rowcount)

    def close(self) -> None:
        self._restarts.close()


async def relay_loop(relay: DispatchRelay, in_thread: Callable[..., Awaitable[RelayReport]]) -> None:
    """Relay every ``RELAY_SECONDS`` for the life of the server; a database or broker blip only skips a pass."""
    while True:
        await asyncio.sleep(RELAY_SECONDS)
        try:
            await in_thread(relay.relay_once)
        except SQLAlchemyError as exc:
            log.warning("dispatch relay: the database is unreachable (%s); retrying in %s s", exc, RELAY_SECONDS)
        except Exception:
            log.exception("dispatch relay pass failed; retrying in %s s", RELAY_SECONDS)
