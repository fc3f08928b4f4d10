"""Verdicts: reject vs flag, reasons, JSON form, and the CLIP check without a model."""

from __future__ import annotations

import json

from sentinel_images import candidate, flat, scene

from comfygate.sentinel import CheckResult, Policy, Sentinel, Verdict


def test_reject_action_fails_the_verdict():
    verdict = Sentinel().evaluate(candidate(flat()), Policy.integrity_only())
    assert not verdict.passed
    assert not verdict.flagged


def test_flag_action_passes_but_flags():
    policy = Policy.from_dict({"checks": {"blank": {"action": "flag"}, "clip_alignment": {"enabled": False}}})
    verdict = Sentinel().evaluate(candidate(flat()), policy)

    assert verdict.passed
    assert verdict.flagged
    assert len(verdict.reasons) == 1 and verdict.reasons[0].startswith("blank: image is blank")
    blank = next(c for c in verdict.checks if c.name == "blank")
    assert (blank.status, blank.action) == ("failed", "flag")


def test_flag_and_reject_failures_together():
    policy = Policy.from_dict({"checks": {"blank": {"action": "flag"}}})
    cand = candidate(flat(), declared=(10, 10))
    verdict = Sentinel().evaluate(cand, policy)
    assert not verdict.passed and verdict.flagged
    assert [reason.split(":")[0] for reason in verdict.reasons] == ["decode", "blank"]


def test_disabled_checks_are_absent_and_cannot_fail():
    policy = Policy.from_dict({"checks": {"blank": {"enabled": False}, "clip_alignment": {"enabled": False}}})
    verdict = Sentinel().evaluate(candidate(flat()), policy)
    assert verdict.passed
    assert [c.name for c in verdict.checks] == ["decode", "finite", "noise"]


def test_clip_check_is_not_run_without_a_model_and_never_passes():
    verdict = Sentinel().evaluate(candidate(scene()), Policy.from_dict(None), prompt_text="a scene")
    clip = verdict.checks[-1]
    assert clip.name == "clip_alignment"
    assert clip.status == "not_run"
    assert clip.reason == "no CLIP model is configured"
    assert clip.score is None and clip.threshold == 0.2
    assert verdict.passed  # not run is neither a pass nor a failure of the gate
    assert "clip_alignment" not in verdict.scores


def test_to_dict_is_json_ready():
    verdict = Sentinel().evaluate(candidate(flat()), Policy.from_dict(None))
    document = json.loads(json.dumps(verdict.to_dict()))

    assert set(document) == {"passed", "flagged", "checks", "scores", "reasons"}
    assert document["passed"] is False
    assert document["scores"] == {"decode": 1.0, "finite": 1.0, "blank": 0.0, "noise": 1.0}
    assert document["checks"][2] == {
        "name": "blank", "status": "failed", "action": "reject", "score": 0.0, "threshold": 0.02,
        "reason": document["reasons"][0].removeprefix("blank: "),
    }
    assert all(isinstance(value, float) for value in document["scores"].values())


def test_verdict_from_no_checks_passes():
    assert Verdict.from_checks([]) == Verdict(passed=True, flagged=False, checks=[], reasons=[])
    failed_flag = CheckResult("noise", "failed", "flag", 0.01, 0.2, "looks like noise")
    assert Verdict.from_checks([failed_flag]).reasons == ["noise: looks like noise"]
