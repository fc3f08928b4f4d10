"""The gate: order and stopping, duplicates against history and within a batch, and the learned checks on
one batched CLIP pass (a tiny real open_clip model and real head files)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sentinel_images import (
    NATURAL,
    brightened,
    candidate,
    city,
    encode,
    flat,
    landscape,
    portrait,
    reencoded,
    shifted,
)
from tiny_clip import TINY_CLIP_CONFIG, caption_for, shape_image
from tiny_heads import constant_head, direction_head, save_head

from comfygate.sentinel import (
    Candidate,
    ClipScorer,
    EmbeddingHead,
    Policy,
    RecentOutput,
    Scorers,
    ScorerUnavailable,
    Sentinel,
    image_hash,
)

EMBED_DIM = TINY_CLIP_CONFIG["embed_dim"]


def checks_of(verdict):
    return {check.name: check for check in verdict.checks}


def recent_of(image, *, request_key: str | None = "other request", label: str = "run A output 0") -> RecentOutput:
    hashed = image_hash(encode(image), image)
    return RecentOutput(hashed.sha256, hashed.phash, request_key, label)


# ---- order and stopping ----------------------------------------------------------------------------------------


def test_a_review_band_failure_does_not_stop_the_checks_but_a_reject_does():
    review_blank = Policy.from_dict({"checks": {"blank": {"review": 0.02}}})
    verdict = Sentinel().evaluate(candidate(flat(64)), review_blank)
    checks = checks_of(verdict)
    assert verdict.decision == "review" and not verdict.retryable
    assert checks["blank"].band == "review"
    assert checks["noise"].status == "passed"
    assert checks["blur"].status == "flagged"  # a flat frame has no edges at all

    verdict = Sentinel().evaluate(candidate(flat(64)), Policy.default())
    assert verdict.decision == "reject"
    assert [c.name for c in verdict.checks if c.status == "not_run" and c.reason.startswith("skipped")] == [
        "noise", "duplicate", "clip_alignment", "blur", "colour_entropy"]


def test_a_policy_is_resolved_without_history_when_passed_directly():
    policy = Policy.from_dict({"checks": {"blank": {"reject": {"percentile": 50, "fallback": 0.3}}}})
    verdict = Sentinel().evaluate(candidate(portrait(64)), policy)  # blank score ~0.22
    blank = checks_of(verdict)["blank"]
    assert blank.code == "blank"
    assert blank.thresholds == {"reject": 0.3}
    assert blank.threshold_sources == {"reject": "fallback (0 of 50 recent)"}

    resolved = policy.resolve({"blank": [0.1] * 60})
    blank = checks_of(Sentinel().evaluate(candidate(portrait(64)), resolved))["blank"]
    assert blank.status == "passed"
    assert blank.threshold_sources == {"reject": "p50 of 60 recent"}


# ---- duplicates -------------------------------------------------------------------------------------------------


def test_an_exact_repeat_of_another_request_is_rejected_naming_it():
    image = landscape(128)
    verdict = Sentinel().evaluate(candidate(image, request_key="mine"), Policy.default(), [
        recent_of(city(128), label="run B output 0"), recent_of(image, label="run A output 0"),
    ])
    duplicate = checks_of(verdict)["duplicate"]
    assert verdict.decision == "reject" and verdict.retryable
    assert duplicate.code == "exact_duplicate" and duplicate.score == 0.0
    assert "exact copy of run A output 0" in duplicate.reason


@pytest.mark.parametrize("copy", [brightened, reencoded], ids=["brightened", "re-encoded"])
def test_a_near_copy_is_rejected_as_near_duplicate(copy):
    original = landscape(256)
    verdict = Sentinel().evaluate(candidate(copy(original)), Policy.default(), [recent_of(original)])
    duplicate = checks_of(verdict)["duplicate"]
    assert duplicate.code == "near_duplicate"
    assert duplicate.score < 2
    assert "near-duplicate of run A output 0" in duplicate.reason


def test_a_shifted_copy_lands_in_the_review_band():
    policy = Policy.from_dict({"checks": {"duplicate": {"reject": 2, "review": 8}}})
    original = city(256)
    verdict = Sentinel().evaluate(candidate(shifted(original)), policy, [recent_of(original)])
    assert verdict.decision == "review"
    assert checks_of(verdict)["duplicate"].band == "review"
    assert 2 <= verdict.score("duplicate") < 8


def test_different_pictures_are_not_duplicates():
    recent = [recent_of(make(256), label=name) for name, make in NATURAL.items() if name != "landscape"]
    verdict = Sentinel().evaluate(candidate(landscape(256)), Policy.default(), recent)
    assert checks_of(verdict)["duplicate"].status == "passed"
    assert verdict.score("duplicate") >= 16


def test_outputs_of_the_same_request_are_not_compared():
    image = landscape(128)
    verdict = Sentinel().evaluate(candidate(image, request_key="same"), Policy.default(),
                                  [recent_of(image, request_key="same")])
    duplicate = checks_of(verdict)["duplicate"]
    assert duplicate.status == "not_run"
    assert duplicate.reason == "no earlier outputs of other requests to compare with"
    assert verdict.passed


def test_only_the_window_of_recent_outputs_is_compared():
    image = landscape(128)
    recent = [recent_of(make(128), label=name) for name, make in NATURAL.items() if name != "landscape"]
    recent.append(recent_of(image))  # the oldest, outside a window of 4
    policy = Policy.from_dict({"checks": {"duplicate": {"reject": 2, "window": 4}}})
    assert Sentinel().evaluate(candidate(image), policy, recent).passed
    assert not Sentinel().evaluate(candidate(image), Policy.default(), recent).passed


def test_later_candidates_of_a_batch_are_compared_with_earlier_ones():
    image = portrait(128)
    first, again, other = (candidate(image, request_key="a"), candidate(image, request_key="b"),
                           candidate(city(128), request_key="c"))
    verdicts = Sentinel().evaluate_batch([first, again, other], Policy.default())

    assert [verdict.decision for verdict in verdicts] == ["pass", "reject", "pass"]
    assert checks_of(verdicts[0])["duplicate"].status == "not_run"
    assert "exact copy of candidate 0 of this batch" in checks_of(verdicts[1])["duplicate"].reason

    same_request = Sentinel().evaluate_batch([first, candidate(image, request_key="a")], Policy.default())
    assert all(verdict.passed for verdict in same_request)


def test_verdicts_carry_the_hash_the_duplicate_check_compares_even_with_the_check_off():
    image = landscape(64)
    cand = candidate(image)
    off = Policy.from_dict({"checks": {"duplicate": "off"}})
    assert Sentinel().evaluate(cand, off).image_hash == image_hash(cand.data, image)
    assert Sentinel().evaluate(Candidate(b"garbage", "image/png"), off).image_hash is None
    assert "image_hash" not in Sentinel().evaluate(cand, off).to_dict()


# ---- learned checks ------------------------------------------------------------------------------------------------

# The shape pictures share a grey background, hold about one bit of colour entropy, and some (green on grey)
# have almost no brightness edges: those checks are off, so the learned checks alone decide.
SHAPES_OFF = {"duplicate": "off", "blur": "off", "colour_entropy": "off"}
ALIGNMENT = {"checks": {"clip_alignment": {"reject": 0.75}, **SHAPES_OFF}}


def shape_policy(**checks) -> Policy:
    return Policy.from_dict({"checks": {**checks, **SHAPES_OFF}})


def shape_candidate(colour: str, shape: str, prompt: str | None, request_key: str | None = None) -> Candidate:
    image = shape_image(colour, shape, size=64)
    return Candidate(encode(image), "image/png", 64, 64, "RGB", prompt=prompt, request_key=request_key)


class CountingClip(ClipScorer):
    """The real scorer, recording how many images and texts each call embedded."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.image_calls: list[int] = []
        self.text_calls: list[int] = []

    def embed_images(self, images, batch_size=None):
        self.image_calls.append(len(images))
        return super().embed_images(images, batch_size)

    def embed_texts(self, texts):
        self.text_calls.append(len(texts))
        return super().embed_texts(texts)


