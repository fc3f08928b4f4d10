"""Playing the fault scenario on a started ``FaultStack`` and reporting what became of every run.

1. A steady stream of runs; Redis killed with kill -9 and started again ``restarts`` times, a few seconds
   down each time; the runs given 30 s after Redis is last back to end.
2. A burst of runs, to see which workers take them (a frozen worker takes none).
3. The stream again while PostgreSQL is stopped at once and started again; the API's /ready polled meanwhile.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from faults.scenario import (
    FaultStack,
    Outage,
    RunStream,
    Settled,
    database_ready,
    kill_and_restart,
    settle,
    workers_of,
)

__all__ = ["PhaseReport", "FaultReport", "play"]

# After a fault ends, every run accepted so far must end within this long.
SETTLE_SECONDS = 30.0


@dataclass
class PhaseReport:
    """One phase's runs: what the API answered to each submit, and how the accepted runs ended."""

    answers: Counter[int]
    accepted: int
    succeeded: int
    other_end: dict[str, str]  # run id -> status, for runs that ended but did not succeed
    stuck: list[str]  # accepted, not ended in time
    lost: list[str]  # accepted, then unknown to the API
    recovery: list[float | None]  # per outage: seconds from the service back to the last affected run ending
    retry_after_missing: int = 0

    @property
    def submitted(self) -> int:
        return sum(self.answers.values())


@dataclass
class FaultReport:
    broker: PhaseReport
    database: PhaseReport
    burst_worker_pids: set[int]  # the workers that took the burst after the last broker restart
    live_worker_pids: set[int]  # the workers alive then
    worker_exits: list[tuple[int, int]]  # (pid, exit code) of workers that stopped (and were started again)
    ready_while_database_down: Counter[int] = field(default_factory=Counter)
    api_ready_after: float | None = None  # seconds from PostgreSQL back to the API's /ready answering 200


def _phase(stream: RunStream, settled: Settled, outages: list[Outage]) -> PhaseReport:
    return PhaseReport(
        answers=stream.answers, accepted=len(stream.accepted), succeeded=len(settled.with_status("succeeded")),
        other_end={run_id: run["status"] for run_id, run in settled.runs.items()
                   if run["status"] != "succeeded" and run_id not in settled.unfinished()},
        stuck=settled.unfinished(), lost=settled.lost,
        recovery=[settled.recovery_seconds(outage, stream.accepted) for outage in outages],
        retry_after_missing=stream.retry_after_missing)


def play(stack: FaultStack, *, restarts: int = 3, down_seconds: float = 3.0, up_seconds: float = 6.0,
         rate: float = 3.0) -> FaultReport:
    deployment = stack.deployment
    assert stack.workers is not None

    stream = RunStream(deployment, rate).start()
    time.sleep(up_seconds / 2)
    outages = []
    for _ in range(restarts):
        outages.append(kill_and_restart("redis", stack.redis.kill, stack.redis.start, down_seconds))
        time.sleep(up_seconds)
    stream.stop()
    budget = outages[-1].back_at + SETTLE_SECONDS - time.time() if outages else SETTLE_SECONDS
    broker = _phase(stream, settle(deployment, list(stream.accepted), max(budget, 1.0)), outages)

    # Two runs per worker at once at least: each worker holds one at a time, so every live one gets some.
    burst = RunStream(deployment, rate=50).start()
    time.sleep(0.5)
    burst.stop()
    settle(deployment, list(burst.accepted), SETTLE_SECONDS)
    # Worker names are host:pid.
    took = {int(name.rsplit(":", 1)[1]) for name in workers_of(stack.database_url, list(burst.accepted)).values()
            if name}
    live = stack.workers.live_pids()

    stream = RunStream(deployment, rate).start()
    time.sleep(up_seconds / 2)
    ready_statuses: Counter[int] = Counter()
    down_at = time.time()
    stack.postgres.kill()
    while time.time() - down_at < down_seconds:
        ready_statuses[database_ready(deployment)] += 1
        time.sleep(0.25)
    stack.postgres.start()
    database_outage = Outage("postgresql", down_at, time.time())
    ready_after = None
    while time.time() - database_outage.back_at < SETTLE_SECONDS:
        if database_ready(deployment) == 200:
            ready_after = time.time() - database_outage.back_at
            break
        time.sleep(0.1)
    time.sleep(up_seconds)
    stream.stop()
    database = _phase(stream, settle(deployment, list(stream.accepted), SETTLE_SECONDS * 2), [database_outage])

    return FaultReport(broker=broker, database=database, burst_worker_pids=took, live_worker_pids=live,
                       worker_exits=list(stack.workers.exits), ready_while_database_down=ready_statuses,
                       api_ready_after=ready_after)
