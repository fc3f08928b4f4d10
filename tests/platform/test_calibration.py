"""Calibration against reviewers' labels, on a real database: precision/recall of each check's bands and the
suggested thresholds, on a small set whose answers are worked out by hand below."""

from __future__ import annotations

import pytest

from comfygate.platform.db import session_scope
from comfygate.platform.errors import NotFound, Unprocessable
from comfygate.platform.models import Run, RunOutput, RunStatus
from comfygate.platform.services import calibration, review
from comfygate.platform.services import workflows as workflow_service

POLICY = {"checks": {"blank": {"reject": 0.1, "review": 0.3}, "nsfw": {"reject": 0.9}, "clip_alignment": "off"}}

# (blank score, nsfw score) per output. blank is higher-is-better, nsfw lower-is-better.
REJECTED = [(0.01, 0.6), (0.02, 0.65), (0.03, 0.7), (0.04, 0.75), (0.05, 0.8), (0.06, 0.85), (0.07, 0.9),
            (0.08, 0.95), (0.09, 0.99),
            (0.35, 0.55)]  # passes both bands: an audit sample a reviewer rejected, i.e. a gate miss
APPROVED = [(0.15, 0.0), (0.2, 0.05), (0.25, 0.1),  # in blank's review band: held, then approved
            (0.4, 0.15), (0.45, 0.2), (0.5, 0.25), (0.55, 0.3), (0.6, 0.35), (0.65, 0.4), (0.7, 0.5)]


def _check(name, score, thresholds, caught_by):
    status = "failed" if caught_by else "passed"
    return {"name": name, "status": status, "score": score, "thresholds": thresholds,
            "threshold_sources": {band: "fixed" for band in thresholds}, "band": caught_by,
            "code": name if caught_by else None, "reason": f"{name} {score}" if caught_by else None}


def verdict(blank: float, nsfw: float) -> dict:
    """The v2 verdict the gate records under POLICY (decode passed, clip off)."""
    blank_band = "reject" if blank < 0.1 else "review" if blank < 0.3 else None
    nsfw_band = "reject" if nsfw > 0.9 else None
    bands = [b for b in (blank_band, nsfw_band) if b]
    decision = "reject" if "reject" in bands else "review" if bands else "pass"
    checks = [
        _check("decode", 1.0, {}, None),
        {"name": "clip_alignment", "status": "not_run", "score": None, "thresholds": {}, "threshold_sources": {},
         "band": None, "code": None, "reason": "off in this policy"},
        _check("blank", blank, {"reject": 0.1, "review": 0.3}, blank_band),
        _check("nsfw", nsfw, {"reject": 0.9}, nsfw_band),
    ]
    return {"decision": decision, "passed": decision == "pass", "retryable": decision == "reject",
            "checks": checks, "scores": {"decode": 1.0, "blank": blank, "nsfw": nsfw},
            "reason_codes": [c["code"] for c in checks if c["code"]],
            "reasons": [c["reason"] for c in checks if c["reason"]], "flags": []}


def seed_labels(sessions, registry, workflow, name, labelled):
    """One run of ``name`` with an output per (scores, decision), each decided in the review queue."""
    with session_scope(sessions) as session:
        version = workflow_service.push_version(session, registry, name=name, workflow=workflow,
                                                policy=POLICY).version
        run = Run(version_id=version.id, status=RunStatus.REJECTED, inputs={}, prompt=version.graph,
                  project_id=version.workflow.project_id)
        session.add(run)
        session.flush()
        ids = []
        for index, ((blank, nsfw), _) in enumerate(labelled):
            v = verdict(blank, nsfw)
            output = RunOutput(run_id=run.id, workflow_id=version.workflow_id, index=index, node_id="2",
                               filename=f"{index}.png", storage_key=f"runs/{run.id}/{index}.png",
                               content_type="image/png", size_bytes=1, verdict=v, passed=v["passed"],
                               released=v["passed"], review_state="pending", sampled=v["passed"])
            session.add(output)
            session.flush()
            ids.append(output.id)
    for output_id, (_, decision) in zip(ids, labelled, strict=True):
        with session_scope(sessions) as session:
            review.decide(session, output_id, decision, "admin")
    return ids


def test_report_from_review_labels(sessions, registry, blank_workflow):
    labelled = [(s, "reject") for s in REJECTED] + [(s, "approve") for s in APPROVED]
    ids = seed_labels(sessions, registry, blank_workflow, "blank", labelled)
    seed_labels(sessions, registry, blank_workflow, "other", [((0.5, 0.99), "reject")])  # must not count here
    with session_scope(sessions) as session:
        body = calibration.calibration_report(session, "blank")

    assert body["labels"] == {"approved": 10, "rejected": 10}
    assert body["version"] == 1 and body["policy_revision"] == 1
    # The gate's misses: only the output the gate passed and a reviewer rejected.
    assert [m["output_id"] for m in body["gate_misses"]] == [ids[REJECTED.index((0.35, 0.55))]]
    checks = {c["name"]: c for c in body["checks"]}
    assert list(checks) == ["decode", "blank", "nsfw"]  # clip_alignment never ran: nothing to calibrate
    assert_blank_bands(checks["blank"])
    assert_nsfw_band_and_histogram(checks["nsfw"])
    assert_suggestions(checks)


