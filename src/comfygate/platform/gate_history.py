"""What the gate needs to know about an endpoint's recent outputs: their hashes (the duplicate check), read
from ``run_outputs`` by workflow, and their scores (percentile thresholds), read from every generated attempt
recorded in ``runs.gate``. The scores of attempts the gate loop retried away count too: percentiles of the
kept outputs alone would climb with every retry.

Reading them for every run would cost a query of up to a few hundred rows per run, so a worker keeps them a
few seconds per (workflow, version, policy revision) and adds the outputs it records itself meanwhile: its
own consecutive runs still see each other; another worker's outputs show up within ``ttl`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from comfygate.platform.db import session_scope
from comfygate.platform.models import Run, RunOutput, WorkflowVersion
from comfygate.sentinel import Policy, RecentOutput, phash_from_hex

__all__ = ["History", "HistoryCache", "SCORE_HISTORY_RUNS", "HISTORY_TTL_SECONDS"]

# Recent runs whose attempts' scores are read per endpoint for percentile thresholds.
SCORE_HISTORY_RUNS = 1000
HISTORY_TTL_SECONDS = 5.0


@dataclass
class History:
    recent: list[RecentOutput] = field(default_factory=list)  # newest first, at most the duplicate window
    scores: dict[str, list[float]] = field(default_factory=dict)  # per percentile check, newest first


@dataclass
class _Entry:
    read_at: float
    history: History
    window: int
    score_checks: frozenset[str]


class HistoryCache:
    def __init__(self, sessions: sessionmaker[Session], ttl: float = HISTORY_TTL_SECONDS) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._entries: dict[tuple[int, int, int], _Entry] = {}
        self._lock = threading.Lock()

    def get(self, workflow_id: int, version_id: int, revision: int, policy: Policy) -> History:
        window, checks = policy.duplicate_window, frozenset(policy.percentile_checks)
        if not window and not checks:
            return History()
        # Per version and revision: each has its own policy, so its own window and percentile checks.
        key = (workflow_id, version_id, revision)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() - entry.read_at < self._ttl:
                return entry.history
        history = self._read(workflow_id, window, checks)
        with self._lock:
            self._entries[key] = _Entry(time.monotonic(), history, window, checks)
        return history

    def add(self, workflow_id: int, recent: Sequence[RecentOutput], verdict_scores: Sequence[dict[str, float]]
            ) -> None:
        """Outputs this worker just recorded for ``workflow_id`` (newest last), and the scores of every attempt
        it generated (newest last), into every cached entry of that workflow."""
        with self._lock:
            for (cached_workflow, _, _), entry in self._entries.items():
                if cached_workflow != workflow_id:
                    continue
                # A new History, not an edit of the old one: another thread may be gating with that one.
                old = entry.history
                scores = {check: ([s[check] for s in reversed(verdict_scores) if s.get(check) is not None]
                                  + old.scores.get(check, [])) for check in entry.score_checks}
                entry.history = History((list(reversed(recent)) + old.recent)[:entry.window], scores)

    def _read(self, workflow_id: int, window: int, checks: frozenset[str]) -> History:
        history = History()
        with session_scope(self._sessions) as session:
            if window:
                rows = session.execute(
                    select(RunOutput.run_id, RunOutput.index, RunOutput.sha256, RunOutput.phash,
                           RunOutput.request_key)
                    .where(RunOutput.workflow_id == workflow_id, RunOutput.sha256.is_not(None),
                           RunOutput.phash.is_not(None))
                    .order_by(RunOutput.id.desc()).limit(window)).all()
                history.recent = [RecentOutput(sha256=row.sha256, phash=phash_from_hex(row.phash),
                                               request_key=row.request_key,
                                               label=f"run {row.run_id} output {row.index}") for row in rows]
            if checks:
                gates = session.scalars(
                    select(Run.gate).join(WorkflowVersion, Run.version_id == WorkflowVersion.id)
                    .where(WorkflowVersion.workflow_id == workflow_id, Run.gate.is_not(None))
                    .order_by(Run.finished_at.desc()).limit(SCORE_HISTORY_RUNS)).all()
                history.scores = _attempt_scores(gates, checks)
        return history


def _attempt_scores(gates: Sequence[dict], checks: frozenset[str]) -> dict[str, list[float]]:
    """Scores per check of every attempt's outputs, newest run first and its latest attempt first."""
    scores: dict[str, list[float]] = {}
    for gate in gates:
        for attempt in reversed(gate.get("attempts", [])):
            for output in attempt.get("outputs", []):
                measured = output.get("verdict", {}).get("scores", {})
                for check in checks:
                    if isinstance(measured.get(check), int | float):
                        scores.setdefault(check, []).append(float(measured[check]))
    return scores