@pytest.fixture
def clip(tiny_clip) -> CountingClip:
    name, weights_path = tiny_clip
    return CountingClip(name, weights_path)


def test_clip_alignment_passes_a_matching_prompt_and_rejects_a_mismatch(clip):
    sentinel = Sentinel(Scorers(clip=clip))
    policy = shape_policy(clip_alignment={"reject": 0.75}, aesthetic={"reject": 4})
    matched = sentinel.evaluate(shape_candidate("red", "circle", caption_for("red", "circle")), policy)
    mismatched = sentinel.evaluate(shape_candidate("red", "circle", caption_for("blue", "square")), policy)

    assert matched.passed and matched.score("clip_alignment") > 0.75
    assert mismatched.decision == "reject" and mismatched.retryable
    assert mismatched.reason_codes == ["prompt_mismatch"]
    assert "does not match the prompt" in checks_of(mismatched)["clip_alignment"].reason
    assert checks_of(matched)["aesthetic"].reason == "no aesthetic model is configured"
    assert checks_of(mismatched)["aesthetic"].reason == "skipped: clip_alignment rejected the image"


def test_clip_alignment_is_not_run_without_a_model_or_a_prompt(clip):
    for prompt in (None, "   "):
        check = checks_of(Sentinel(Scorers(clip=clip)).evaluate(shape_candidate("red", "circle", prompt),
                                                                Policy.default()))["clip_alignment"]
        assert (check.status, check.reason) == ("not_run", "no prompt text was given")
    for scorers in (None, Scorers()):
        check = checks_of(Sentinel(scorers).evaluate(shape_candidate("red", "circle", "a red circle"),
                                                     Policy.default()))["clip_alignment"]
        assert (check.status, check.reason) == ("not_run", "no CLIP model is configured")
    assert clip.image_calls == []  # nothing needed an embedding


