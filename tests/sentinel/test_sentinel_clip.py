"""ClipScorer and the prompt-alignment check with a tiny real open_clip model trained by a fixture."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sentinel_images import encode
from tiny_clip import COLOURS, TINY_CLIP_CONFIG, build_tiny_clip, caption, colour_image

from comfygate.sentinel import (
    Candidate,
    ClipScorer,
    Policy,
    ScorerUnavailable,
    Sentinel,
    config_sidecar_path,
)

CAPTIONS = [caption(colour) for colour in COLOURS]


@pytest.mark.parametrize("colour", list(COLOURS))
def test_matching_caption_scores_above_every_other(tiny_clip_scorer, colour):
    scores = dict(zip(CAPTIONS, tiny_clip_scorer.similarity(colour_image(colour), CAPTIONS), strict=True))
    matched = scores.pop(caption(colour))
    assert all(matched > other for other in scores.values()), (colour, matched, scores)
    assert min(scores.values()) >= -1.0 and matched <= 1.0


def test_similarity_of_no_texts_is_empty(tiny_clip_scorer):
    assert tiny_clip_scorer.similarity(colour_image("red"), []) == []
    with pytest.raises(TypeError):
        tiny_clip_scorer.similarity(colour_image("red"), "a red image")


def colour_candidate(colour: str) -> Candidate:
    return Candidate(data=encode(colour_image(colour, size=64)), content_type="image/png")


def alignment(verdict):
    return next(check for check in verdict.checks if check.name == "clip_alignment")


def test_gate_passes_a_matching_prompt_and_rejects_a_mismatched_one(tiny_clip_scorer):
    sentinel = Sentinel(clip=tiny_clip_scorer)
    policy = Policy.from_dict({"checks": {"blank": {"enabled": False}, "clip_alignment": {"threshold": 0.5}}})

    matched = sentinel.evaluate(colour_candidate("red"), policy, prompt_text="a red image")
    mismatched = sentinel.evaluate(colour_candidate("red"), policy, prompt_text="a blue image")

    assert matched.passed and alignment(matched).status == "passed"
    assert alignment(matched).score > 0.5
    assert not mismatched.passed
    assert alignment(mismatched).status == "failed"
    assert "does not match the prompt" in alignment(mismatched).reason
    assert mismatched.scores["clip_alignment"] < 0.5


def test_gate_flags_a_mismatch_when_the_policy_says_flag(tiny_clip_scorer):
    policy = Policy.from_dict({"checks": {
        "blank": {"enabled": False}, "clip_alignment": {"threshold": 0.5, "action": "flag"},
    }})
    verdict = Sentinel(clip=tiny_clip_scorer).evaluate(colour_candidate("green"), policy, "a yellow image")
    assert verdict.passed and verdict.flagged
    assert verdict.reasons[0].startswith("clip_alignment: ")


def test_clip_check_is_not_run_without_prompt_text(tiny_clip_scorer):
    sentinel = Sentinel(clip=tiny_clip_scorer)
    for prompt in (None, "   "):
        check = alignment(sentinel.evaluate(colour_candidate("red"), Policy.from_dict(None), prompt))
        assert check.status == "not_run"
        assert check.reason == "no prompt text was given"


def test_clip_check_is_not_run_on_an_undecodable_file(tiny_clip_scorer):
    verdict = Sentinel(clip=tiny_clip_scorer).evaluate(
        Candidate(b"\x89PNG broken", "image/png"), Policy.from_dict(None), "a red image"
    )
    assert alignment(verdict).status == "not_run"
    assert alignment(verdict).reason.startswith("the image did not decode")


def test_threads_share_one_lazily_loaded_model(tiny_clip):
    name, weights_path = tiny_clip
    scorer = ClipScorer(name, weights_path)
    assert not scorer.loaded
    results: list[list[float]] = []

    def score() -> None:
        results.append(scorer.similarity(colour_image("blue"), CAPTIONS))

    threads = [threading.Thread(target=score) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert scorer.loaded
    assert len(results) == 4
    assert all(result == pytest.approx(results[0], abs=1e-5) for result in results)


def test_a_worker_process_loads_the_model_from_its_two_settings_without_network(tiny_clip):
    # A fresh interpreter has never heard of the tiny config: the sidecar next to the weights must
    # suffice. Connecting anywhere is made to fail, so a download attempt would fail the load.
    name, weights_path = tiny_clip
    assert config_sidecar_path(weights_path).is_file()
    script = (
        "import json, socket, sys\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from comfygate.sentinel import ClipScorer\n"
        "from tiny_clip import colour_image\n"
        "scorer = ClipScorer(sys.argv[1], sys.argv[2])\n"
        "print(json.dumps(scorer.similarity(colour_image('red'), ['a red image', 'a blue image'])))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, name, str(weights_path)],
        capture_output=True, text=True, cwd=Path(__file__).parent, check=False,
    )
    assert out.returncode == 0, out.stderr
    red, blue = json.loads(out.stdout)
    assert red > blue


def test_config_can_be_given_explicitly(tiny_clip, tmp_path):
    _, weights_path = tiny_clip
    copied = tmp_path / "weights.bin"
    shutil.copyfile(weights_path, copied)
    config = tmp_path / "architecture.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))

    scorer = ClipScorer("comfygate-tiny-clip-explicit", copied, config_path=config)
    red, blue = scorer.similarity(colour_image("red"), ["a red image", "a blue image"])
    assert red > blue


def test_missing_weights_file_is_unavailable(tmp_path):
    scorer = ClipScorer("ViT-B-32", tmp_path / "absent.pt")
    with pytest.raises(ScorerUnavailable, match="absent.pt' does not exist"):
        scorer.load()
    assert not scorer.loaded


def test_unknown_model_name_is_unavailable(tiny_clip, tmp_path):
    _, weights_path = tiny_clip
    lonely = tmp_path / "lonely.pt"
    shutil.copyfile(weights_path, lonely)  # no sidecar config next to this copy
    with pytest.raises(ScorerUnavailable, match="unknown open_clip model 'no-such-model'"):
        ClipScorer("no-such-model", lonely).load()


@pytest.mark.parametrize("name", ["hf-hub:timm/ViT-B-16-SigLIP", "local-dir:/models/clip", "ViT-B-16-SigLIP"])
def test_names_that_would_reach_a_hub_are_refused(tiny_clip, name):
    _, weights_path = tiny_clip
    with pytest.raises(ScorerUnavailable, match="not supported"):
        ClipScorer(name, weights_path).load()


def test_weights_that_do_not_fit_the_model_are_unavailable(tiny_clip, tmp_path):
    name, weights_path = tiny_clip
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ScorerUnavailable, match="cannot load CLIP model"):
        ClipScorer(name, garbage).load()

    # Real weights of another architecture: the tensors do not match.
    other = dict(TINY_CLIP_CONFIG, embed_dim=16)
    wrong = tmp_path / "wrong.pt"
    shutil.copyfile(weights_path, wrong)
    config_sidecar_path(wrong).write_text(json.dumps(other))
    with pytest.raises(ScorerUnavailable, match="cannot load CLIP model"):
        ClipScorer("comfygate-tiny-clip-16", wrong).load()


def test_an_unusable_config_file_is_unavailable(tiny_clip, tmp_path):
    _, weights_path = tiny_clip
    weights = tmp_path / "w.pt"
    shutil.copyfile(weights_path, weights)
    config_sidecar_path(weights).write_text("{not json")
    with pytest.raises(ScorerUnavailable, match="cannot read CLIP model config"):
        ClipScorer("comfygate-bad-config", weights).load()

    hub_text = dict(TINY_CLIP_CONFIG, text_cfg={"hf_model_name": "xlm-roberta-base"})
    config_sidecar_path(weights).write_text(json.dumps(hub_text))
    with pytest.raises(ScorerUnavailable, match="would be downloaded"):
        ClipScorer("comfygate-hub-text", weights).load()


def test_building_is_deterministic(tmp_path):
    import torch

    _, first = build_tiny_clip(tmp_path / "a", steps=3)
    _, second = build_tiny_clip(tmp_path / "b", steps=3)
    a, b = torch.load(first, weights_only=True), torch.load(second, weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
