"""Calibration: how well each sentinel check predicts what reviewers decide, and what threshold would do better.

A *label* is the latest review decision on an output (approve → approved, reject → rejected). For every check
that scored labelled outputs this reports the score distributions of both classes, the precision/recall its
current bands have as predictors of a human rejection (positive = a reviewer rejected it), and the cut that
maximises F1 on the labels. The computations are pure functions over ``LabelledOutput`` rows;
``calibration_report`` reads them from the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfygate.platform.models import ReviewDecision, Run, RunOutput, WorkflowVersion
from comfygate.platform.services.workflows import get_version
from comfygate.sentinel.check_specs import CHECKS

__all__ = ["LabelledOutput", "BandMetrics", "calibration_report", "labelled_outputs", "calibrate",
           "check_calibration", "band_metrics", "histogram", "suggest_threshold", "with_threshold",
           "MIN_LABELS_PER_CLASS", "HISTOGRAM_BINS"]

# Fewer labels than this of either class and a suggested threshold would only fit the noise.
MIN_LABELS_PER_CLASS = 10
HISTOGRAM_BINS = 10


@dataclass(frozen=True)
class LabelledOutput:
    output_id: int
    run_id: str
    index: int
    rejected: bool  # the label: True when the latest human decision was "reject"
    gate_passed: bool  # the sentinel passed it (so a reviewer only saw it as an audit sample)
    verdict: Mapping[str, Any]

    def score(self, check: str) -> float | None:
        for entry in self.verdict.get("checks", []):
            if entry.get("name") == check:
                score = entry.get("score")
                return float(score) if entry.get("status") != "not_run" and score is not None else None
        return None

    def recorded_threshold(self, check: str, band: str) -> tuple[float, str] | None:
        """The number the gate actually compared with (percentile thresholds are resolved per run)."""
        for entry in self.verdict.get("checks", []):
            if entry.get("name") == check and band in (entry.get("thresholds") or {}):
                source = (entry.get("threshold_sources") or {}).get(band, "recorded")
                return float(entry["thresholds"][band]), source
        return None


@dataclass(frozen=True)
class BandMetrics:
    """Confusion counts of "the band catches it" against "a reviewer rejected it"."""

    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int

    @property
    def precision(self) -> float | None:
        caught = self.true_positives + self.false_positives
        return self.true_positives / caught if caught else None

    @property
    def recall(self) -> float | None:
        rejected = self.true_positives + self.false_negatives
        return self.true_positives / rejected if rejected else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.true_positives, "fp": self.false_positives, "fn": self.false_negatives,
                "tn": self.true_negatives, "precision": self.precision, "recall": self.recall, "f1": self.f1}


def _caught(score: float, cut: float, lower_is_better: bool) -> bool:
    # Higher-better checks fail below the cut; nsfw fails above it (the gate's band semantics).
    return score > cut if lower_is_better else score < cut


def band_metrics(scored: Sequence[tuple[float, bool]], cut: float, *, lower_is_better: bool = False
                 ) -> BandMetrics:
    """Metrics of the band ``score < cut`` (``> cut`` when lower is better) over (score, rejected) pairs."""
    tp = fp = fn = tn = 0
    for score, rejected in scored:
        caught = _caught(score, cut, lower_is_better)
        tp += caught and rejected
        fp += caught and not rejected
        fn += not caught and rejected
        tn += not caught and not rejected
    return BandMetrics(tp, fp, fn, tn)


def histogram(scored: Sequence[tuple[float, bool]], bins: int = HISTOGRAM_BINS) -> dict[str, list[Any]]:
    """Counts of approved and rejected scores in ``bins`` equal bins over the observed range."""
    if not scored:
        return {"edges": [], "approved": [], "rejected": []}
    low = min(s for s, _ in scored)
    high = max(s for s, _ in scored)
    width = (high - low) / bins  # 0 when one value was observed: every score lands in the first bin
    counts = {"approved": [0] * bins, "rejected": [0] * bins}
    for score, rejected in scored:
        slot = min(int((score - low) / width), bins - 1) if width else 0  # the top edge is in the last bin
        counts["rejected" if rejected else "approved"][slot] += 1
    return {"edges": [low + i * width for i in range(bins + 1)], **counts}


def suggest_threshold(scored: Sequence[tuple[float, bool]], *, lower_is_better: bool = False
                      ) -> tuple[float, BandMetrics] | None:
    """The cut at an observed score that maximises F1 of "caught" vs "rejected"; ties go to the most lenient
    cut (the one that catches fewest). None when no cut catches a rejected output."""
    # Most lenient first: for higher-better checks a lower cut catches fewer outputs.
    candidates = sorted({s for s, _ in scored}, reverse=lower_is_better)
    best: tuple[float, BandMetrics] | None = None
    for cut in candidates:
        metrics = band_metrics(scored, cut, lower_is_better=lower_is_better)
        if metrics.f1 and (best is None or metrics.f1 > (best[1].f1 or 0.0)):
            best = (cut, metrics)
    return best


def _band_cut(check: str, band: str, setting: Any, labelled: Sequence[LabelledOutput]
              ) -> tuple[float, str] | None:
    """The number a band compares with: a fixed threshold, or the latest one the gate resolved from a
    percentile spec (its fallback when no labelled output recorded one)."""
    if isinstance(setting, bool) or not isinstance(setting, int | float | dict):
        return None
    if not isinstance(setting, dict):
        return float(setting), "fixed"
    for output in reversed(labelled):  # newest first
        recorded = output.recorded_threshold(check, band)
        if recorded is not None:
            return recorded
    return float(setting["fallback"]), "fallback (no output recorded a resolved value)"


def _yes_no_band(setting: Any) -> str | None:
    return setting if setting in ("reject", "review") else None


def check_calibration(check: str, setting: Any, labelled: Sequence[LabelledOutput]) -> dict[str, Any] | None:
    """One check's report over the labelled outputs, or None when none of them has a score for it.

    ``setting`` is the check's entry in the normalised policy ("off", "reject", or a band object).
    """
    scored = [(s, o.rejected) for o in labelled if (s := o.score(check)) is not None]
    if not scored:
        return None
    # Direction and kind from the sentinel's table of checks (nsfw is the one where a LOW score is good); a
    # check it no longer knows (an old verdict) is read as a higher-is-better scored check.
    spec = CHECKS.get(check)
    kind = spec.kind if spec else "scored"
    lower_is_better = spec is not None and not spec.higher_is_better
    n_rejected = sum(rejected for _, rejected in scored)
    report: dict[str, Any] = {
        "name": check,
        "kind": kind,
        "better": "lower" if lower_is_better else "higher",
        "approved": len(scored) - n_rejected,
        "rejected": n_rejected,
        "histogram": histogram(scored),
        "thresholds": setting,
        "bands": {},
        "suggestion": None,
        "note": None,
    }
    if kind == "yesno":
        # decode/finite score 1.0 when fine; anything less fails, in the band the policy names.
        band = _yes_no_band(setting)
        if band is not None:
            report["bands"][band] = {"cut": 1.0, "source": "yes/no", **band_metrics(scored, 1.0).to_dict()}
        report["note"] = "yes/no check: there is no threshold to tune"
        return report

    bands = setting if isinstance(setting, dict) else {}
    cuts = {band: cut for band in ("reject", "review", "flag")
            if (cut := _band_cut(check, band, bands.get(band), labelled)) is not None}
    for band, (cut, source) in cuts.items():
        report["bands"][band] = {"cut": cut, "source": source,
                                 **band_metrics(scored, cut, lower_is_better=lower_is_better).to_dict()}
    if "reject" in cuts and "review" in cuts:
        # The review band reaches past the reject band (reject is the stricter one), so together they catch
        # exactly what the review cut catches.
        cut, source = cuts["review"]
        report["bands"]["reject_or_review"] = {
            "cut": cut, "source": source, **band_metrics(scored, cut, lower_is_better=lower_is_better).to_dict()}

    band = "flag" if kind == "soft" else "reject"
    n_approved = len(scored) - n_rejected
    if n_approved < MIN_LABELS_PER_CLASS or n_rejected < MIN_LABELS_PER_CLASS:
        report["note"] = (f"no suggestion: needs at least {MIN_LABELS_PER_CLASS} approved and "
                          f"{MIN_LABELS_PER_CLASS} rejected outputs with a {check} score; "
                          f"have {n_approved} approved and {n_rejected} rejected")
        return report
    best = suggest_threshold(scored, lower_is_better=lower_is_better)
    if best is None:
        report["note"] = "no suggestion: no cut catches any rejected output"
        return report
    cut, metrics = best
    report["suggestion"] = {"band": band, "threshold": int(cut) if spec and spec.integer else cut,
                            **metrics.to_dict()}
    return report


def calibrate(labelled: Sequence[LabelledOutput], policy: Mapping[str, Any]) -> dict[str, Any]:
    """The whole report for one workflow: labels, the gate's misses, and one entry per check with scores.

    ``labelled`` is oldest first; ``policy`` is the normalised policy whose thresholds are "current".
    """
    settings: Mapping[str, Any] = policy.get("checks", {})
    names = list(settings) + sorted({e.get("name") for o in labelled for e in o.verdict.get("checks", [])
                                     if e.get("name") and e.get("name") not in settings})
    checks = [entry for name in names if (entry := check_calibration(name, settings.get(name, "off"), labelled))]
    misses = [{"output_id": o.output_id, "run_id": o.run_id, "index": o.index}
              for o in labelled if o.gate_passed and o.rejected]
    n_rejected = sum(o.rejected for o in labelled)
    return {
        "labels": {"approved": len(labelled) - n_rejected, "rejected": n_rejected},
        # Outputs the gate passed that a reviewer then rejected (audit samples): what the gate let through.
        "gate_misses": misses,
        "checks": checks,
    }


def with_threshold(policy: Mapping[str, Any], check: str, band: str, value: float) -> dict[str, Any]:
    """A copy of the policy with one band of one check set to ``value`` (applying a suggestion); the other
    bands of the check are kept. The result still goes through validation when it is saved."""
    checks = dict(policy.get("checks", {}))
    current = checks.get(check)
    checks[check] = {**(current if isinstance(current, dict) else {}), band: value}
    return {**policy, "checks": checks}


def labelled_outputs(session: Session, workflow_id: int) -> list[LabelledOutput]:
    """Every output of the workflow's versions that a person decided on, labelled by the latest decision."""
    rows = session.execute(
        select(ReviewDecision.output_id, ReviewDecision.decision, RunOutput.run_id, RunOutput.index,
               RunOutput.passed, RunOutput.verdict)
        .join(RunOutput, RunOutput.id == ReviewDecision.output_id)
        .join(Run, Run.id == RunOutput.run_id)
        .join(WorkflowVersion, WorkflowVersion.id == Run.version_id)
        .where(WorkflowVersion.workflow_id == workflow_id)
        .order_by(ReviewDecision.created_at, ReviewDecision.id)
    ).all()
    latest: dict[int, LabelledOutput] = {}
    for output_id, decision, run_id, index, passed, verdict in rows:
        latest.pop(output_id, None)  # re-insert so the dict stays ordered by each output's latest decision
        latest[output_id] = LabelledOutput(output_id, run_id, index, decision == "reject", bool(passed),
                                           verdict or {})
    return list(latest.values())


def calibration_report(session: Session, workflow: str) -> dict[str, Any]:
    """``calibrate`` for a workflow by name, against its latest version's policy."""
    version = get_version(session, workflow)
    report = calibrate(labelled_outputs(session, version.workflow_id), version.policy)
    return {"workflow": workflow, "version": version.number, "policy_revision": version.policy_revision,
            "policy_url": f"/v1/workflows/{workflow}/versions/{version.number}/policy",
            "min_labels_per_class": MIN_LABELS_PER_CLASS, **report}