def test_a_batch_takes_one_clip_pass_per_chunk_and_one_text_pass(clip):
    pictures = [("red", "circle"), ("green", "square"), ("blue", "triangle"), ("yellow", "circle"), ("red", "square")]
    # Each prompt names the picture, except the third, which names another; the fourth shares the first's prompt.
    prompts = ["a red circle", "a green square", "a red circle", "a red circle", "a red square"]
    candidates = [shape_candidate(colour, shape, prompt, request_key=str(index))
                  for index, ((colour, shape), prompt) in enumerate(zip(pictures, prompts, strict=True))]
    candidates.insert(2, Candidate(encode(flat(64)), "image/png", prompt="a grey image"))  # stops at blank
    sentinel = Sentinel(Scorers(clip=clip, batch_size=2))

    verdicts = sentinel.evaluate_batch(candidates, Policy.from_dict(ALIGNMENT))

    assert clip.image_calls == [2, 2, 1]  # the five that reached CLIP, in chunks of batch_size
    assert clip.text_calls == [3]  # the distinct prompts, once
    assert [verdict.decision for verdict in verdicts] == ["pass", "pass", "reject", "reject", "reject", "pass"]
    assert verdicts[2].reason_codes == ["blank"]
    assert verdicts[3].reason_codes == verdicts[4].reason_codes == ["prompt_mismatch"]
    # The batch gives the scores one-by-one evaluation gives.
    for cand, verdict in zip(candidates, verdicts, strict=True):
        alone = sentinel.evaluate(cand, Policy.from_dict(ALIGNMENT))
        assert alone.decision == verdict.decision
        single, batched = alone.score("clip_alignment"), verdict.score("clip_alignment")
        assert (single is None) == (batched is None)
        if single is not None:
            assert math.isclose(single, batched, abs_tol=1e-4)


def head_file(tmp_path: Path, name: str, value: float) -> Path:
    return constant_head(tmp_path / f"{name}.safetensors", EMBED_DIM, value)


