"""Results of the checks and the verdict built from them; both serialise to plain JSON and back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .hashing import ImageHash

__all__ = ["CheckResult", "Verdict", "Status", "Band", "Decision", "NON_RETRYABLE_CHECKS"]

Status = Literal["passed", "failed", "flagged", "not_run"]
Band = Literal["reject", "review", "flag"]
Decision = Literal["pass", "review", "reject"]

# A new seed cannot fix these: the file or the numbers are broken, not the picture.
NON_RETRYABLE_CHECKS = frozenset({"decode", "finite"})


@dataclass
class CheckResult:
    """The outcome of one check.

    ``status``: ``passed``; ``failed`` (the score fell in the reject or review band, ``band`` says which);
    ``flagged`` (a soft check under its flag threshold, ``band`` is ``"flag"``); ``not_run`` (``reason`` says
    why: off in this policy, no model configured, no prompt, image did not decode, skipped after a reject).
    ``thresholds`` are the resolved numbers per band the score was compared with, ``threshold_sources`` where
    each came from (``"fixed"``, ``"p10 of 240 recent"``, ``"fallback (12 of 50 recent)"``). ``code`` is the
    stable machine-readable reason code of a failure or flag (``"blank"``, ``"near_duplicate"``, ...).
    """

    name: str
    status: Status
    score: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_sources: dict[str, str] = field(default_factory=dict)
    band: Band | None = None
    code: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "score": self.score,
            "thresholds": dict(self.thresholds),
            "threshold_sources": dict(self.threshold_sources),
            "band": self.band,
            "code": self.code,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> CheckResult:
        return cls(
            name=d["name"],
            status=d["status"],
            score=d.get("score"),
            thresholds=dict(d.get("thresholds") or {}),
            threshold_sources=dict(d.get("threshold_sources") or {}),
            band=d.get("band"),
            code=d.get("code"),
            reason=d.get("reason"),
        )


@dataclass
class Verdict:
    """The sentinel's decision on one candidate.

    ``decision``: ``"reject"`` when any check failed in its reject band, else ``"review"`` when any failed in
    its review band, else ``"pass"``. ``retryable``: rejected, and no reject came from a check a new seed
    cannot fix (decode, finite). ``checks`` holds every check of the policy in run order, including the ones
    that did not run, so "not run" is never mistaken for "passed". ``image_hash`` is the judged image's
    hash (None when it did not decode), for callers that keep a duplicate history; it is not part of the JSON.
    """

    decision: Decision
    retryable: bool
    checks: list[CheckResult] = field(default_factory=list)
    image_hash: ImageHash | None = field(default=None, compare=False)

    @classmethod
    def from_checks(cls, checks: Sequence[CheckResult], image_hash: ImageHash | None = None) -> Verdict:
        rejects = [check for check in checks if check.status == "failed" and check.band == "reject"]
        reviews = [check for check in checks if check.status == "failed" and check.band == "review"]
        decision: Decision = "reject" if rejects else "review" if reviews else "pass"
        retryable = bool(rejects) and not any(check.name in NON_RETRYABLE_CHECKS for check in rejects)
        return cls(decision=decision, retryable=retryable, checks=list(checks), image_hash=image_hash)

    @property
    def passed(self) -> bool:
        return self.decision == "pass"

    @property
    def reason_codes(self) -> list[str]:
        """Codes of every failed or flagged check, in run order (failures first decide; flags only inform)."""
        return [check.code for check in self.checks if check.status in ("failed", "flagged") and check.code]

    @property
    def reasons(self) -> list[str]:
        """``"<check>: <reason>"`` for every failed check, in run order."""
        return [f"{check.name}: {check.reason}" for check in self.checks if check.status == "failed"]

    @property
    def flags(self) -> list[str]:
        """``"<check>: <reason>"`` for every flagged soft check; flags never reject or hold an output."""
        return [f"{check.name}: {check.reason}" for check in self.checks if check.status == "flagged"]

    @property
    def scores(self) -> dict[str, float]:
        """Score of every check that measured something, by check name."""
        return {check.name: check.score for check in self.checks if check.score is not None}

    def score(self, name: str) -> float | None:
        """The score of check ``name``, or None when it did not measure one (or is not in the verdict)."""
        return next((check.score for check in self.checks if check.name == name), None)

    def check(self, name: str) -> CheckResult | None:
        return next((check for check in self.checks if check.name == name), None)

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "passed": self.passed,
            "retryable": self.retryable,
            "checks": [check.to_dict() for check in self.checks],
            "scores": self.scores,
            "reason_codes": self.reason_codes,
            "reasons": self.reasons,
            "flags": self.flags,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Verdict:
        """Read back ``to_dict()``; the derived keys (passed, scores, reasons, ...) are recomputed."""
        return cls(
            decision=d["decision"],
            retryable=bool(d["retryable"]),
            checks=[CheckResult.from_dict(check) for check in d.get("checks", [])],
        )
