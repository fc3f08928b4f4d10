"""The worker's processing of one run: execute, gate (pixel checks and CLIP), generate again with new seeds
when the policy asks, choose, store, record."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from comfygate.platform.db import session_scope
from comfygate.platform.gate_loop import NO_SEED_REASON, derive_seed
from comfygate.platform.migrate import upgrade
from comfygate.platform.models import ReviewDecision, Run, RunStatus, WebhookDelivery
from comfygate.platform.services import review
from comfygate.platform.services import runs as run_service
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.uploads import ImageLimits
from comfygate.platform.webhooks import WebhookTargets
from comfygate.platform.worker import RunProcessor
from comfygate.settings import Settings

RED = 0xFF0000
# CaptionedImage comes from caption_nodes.py, SeededFrame and SeededFaultyFrame from seeded_nodes.py.
NODE_PACKS = Path(__file__).resolve().parents[1] / "nodepacks"
SEED_MAX = 2**32 - 1  # SeededFrame's declared maximum

CAPTIONED = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": RED}},
    "2": {"class_type": "CaptionedImage", "inputs": {"image": ["1", 0], "text": "a red image"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "caption"}},
}
ALIGNMENT_ONLY = {"checks": {"blank": "off", "noise": "off", "clip_alignment": {"reject": 0.4}},
                  "prompt_input": "prompt"}


def seeded(seed: int = 7, blank_below: int = 1 << 16, node: str = "SeededFrame") -> dict:
    """A frame that is blank for seeds below ``blank_below`` and a structured picture otherwise."""
    inputs = {"seed": seed, "width": 64, "height": 48}
    if node == "SeededFrame":
        inputs["blank_below"] = blank_below
    return {"1": {"class_type": node, "inputs": inputs},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "seeded"}}}


def make_processor(tmp_path, database_url, **settings_changes) -> RunProcessor:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, heartbeat_seconds=0.2,
                        node_pack_dirs=(NODE_PACKS,), **settings_changes)
    upgrade(settings.database_url)
    return RunProcessor(settings)


def submit(processor: RunProcessor, name, workflow, inputs=None, spec=None, policy=None, webhook=None) -> str:
    with session_scope(processor.sessions) as session:
        version = workflow_service.push_version(session, processor.registry, name=name, workflow=workflow,
                                                inputs_spec=spec, policy=policy).version
        run = run_service.create_run(session, processor.registry, processor.storage,
                                     ImageLimits(1 << 20, 1 << 22), version, inputs or {}, {}, None,
                                     webhook=webhook,
                                     # the hosts these tests name, allowed without a DNS lookup
                                     webhook_targets=WebhookTargets.allowing(["127.0.0.1", "example.test"]))
        return run.id


def stored_gate(processor: RunProcessor, run_id: str) -> dict:
    """The gate loop's full record in the run row (every attempt's verdicts and storage keys)."""
    with session_scope(processor.sessions) as session:
        return session.get_one(Run, run_id).gate


def deliveries(processor: RunProcessor, run_id: str) -> list[tuple[str, str]]:
    with session_scope(processor.sessions) as session:
        rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.run_id == run_id)
                               .order_by(WebhookDelivery.id))
        return [(row.event, row.payload["run"]["status"]) for row in rows]


def run_body(processor: RunProcessor, run_id: str) -> dict:
    with session_scope(processor.sessions) as session:
        return run_service.run_to_dict(run_service.get_run(session, run_id))


def test_a_good_run_is_gated_stored_and_timed(tmp_path, database_url, card_workflow):
    processor = make_processor(tmp_path, database_url)
    run_id = submit(processor, "card", card_workflow)
    assert processor.process(run_id, 1) == RunStatus.SUCCEEDED
    assert processor.process(run_id, 1) is None  # a redelivered task finds nothing to do

    body = run_body(processor, run_id)
    assert body["status"] == "succeeded"
    assert set(body["timings"]) >= {"queue_ms", "execute_ms", "sentinel_ms", "store_ms"}
    assert body["timings"]["gate_attempts"] == 1
    (output,) = body["outputs"]
    assert output["released"] and output["verdict"]["passed"] and output["review"] is None
    clip = next(c for c in output["verdict"]["checks"] if c["name"] == "clip_alignment")
    assert clip["status"] == "not_run" and clip["reason"]  # no model configured: never "passed"
    assert body["gate"]["chosen"] == 1 and body["gate"]["retry_stopped"] is None
    stored = processor.storage.get(f"runs/{run_id}/1-1-0.png")
    assert Image.open(io.BytesIO(stored)).size == (output["width"], output["height"])


def test_a_blank_output_is_rejected_and_withheld(tmp_path, database_url, blank_workflow):
    processor = make_processor(tmp_path, database_url)
    run_id = submit(processor, "blank", blank_workflow)
    assert processor.process(run_id, 1) == RunStatus.REJECTED
    (output,) = run_body(processor, run_id)["outputs"]
    assert not output["released"] and output["review"] == "pending"
    assert any("blank" in reason for reason in output["verdict"]["reasons"])
    assert "blank" in output["verdict"]["reason_codes"]
    assert processor.storage.exists(f"runs/{run_id}/1-1-0.png")  # kept for the reviewer


def test_a_node_error_fails_the_run_naming_the_node(tmp_path, database_url):
    processor = make_processor(tmp_path, database_url)
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    run_id = submit(processor, "load", workflow, inputs={"image": _png_base64()},
                    spec={"image": {"node": "1", "input": "image"}})
    # Point the bound name at a file that is not in storage, as if it had been deleted meanwhile.
    with session_scope(processor.sessions) as session:
        run = run_service.get_run(session, run_id)
        run.prompt = {**run.prompt, "1": {"class_type": "LoadImage", "inputs": {"image": "gone.png"}}}
    assert processor.process(run_id, 1) == RunStatus.FAILED
    error = run_body(processor, run_id)["error"]
    assert error["node_id"] == "1" and error["node_type"] == "LoadImage"
    assert "gone.png" in error["message"]


def _png_base64() -> str:
    import base64

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(("caption", "expected"), [("a red image", RunStatus.SUCCEEDED),
                                                   ("a green image", RunStatus.REJECTED)])
def test_prompt_alignment_gates_with_a_local_clip_model(tmp_path, database_url, tiny_clip, caption, expected):
    model_name, weights = tiny_clip
    processor = make_processor(tmp_path, database_url, clip_model=model_name, clip_weights=weights)
    processor.warm_up()
    run_id = submit(processor, "captioned", CAPTIONED, inputs={"prompt": caption},
                    spec={"prompt": {"node": "2", "input": "text"}}, policy=ALIGNMENT_ONLY)
    assert processor.process(run_id, 1) == expected
    (output,) = run_body(processor, run_id)["outputs"]
    clip = next(c for c in output["verdict"]["checks"] if c["name"] == "clip_alignment")
    assert clip["status"] == ("passed" if expected == RunStatus.SUCCEEDED else "failed")
    assert clip["score"] is not None


def test_a_loadimage_file_never_uploaded_fails_naming_the_node_not_as_an_internal_error(tmp_path, database_url):
    # An exported workflow names a file on the exporter's disk; a space is fine in a file name but not in
    # a storage key, so the worker must not trip over it before LoadImage can report it.
    processor = make_processor(tmp_path, database_url)
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "my photo.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    run_id = submit(processor, "constant-image", workflow, spec={"prefix": {"node": "2", "input": "filename_prefix"}})
    assert processor.process(run_id, 1) == RunStatus.FAILED
    error = run_body(processor, run_id)["error"]
    assert (error["node_id"], error["node_type"]) == ("1", "LoadImage")
    assert "my photo.png" in error["message"]


def test_a_second_run_reuses_the_unchanged_nodes_and_times_each_node(tmp_path, database_url, card_workflow):
    processor = make_processor(tmp_path, database_url)
    spec = {"blur": {"node": "7", "input": "blur_radius"}}
    first = submit(processor, "card", card_workflow, {"blur": 6}, spec)
    second = submit(processor, "card", card_workflow, {"blur": 2}, spec)
    for run_id in (first, second):
        assert processor.process(run_id, 1) == RunStatus.SUCCEEDED

    first_timings, second_timings = (run_body(processor, r)["timings"] for r in (first, second))
    assert first_timings["cached_nodes"] == []
    assert set(first_timings["node_ms"]) == {str(n) for n in range(1, 9)}
    # Only the blur and what follows it ran again; the card under it came from the worker's cache.
    assert second_timings["cached_nodes"] == ["1", "2", "3", "4", "5", "6"]
    assert set(second_timings["node_ms"]) == {"7", "8"}
    a, b = (processor.storage.get(f"runs/{r}/1-1-0.png") for r in (first, second))
    assert a != b  # a different blur really ran


def test_a_blank_frame_is_generated_again_with_a_derived_seed_and_the_run_succeeds(tmp_path, database_url):
    processor = make_processor(tmp_path, database_url)
    run_id = submit(processor, "seeded", seeded(seed=7), policy={"retries": 2})
    assert processor.process(run_id, 1) == RunStatus.SUCCEEDED

    body = run_body(processor, run_id)
    first, second = body["gate"]["attempts"]
    assert (first["decision"], second["decision"]) == ("reject", "pass")
    assert "blank" in first["reason_codes"] and first["retryable"]
    # Attempt 1 runs the seed as bound; attempt 2 one derived from the run id and the attempt number.
    assert first["seeds"] == {"1.seed": 7}
    assert second["seeds"] == {"1.seed": derive_seed(run_id, 2, "1", "seed", SEED_MAX)}
    assert body["gate"]["chosen"] == 2 and body["timings"]["gate_attempts"] == 2
    (output,) = body["outputs"]
    assert output["released"] and output["gate_attempt"] == 2
    # Both attempts' verdicts are kept, and both images stay in storage.
    stored = stored_gate(processor, run_id)["attempts"]
    assert [a["outputs"][0]["verdict"]["decision"] for a in stored] == ["reject", "pass"]
    assert all(processor.storage.exists(a["outputs"][0]["storage_key"]) for a in stored)


def test_a_nan_output_is_not_retried(tmp_path, database_url):
    processor = make_processor(tmp_path, database_url)
    run_id = submit(processor, "faulty", seeded(node="SeededFaultyFrame"), policy={"retries": 3})
    assert processor.process(run_id, 1) == RunStatus.REJECTED
    gate = run_body(processor, run_id)["gate"]
    (only,) = gate["attempts"]
    assert only["decision"] == "reject" and not only["retryable"] and "not_finite" in only["reason_codes"]
    assert "a new seed cannot fix" in gate["retry_stopped"] and "not_finite" in gate["retry_stopped"]


def test_a_retry_that_fails_to_run_keeps_the_first_attempt_for_review(tmp_path, database_url):
    processor = make_processor(tmp_path, database_url)
    run_id = submit(processor, "flaky", seeded(node="SeededFlakyFrame"), policy={"retries": 2})
    assert processor.process(run_id, 1) == RunStatus.REJECTED
    body = run_body(processor, run_id)
    (first,) = body["gate"]["attempts"]
    assert first["decision"] == "reject" and "blank" in first["reason_codes"]
    assert "attempt 2 failed to run" in body["gate"]["retry_stopped"]
    (output,) = body["outputs"]
    assert output["review"] == "pending" and not output["released"]


def test_derived_seeds_stay_within_the_declared_range():
    seeds = {derive_seed("run", attempt, "1", "seed", maximum=20, minimum=10) for attempt in range(2, 200)}
    assert min(seeds) >= 10 and max(seeds) <= 20 and len(seeds) > 5


def test_a_workflow_without_a_seed_is_not_retried_and_says_why(tmp_path, database_url, blank_workflow):
    processor = make_processor(tmp_path, database_url)
    run_id = submit(processor, "blank", blank_workflow, policy={"retries": 2})
    assert processor.process(run_id, 1) == RunStatus.REJECTED
    gate = run_body(processor, run_id)["gate"]
    assert len(gate["attempts"]) == 1 and gate["retry_stopped"] == NO_SEED_REASON


def test_best_of_returns_the_best_scoring_passing_attempt(tmp_path, database_url):
    processor = make_processor(tmp_path, database_url)
    # Never blank; the picture's contrast (the blank check's score) varies with the seed.
    run_id = submit(processor, "best", seeded(seed=7, blank_below=0), policy={"best_of": 3, "rank_by": "blank"})
    assert processor.process(run_id, 1) == RunStatus.SUCCEEDED
    body = run_body(processor, run_id)
    attempts = body["gate"]["attempts"]
    assert [a["decision"] for a in attempts] == ["pass"] * 3
    contrast = {a["attempt"]: a["outputs"][0]["scores"]["blank"] for a in attempts}
    assert len(set(contrast.values())) == 3  # three different pictures
    best = max(contrast, key=contrast.__getitem__)
    assert body["gate"]["chosen"] == best and body["outputs"][0]["gate_attempt"] == best
    assert body["outputs"][0]["verdict"]["scores"]["blank"] == contrast[best]


def test_a_sampled_passing_output_goes_to_review_but_stays_released(tmp_path, database_url):
    processor = make_processor(tmp_path, database_url)
    run_id = submit(processor, "audited", seeded(blank_below=0), policy={"review_sample_rate": 1.0},
                    webhook="http://127.0.0.1:9/hook")
    assert processor.process(run_id, 1) == RunStatus.SUCCEEDED
    (output,) = run_body(processor, run_id)["outputs"]
    assert output["released"] and output["sampled"] and output["review"] == "pending"
    assert deliveries(processor, run_id) == [("run.ended", "succeeded")]  # a sample holds nothing back
    with session_scope(processor.sessions) as session:
        (item,) = [review.review_item(o) for o in review.pending_outputs(session)]
        assert item["sampled"] and item["decision"] == "pass" and item["attempts"][0]["decision"] == "pass"
        review.decide(session, item["output_id"], "reject", "auditor", "the gate missed this")
    body = run_body(processor, run_id)
    # The label is recorded; the output the caller already has stays released and the run succeeded.
    assert body["status"] == "succeeded" and body["outputs"][0]["released"]
    assert body["outputs"][0]["review"] == "rejected"
    with session_scope(processor.sessions) as session:
        assert session.scalars(select(ReviewDecision.decision)).all() == ["reject"]
    assert deliveries(processor, run_id) == [("run.ended", "succeeded")]


def test_an_output_in_the_review_band_holds_the_run_until_a_reviewer_approves(tmp_path, database_url):
    processor = make_processor(tmp_path, database_url)
    # The picture's contrast passes the reject band (0.02) but falls in the review band (below 0.9).
    policy = {"checks": {"blank": {"reject": 0.02, "review": 0.9}}}
    run_id = submit(processor, "held", seeded(blank_below=0), policy=policy, webhook="https://example.test/h")
    assert processor.process(run_id, 1) == RunStatus.HELD
    body = run_body(processor, run_id)
    (output,) = body["outputs"]
    assert not output["released"] and output["review"] == "pending" and not output["sampled"]
    assert output["verdict"]["decision"] == "review"
    assert deliveries(processor, run_id) == []  # the webhook waits for the reviewer
    with session_scope(processor.sessions) as session:
        item = review.review_item(review.pending_outputs(session)[0])
        assert item["decision"] == "review" and item["run_status"] == "held" and "blank" in item["reason_codes"]
        decided = review.decide(session, output["id"], "approve", "admin")
        assert decided.run.status == RunStatus.SUCCEEDED
    assert run_body(processor, run_id)["outputs"][0]["released"]
    assert deliveries(processor, run_id) == [("run.reviewed", "succeeded")]


def test_a_different_request_that_repeats_an_earlier_picture_is_a_duplicate(tmp_path, database_url):
    processor = make_processor(tmp_path, database_url)
    # blank_below does not change the picture for seed 7, but it makes a different request.
    spec = {"blank_below": {"node": "1", "input": "blank_below"}}
    first = submit(processor, "repeats", seeded(blank_below=0), {"blank_below": 0}, spec)
    again = submit(processor, "repeats", seeded(blank_below=0), {"blank_below": 0}, spec)
    other = submit(processor, "repeats", seeded(blank_below=0), {"blank_below": 1}, spec)
    later = submit(processor, "repeats", seeded(blank_below=0), {"blank_below": 2}, spec)
    assert [processor.process(r, 1) for r in (first, again)] == [RunStatus.SUCCEEDED] * 2  # a request may repeat
    # This worker remembers what it recorded; a fresh one (another worker) reads it from the database.
    fresh = make_processor(tmp_path, database_url)
    assert (processor.process(other, 1), fresh.process(later, 1)) == (RunStatus.REJECTED, RunStatus.REJECTED)
    for run_id, earlier in ((other, (first, again)), (later, (first, again, other))):
        (output,) = run_body(processor, run_id)["outputs"]
        duplicate = next(c for c in output["verdict"]["checks"] if c["name"] == "duplicate")
        assert duplicate["code"] == "exact_duplicate" and duplicate["score"] == 0
        assert any(f"run {e} output 0" in duplicate["reason"] for e in earlier), duplicate["reason"]