def test_aesthetic_and_nsfw_heads_score_the_same_embeddings(clip, tmp_path):
    aesthetic = EmbeddingHead.from_file(head_file(tmp_path, "aesthetic", 3.5), kind="aesthetic")
    nsfw = EmbeddingHead.from_file(head_file(tmp_path, "nsfw", 3.0), kind="nsfw")  # sigmoid(3) = 0.953
    sentinel = Sentinel(Scorers(clip=clip, aesthetic=aesthetic, nsfw=nsfw))
    cand = shape_candidate("green", "triangle", "a green triangle")

    held = sentinel.evaluate(cand, shape_policy(aesthetic={"review": 4.0}, nsfw={"review": 0.99}))
    assert held.decision == "review"
    assert held.score("aesthetic") == pytest.approx(3.5)
    assert held.score("nsfw") == pytest.approx(1 / (1 + math.exp(-3.0)), abs=1e-6)
    assert held.reason_codes == ["low_aesthetic"]
    assert clip.image_calls == [1]  # one embedding served alignment and both heads

    rejected = sentinel.evaluate(cand, shape_policy(aesthetic={"review": 3}, nsfw={"reject": 0.9}))
    assert rejected.decision == "reject"
    assert rejected.reason_codes == ["nsfw"]
    nsfw_check = checks_of(rejected)["nsfw"]
    assert nsfw_check.reason.startswith("image is likely NSFW (NSFW probability 0.9526 > reject threshold 0.9")


def test_the_aesthetic_head_ranks_pictures_by_what_it_learned(clip, tmp_path):
    red = clip.embed_images([shape_image("red", "circle", size=64)])[0]
    head = EmbeddingHead.from_file(direction_head(tmp_path / "likes-red.pth", red, 4.0, 5.0), kind="aesthetic")
    sentinel = Sentinel(Scorers(clip=clip, aesthetic=head))
    policy = shape_policy(aesthetic={"reject": 6.0})

    liked, disliked = sentinel.evaluate_batch(
        [shape_candidate("red", "circle", None), shape_candidate("blue", "square", None)], policy)
    assert liked.passed and liked.score("aesthetic") == pytest.approx(9.0, abs=1e-3)
    assert disliked.reason_codes == ["low_aesthetic"]
    assert checks_of(liked)["clip_alignment"].reason == "no prompt text was given"


def test_heads_that_are_not_configured_are_not_run(clip):
    policy = shape_policy(aesthetic={"reject": 4}, nsfw={"reject": 0.5})
    checks = checks_of(Sentinel(Scorers(clip=clip)).evaluate(shape_candidate("red", "circle", None), policy))
    assert (checks["aesthetic"].status, checks["aesthetic"].reason) == ("not_run", "no aesthetic model is configured")
    assert (checks["nsfw"].status, checks["nsfw"].reason) == ("not_run", "no nsfw model is configured")
    assert clip.image_calls == []

    checks = checks_of(Sentinel().evaluate(shape_candidate("red", "circle", None), policy))
    assert checks["aesthetic"].reason == "no aesthetic model is configured"


def test_a_head_giving_nan_is_an_unavailable_scorer_not_a_pass(clip, tmp_path):
    weight = np.full((1, EMBED_DIM), np.nan, np.float32)
    broken = EmbeddingHead.from_file(save_head(tmp_path / "nan.safetensors", [(weight, np.zeros(1, np.float32))]),
                                     kind="aesthetic")
    sentinel = Sentinel(Scorers(clip=clip, aesthetic=broken))
    with pytest.raises(ScorerUnavailable, match="aesthetic scorer gave a non-finite score"):
        sentinel.evaluate(shape_candidate("red", "circle", None), shape_policy(aesthetic={"reject": 4}))


def test_a_clip_model_that_cannot_load_raises_only_when_it_is_needed(tmp_path):
    sentinel = Sentinel(Scorers(clip=ClipScorer("ViT-B-32", tmp_path / "missing.pt")))
    with pytest.raises(ScorerUnavailable, match="does not exist"):
        sentinel.evaluate(shape_candidate("red", "circle", "a red circle"), Policy.default())
    # No prompt and no head: nothing asks for an embedding, so nothing is loaded.
    assert sentinel.evaluate(shape_candidate("red", "circle", None), Policy.default()).passed
