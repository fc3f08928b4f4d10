"""Verdicts: reject vs review vs pass, retryability, reason codes, and the JSON form both ways."""

from __future__ import annotations

import json

from sentinel_images import candidate, flat, landscape, scene

from comfygate.sentinel import CHECK_NAMES, CheckResult, Policy, Sentinel, Verdict


def failed(name: str, band: str, code: str) -> CheckResult:
    return CheckResult(name, "failed", 0.0, {band: 0.5}, {band: "fixed"}, band, code, f"{code} happened")


def test_decision_takes_the_worst_band():
    passed = CheckResult("noise", "passed", 0.9)
    flagged = CheckResult("blur", "flagged", 1.0, {"flag": 10.0}, {"flag": "fixed"}, "flag", "blurry", "blurry")
    skipped = CheckResult("aesthetic", "not_run", reason="off in this policy")

    assert Verdict.from_checks([passed, flagged, skipped]).decision == "pass"
    assert Verdict.from_checks([passed, failed("blank", "review", "blank")]).decision == "review"
    assert Verdict.from_checks([failed("blank", "review", "blank"), failed("noise", "reject", "noise")]).decision \
        == "reject"
    assert Verdict.from_checks([]).decision == "pass"


def test_only_rejects_a_new_seed_can_fix_are_retryable():
    assert Verdict.from_checks([failed("blank", "reject", "blank")]).retryable
    assert Verdict.from_checks([failed("duplicate", "reject", "near_duplicate")]).retryable
    assert not Verdict.from_checks([failed("decode", "reject", "wrong_size")]).retryable
    assert not Verdict.from_checks([failed("finite", "reject", "not_finite"), failed("blank", "reject", "blank")
                                    ]).retryable
    assert not Verdict.from_checks([failed("blank", "review", "blank")]).retryable  # held, not rejected
    assert not Verdict.from_checks([failed("finite", "review", "not_finite")]).retryable


def test_reasons_flags_and_codes():
    flagged = CheckResult("blur", "flagged", 1.0, {"flag": 10.0}, {"flag": "fixed"}, "flag", "blurry",
                          "image looks blurry")
    verdict = Verdict.from_checks([failed("blank", "review", "blank"), flagged])
    assert verdict.reasons == ["blank: blank happened"]
    assert verdict.flags == ["blur: image looks blurry"]
    assert verdict.reason_codes == ["blank", "blurry"]
    assert verdict.score("blur") == 1.0 and verdict.score("nsfw") is None
    assert verdict.check("blank").band == "review"


def test_every_check_is_in_the_verdict_and_not_run_never_counts_as_passed():
    verdict = Sentinel().evaluate(candidate(landscape(128), prompt="a landscape"), Policy.default())

    assert [check.name for check in verdict.checks] == list(CHECK_NAMES)
    checks = {check.name: check for check in verdict.checks}
    assert checks["clip_alignment"].status == "not_run"
    assert checks["clip_alignment"].reason == "no CLIP model is configured"
    assert checks["clip_alignment"].thresholds == {"reject": 0.2}
    assert checks["aesthetic"].status == checks["nsfw"].status == "not_run"
    assert checks["aesthetic"].reason == "off in this policy"
    assert checks["duplicate"].reason == "no earlier outputs of other requests to compare with"
    assert verdict.passed  # not run is neither a pass nor a failure of the gate
    assert set(verdict.scores) == {"decode", "finite", "blank", "noise", "blur", "colour_entropy"}


def test_to_dict_is_json_ready_and_reads_back():
    verdict = Sentinel().evaluate(candidate(flat()), Policy.default())
    document = json.loads(json.dumps(verdict.to_dict()))

    assert set(document) == {"decision", "passed", "retryable", "checks", "scores", "reason_codes", "reasons",
                             "flags"}
    assert (document["decision"], document["passed"], document["retryable"]) == ("reject", False, True)
    assert document["reason_codes"] == ["blank"]
    assert document["scores"] == {"decode": 1.0, "finite": 1.0, "blank": 0.0}
    assert document["checks"][2] == {
        "name": "blank", "status": "failed", "score": 0.0, "thresholds": {"reject": 0.02},
        "threshold_sources": {"reject": "fixed"}, "band": "reject", "code": "blank",
        "reason": document["reasons"][0].removeprefix("blank: "),
    }
    assert document["checks"][3]["reason"] == "skipped: blank rejected the image"
    assert Verdict.from_dict(document) == verdict
    assert Verdict.from_dict(document).to_dict() == document


def test_a_passing_verdict_round_trips_too():
    verdict = Sentinel().evaluate(candidate(scene(64)), Policy.default())
    assert verdict.decision == "pass" and not verdict.retryable
    assert Verdict.from_dict(json.loads(json.dumps(verdict.to_dict()))) == verdict
