"""Results of the checks and the verdict built from them; both serialise to plain JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CheckResult", "Verdict", "Status", "Action"]

Status = Literal["passed", "failed", "not_run"]
Action = Literal["reject", "flag"]


@dataclass
class CheckResult:
    """The outcome of one check.

    ``score`` is what the check measured (``None`` when it did not run); ``threshold`` the limit it was
    compared with (``None`` for checks without one); ``reason`` says in words why the check failed or did
    not run, and is ``None`` when it passed.
    """

    name: str
    status: Status
    action: Action
    score: float | None = None
    threshold: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "action": self.action,
            "score": self.score,
            "threshold": self.threshold,
            "reason": self.reason,
        }


@dataclass
class Verdict:
    """The sentinel's decision on one candidate.

    ``passed`` is false when a check whose action is ``reject`` failed; ``flagged`` is true when a check
    whose action is ``flag`` failed (the output is released but marked for review). ``reasons`` lists every
    failure as ``"<check>: <reason>"``. Checks disabled by the policy are absent from ``checks``.
    """

    passed: bool
    flagged: bool
    checks: list[CheckResult] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @classmethod
    def from_checks(cls, checks: Sequence[CheckResult]) -> Verdict:
        failed = [check for check in checks if check.status == "failed"]
        return cls(
            passed=not any(check.action == "reject" for check in failed),
            flagged=any(check.action == "flag" for check in failed),
            checks=list(checks),
            reasons=[f"{check.name}: {check.reason}" for check in failed],
        )

    @property
    def scores(self) -> dict[str, float]:
        """Score of every check that measured something, by check name."""
        return {check.name: check.score for check in self.checks if check.score is not None}

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "flagged": self.flagged,
            "checks": [check.to_dict() for check in self.checks],
            "scores": self.scores,
            "reasons": list(self.reasons),
        }
