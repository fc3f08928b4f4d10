"""Fault injection figures: runs submitted, succeeded, stuck and lost while the broker (Redis, kill -9 and
restarted three times) and the database (PostgreSQL, stopped at once and restarted) fail under a steady stream
of runs, and seconds from each restart to the last affected run finishing.

    .venv/bin/python bench/faults.py [--restarts 3] [--down 3] [--rate 4.5]

Starts its own Redis and PostgreSQL servers on free loopback ports (PostgreSQL's server programs and
redis-server must be installed), an API server and two workers; nothing else is touched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the fault helpers are test code, not part of the package

from faults.play import PhaseReport, play  # noqa: E402
from faults.scenario import start_fault_stack  # noqa: E402


def _seconds(values: list[float | None]) -> str:
    return ", ".join("no run affected" if v is None else f"{v:.1f} s" for v in values)


def _print_phase(title: str, phase: PhaseReport) -> None:
    answers = ", ".join(f"{status or 'no answer'}: {count}" for status, count in sorted(phase.answers.items()))
    print(f"{title}")
    print(f"  runs submitted     {phase.submitted} ({answers})")
    print(f"  accepted (202)     {phase.accepted}")
    print(f"  succeeded          {phase.succeeded}")
    print(f"  ended otherwise    {len(phase.other_end)} {sorted(set(phase.other_end.values())) or ''}")
    print(f"  stuck              {len(phase.stuck)}")
    print(f"  lost               {len(phase.lost)}")
    print(f"  restart -> last affected run finished: {_seconds(phase.recovery)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=3, help="Redis kill -9 / restart cycles")
    parser.add_argument("--down", type=float, default=3.0, help="seconds each service stays down")
    parser.add_argument("--rate", type=float, default=3.0, help="runs started per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="comfygate-faults-") as folder:
        stack = start_fault_stack(Path(folder) / "data")
        try:
            report = play(stack, restarts=args.restarts, down_seconds=args.down, rate=args.rate)
        finally:
            stack.stop()
    _print_phase(f"Redis killed (kill -9) and restarted {args.restarts} times, {args.down:g} s down each:",
                 report.broker)
    print(f"  workers that took the burst after the last restart: {len(report.burst_worker_pids)} of "
          f"{len(report.live_worker_pids)} alive; workers replaced: {len(report.worker_exits)} "
          f"(exit codes {[code for _, code in report.worker_exits]})")
    _print_phase(f"PostgreSQL stopped at once and restarted, {args.down:g} s down:", report.database)
    ready = ", ".join(f"{status}: {count}" for status, count in sorted(report.ready_while_database_down.items()))
    after = "never" if report.api_ready_after is None else f"{report.api_ready_after:.1f} s"
    print(f"  API /ready while it was down: {ready}; ready again {after} after it was back")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