def assert_blank_bands(blank):
    assert (blank["approved"], blank["rejected"]) == (10, 10)
    assert blank["thresholds"] == {"reject": 0.1, "review": 0.3}
    # reject band (< 0.1): the 9 low rejected ones; 0.35 escapes; no approved one is caught.
    reject = blank["bands"]["reject"]
    assert (reject["tp"], reject["fp"], reject["fn"], reject["tn"]) == (9, 0, 1, 10)
    assert reject["precision"] == 1.0 and reject["recall"] == pytest.approx(0.9)
    assert reject["f1"] == pytest.approx(2 * 0.9 / 1.9)
    # reject + review (< 0.3) also catches the approved 0.15, 0.2 and 0.25.
    both = blank["bands"]["reject_or_review"]
    assert (both["tp"], both["fp"], both["fn"], both["tn"]) == (9, 3, 1, 7)
    assert both["precision"] == pytest.approx(0.75) and both["recall"] == pytest.approx(0.9)


def assert_nsfw_band_and_histogram(nsfw):
    assert nsfw["better"] == "lower"
    # nsfw rejects ABOVE 0.9: only 0.95 and 0.99 are caught.
    current = nsfw["bands"]["reject"]
    assert (current["tp"], current["fp"], current["fn"], current["tn"]) == (2, 0, 8, 10)
    assert current["recall"] == pytest.approx(0.2) and current["f1"] == pytest.approx(1 / 3)
    hist = nsfw["histogram"]
    assert len(hist["edges"]) == 11 and hist["edges"][0] == 0.0 and hist["edges"][-1] == pytest.approx(0.99)
    # Bins of width 0.099: approved 0.0-0.5 fill the low half, rejected 0.55-0.99 the high half.
    assert hist["approved"] == [2, 2, 2, 2, 1, 1, 0, 0, 0, 0]
    assert hist["rejected"] == [0, 0, 0, 0, 0, 1, 2, 2, 2, 3]


def assert_suggestions(checks):
    # nsfw separates perfectly: every rejected score is above 0.5, every approved one at or below it.
    nsfw = checks["nsfw"]["suggestion"]
    assert nsfw["band"] == "reject" and nsfw["threshold"] == 0.5
    assert (nsfw["precision"], nsfw["recall"], nsfw["f1"]) == (1.0, 1.0, 1.0)
    assert min(n for _, n in REJECTED) > nsfw["threshold"] >= max(n for _, n in APPROVED)
    # blank: 0.15 (the lowest approved score) catches the nine low rejected outputs and no approved one;
    # the rejected 0.35 sits among approved scores, so no cut does better.
    blank = checks["blank"]["suggestion"]
    assert blank["threshold"] == 0.15 and blank["precision"] == 1.0 and blank["recall"] == pytest.approx(0.9)
    assert checks["decode"]["suggestion"] is None and "yes/no" in checks["decode"]["note"]


def test_few_labels_give_no_suggestion_and_say_why(sessions, registry, blank_workflow):
    seed_labels(sessions, registry, blank_workflow, "few",
                [((0.01, 0.9), "reject"), ((0.5, 0.1), "approve"), ((0.6, 0.2), "approve")])
    with session_scope(sessions) as session:
        body = calibration.calibration_report(session, "few")
    blank = next(c for c in body["checks"] if c["name"] == "blank")
    assert blank["suggestion"] is None
    assert "at least 10 approved and 10 rejected" in blank["note"] and "have 2 approved and 1 rejected" in blank["note"]
    assert blank["bands"]["reject"]["tp"] == 1  # the current bands are still measured


def test_unknown_workflow_is_not_found(sessions):
    with session_scope(sessions) as session, pytest.raises(NotFound):
        calibration.calibration_report(session, "nope")


def test_applying_a_suggestion_keeps_the_other_bands(sessions, registry, blank_workflow):
    with session_scope(sessions) as session:
        workflow_service.push_version(session, registry, name="blank", workflow=blank_workflow, policy=POLICY)
    with session_scope(sessions) as session:
        version = workflow_service.get_version(session, "blank", 1)
        edited = calibration.with_threshold(version.policy, "blank", "reject", 0.15)
        # reject 0.15 with review 0.3 is still a valid (stricter reject) policy.
        saved = workflow_service.update_policy(session, "blank", 1, edited)
        assert saved.policy["checks"]["blank"] == {"reject": 0.15, "review": 0.3} and saved.policy_revision == 2
        # Past the review band it is refused, naming the key, not silently reordered.
        with pytest.raises(Unprocessable) as caught:
            workflow_service.update_policy(session, "blank", 1,
                                           calibration.with_threshold(saved.policy, "blank", "reject", 0.5))
        assert caught.value.details["field"].startswith("policy.checks.blank")


def test_calibration_over_http_is_admin_only(server, blank_workflow):
    assert server.call("POST", "/v1/workflows", json={"name": "cal", "workflow": blank_workflow}).ok
    assert server.call("GET", "/v1/calibration/cal", key="user").status_code == 403
    assert server.call("GET", "/v1/calibration/nope").status_code == 404
    body = server.call("GET", "/v1/calibration/cal").json()
    assert body["labels"] == {"approved": 0, "rejected": 0} and body["checks"] == [] and body["gate_misses"] == []
