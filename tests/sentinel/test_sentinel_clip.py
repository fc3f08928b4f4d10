"""ClipScorer (embeddings, similarity, loading) and the prompt-alignment check, with a tiny real open_clip model
trained by a fixture on coloured shapes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sentinel_images import encode
from tiny_clip import (
    COLOURS,
    SHAPES,
    TINY_CLIP_CONFIG,
    build_tiny_clip,
    caption,
    caption_for,
    colour_image,
    shape_image,
)

from comfygate.sentinel import (
    Candidate,
    ClipScorer,
    Policy,
    Scorers,
    ScorerUnavailable,
    Sentinel,
    config_sidecar_path,
)

SHAPE_CAPTIONS = [caption_for(colour, shape) for colour in COLOURS for shape in SHAPES]
CAPTIONS = [caption(colour) for colour in COLOURS]


@pytest.mark.parametrize("colour", list(COLOURS))
def test_the_matching_caption_ranks_first_for_every_shape(tiny_clip_scorer, colour):
    for shape in SHAPES:
        scores = dict(zip(SHAPE_CAPTIONS, tiny_clip_scorer.similarity(shape_image(colour, shape), SHAPE_CAPTIONS),
                          strict=True))
        matched = scores.pop(caption_for(colour, shape))
        wrong_shape = max(scores[caption_for(colour, other)] for other in SHAPES if other != shape)
        wrong_colour = max(scores[caption_for(other, shape)] for other in COLOURS if other != colour)
        assert matched > wrong_shape and matched > wrong_colour, (colour, shape, matched, scores)
        assert matched > max(scores.values()), (colour, shape, matched, scores)
        assert min(scores.values()) >= -1.0 and matched <= 1.0


@pytest.mark.parametrize("colour", list(COLOURS))
def test_a_solid_image_matches_its_colour_caption(tiny_clip_scorer, colour):
    scores = dict(zip(CAPTIONS, tiny_clip_scorer.similarity(colour_image(colour), CAPTIONS), strict=True))
    matched = scores.pop(caption(colour))
    assert all(matched > other for other in scores.values()), (colour, matched, scores)


def test_embeddings_are_unit_rows_of_the_model_width(tiny_clip_scorer):
    images = [shape_image(colour, "circle") for colour in COLOURS]
    image_embeddings = tiny_clip_scorer.embed_images(images)
    text_embeddings = tiny_clip_scorer.embed_texts(SHAPE_CAPTIONS)

    assert tiny_clip_scorer.embed_dim == TINY_CLIP_CONFIG["embed_dim"] == 32
    assert image_embeddings.shape == (4, 32) and image_embeddings.dtype == np.float32
    assert text_embeddings.shape == (12, 32) and text_embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(image_embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_embeddings, axis=1), 1.0, atol=1e-5)
    assert tiny_clip_scorer.embed_images([]).shape == (0, 32)
    assert tiny_clip_scorer.embed_texts([]).shape == (0, 32)
    # similarity is the cosine of the two embeddings.
    np.testing.assert_allclose(tiny_clip_scorer.similarity(images[0], SHAPE_CAPTIONS),
                               text_embeddings @ image_embeddings[0], atol=1e-5)


def test_a_batch_embeds_each_image_as_alone(tiny_clip_scorer):
    rng = np.random.default_rng(7)
    # Mixed sizes and modes: each image is preprocessed on its own before the batch is stacked.
    images = [shape_image(colour, shape, rng, size=size)
              for colour, shape, size in [("red", "circle", 32), ("blue", "triangle", 64), ("green", "square", 48)]]
    images += [colour_image("yellow").convert("L"), shape_image("yellow", "square").convert("RGBA")]

    batch = tiny_clip_scorer.embed_images(images)
    alone = np.concatenate([tiny_clip_scorer.embed_images([image]) for image in images])
    chunked = tiny_clip_scorer.embed_images(images, batch_size=2)

    np.testing.assert_allclose(batch, alone, atol=1e-5)
    np.testing.assert_allclose(chunked, alone, atol=1e-5)
    texts = tiny_clip_scorer.embed_texts(["a red circle", "a blue triangle"])
    np.testing.assert_allclose(texts, np.concatenate([tiny_clip_scorer.embed_texts([text]) for text in
                                                      ["a red circle", "a blue triangle"]]), atol=1e-5)


def test_one_image_or_one_string_is_not_taken_for_a_sequence(tiny_clip_scorer):
    with pytest.raises(TypeError, match="not one image"):
        tiny_clip_scorer.embed_images(shape_image("red", "circle"))
    with pytest.raises(TypeError, match="not one string"):
        tiny_clip_scorer.embed_texts("a red circle")
    with pytest.raises(TypeError, match="not one string"):
        tiny_clip_scorer.similarity(colour_image("red"), "a red image")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        tiny_clip_scorer.embed_images([colour_image("red")], batch_size=0)
    assert tiny_clip_scorer.similarity(colour_image("red"), []) == []


def shape_candidate(colour: str, shape: str, prompt: str | None) -> Candidate:
    return Candidate(data=encode(shape_image(colour, shape, size=64)), content_type="image/png", prompt=prompt)


def alignment(verdict):
    return next(check for check in verdict.checks if check.name == "clip_alignment")


def test_gate_passes_a_matching_prompt_and_rejects_a_mismatched_one(tiny_clip_scorer):
    sentinel = Sentinel(Scorers(clip=tiny_clip_scorer))
    # The three candidates are one image: the duplicate check would reject the second and third. A caption
    # right in colour or in shape is half right, so it is not far below the matched one: a high threshold.
    policy = Policy.from_dict({"checks": {"clip_alignment": {"reject": 0.8}, "duplicate": "off"}})

    prompts = ("a red triangle", "a red circle", "a blue triangle")
    matched, wrong_shape, wrong_colour = sentinel.evaluate_batch(
        [shape_candidate("red", "triangle", prompt) for prompt in prompts], policy
    )

    assert matched.decision == "pass" and alignment(matched).status == "passed"
    assert alignment(matched).score > 0.8
    for mismatched in (wrong_shape, wrong_colour):
        assert mismatched.decision == "reject" and mismatched.retryable
        assert alignment(mismatched).status == "failed" and alignment(mismatched).code == "prompt_mismatch"
        assert mismatched.score("clip_alignment") < 0.8


def test_clip_check_is_not_run_without_prompt_text_or_decodable_image(tiny_clip_scorer):
    sentinel = Sentinel(Scorers(clip=tiny_clip_scorer))
    for prompt in (None, "   "):
        check = alignment(sentinel.evaluate(shape_candidate("red", "circle", prompt), Policy.default()))
        assert check.status == "not_run"
        assert check.reason == "no prompt text was given"
    broken = Candidate(b"\x89PNG broken", "image/png", prompt="a red image")
    check = alignment(Sentinel(Scorers(clip=tiny_clip_scorer)).evaluate(broken, Policy.default()))
    assert check.status == "not_run"


def test_threads_share_one_lazily_loaded_model(tiny_clip):
    name, weights_path = tiny_clip
    scorer = ClipScorer(name, weights_path)
    assert not scorer.loaded
    results: list[list[float]] = []

    def score() -> None:
        results.append(scorer.similarity(shape_image("blue", "square"), SHAPE_CAPTIONS))

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
        "from tiny_clip import shape_image\n"
        "scorer = ClipScorer(sys.argv[1], sys.argv[2])\n"
        "print(json.dumps(scorer.similarity(shape_image('red', 'circle'), ['a red circle', 'a red square'])))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, name, str(weights_path)],
        capture_output=True, text=True, cwd=Path(__file__).parent, check=False,
    )
    assert out.returncode == 0, out.stderr
    circle, square = json.loads(out.stdout)
    assert circle > square


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
