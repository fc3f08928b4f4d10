"""The worker's processing of one run: execute, gate (pixel checks and CLIP), store, record."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from comfygate.platform.db import session_scope
from comfygate.platform.migrate import upgrade
from comfygate.platform.models import RunStatus
from comfygate.platform.services import runs as run_service
from comfygate.platform.services import workflows as workflow_service
from comfygate.platform.services.uploads import ImageLimits
from comfygate.platform.worker import RunProcessor
from comfygate.settings import Settings

RED = 0xFF0000
NODE_PACKS = Path(__file__).resolve().parents[1] / "nodepacks"  # CaptionedImage comes from caption_nodes.py

CAPTIONED = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": RED}},
    "2": {"class_type": "CaptionedImage", "inputs": {"image": ["1", 0], "text": "a red image"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "caption"}},
}
ALIGNMENT_ONLY = {
    "checks": {"blank": {"enabled": False}, "noise": {"enabled": False},
               "clip_alignment": {"enabled": True, "threshold": 0.4}},
    "prompt_input": "prompt",
}


def make_processor(tmp_path, database_url, **settings_changes) -> RunProcessor:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, heartbeat_seconds=0.2,
                        node_pack_dirs=(NODE_PACKS,), **settings_changes)
    upgrade(settings.database_url)
    return RunProcessor(settings)


def submit(processor: RunProcessor, name, workflow, inputs=None, spec=None, policy=None) -> str:
    with session_scope(processor.sessions) as session:
        version = workflow_service.push_version(session, processor.registry, name=name, workflow=workflow,
                                                inputs_spec=spec, policy=policy).version
        run = run_service.create_run(session, processor.registry, processor.storage,
                                     ImageLimits(1 << 20, 1 << 22), version, inputs or {}, {}, None)
        return run.id


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
    (output,) = body["outputs"]
    assert output["released"] and output["verdict"]["passed"]
    clip = next(c for c in output["verdict"]["checks"] if c["name"] == "clip_alignment")
    assert clip["status"] == "not_run" and clip["reason"]  # no model configured: never "passed"
    stored = processor.storage.get(f"runs/{run_id}/1-0.png")
    assert Image.open(io.BytesIO(stored)).size == (output["width"], output["height"])


def test_a_blank_output_is_rejected_and_withheld(tmp_path, database_url, blank_workflow):
    processor = make_processor(tmp_path, database_url)
    run_id = submit(processor, "blank", blank_workflow)
    assert processor.process(run_id, 1) == RunStatus.REJECTED
    (output,) = run_body(processor, run_id)["outputs"]
    assert not output["released"] and output["review"] == "pending"
    assert any("blank" in reason for reason in output["verdict"]["reasons"])
    assert processor.storage.exists(f"runs/{run_id}/1-0.png")  # kept for the reviewer


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
    a, b = (processor.storage.get(f"runs/{r}/1-0.png") for r in (first, second))
    assert a != b  # a different blur really ran
