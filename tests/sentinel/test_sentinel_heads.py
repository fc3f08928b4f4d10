"""Aesthetic and NSFW heads (LAION layout) over the tiny CLIP's embeddings, Scorers, and the model pool."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from sentinel_images import encode
from tiny_clip import SHAPES, TINY_CLIP_CONFIG, caption_for, shape_image
from tiny_heads import constant_head, direction_head, head_output, random_layers, save_head, save_state_dict

from comfygate.comfy_runtime.diffusion.pool import ModelPool
from comfygate.sentinel import Candidate, ClipScorer, EmbeddingHead, Policy, Scorers, ScorerUnavailable, Sentinel

CLIP_DIM = TINY_CLIP_CONFIG["embed_dim"]


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_a_head_computes_its_linear_layers_in_order_from_either_format(tmp_path, suffix):
    layers = random_layers(CLIP_DIM, hidden=(16, 8), seed=3)
    path = save_head(tmp_path / f"aesthetic{suffix}", layers)
    head = EmbeddingHead.from_file(path, kind="aesthetic")
    embeddings = np.random.default_rng(0).normal(size=(5, CLIP_DIM)).astype(np.float32)

    scores = head.score(embeddings)

    assert head.input_dim == CLIP_DIM
    assert scores.shape == (5,)
    np.testing.assert_allclose(scores, head_output(layers, embeddings), rtol=1e-5, atol=1e-5)
    assert head.score(np.zeros((0, CLIP_DIM), np.float32)).shape == (0,)


def test_an_nsfw_head_gives_the_sigmoid_of_its_output(tmp_path):
    nsfw = EmbeddingHead.from_file(constant_head(tmp_path / "nsfw.safetensors", CLIP_DIM, 2.0), kind="nsfw")
    aesthetic = EmbeddingHead.from_file(constant_head(tmp_path / "aes.pth", CLIP_DIM, 6.5), kind="aesthetic")
    embeddings = np.eye(3, CLIP_DIM, dtype=np.float32)
    np.testing.assert_allclose(nsfw.score(embeddings), [1 / (1 + math.exp(-2.0))] * 3, rtol=1e-6)
    np.testing.assert_allclose(aesthetic.score(embeddings), [6.5] * 3, rtol=1e-6)


def test_a_head_reads_what_clip_sees_in_an_image(tiny_clip_scorer, tmp_path):
    # An "NSFW" head that fires on red circles: its one layer points along the text embedding of the caption.
    (red_circle,) = tiny_clip_scorer.embed_texts([caption_for("red", "circle")])
    head = EmbeddingHead.from_file(direction_head(tmp_path / "red.pth", red_circle, scale=10.0, offset=-5.0),
                                   kind="nsfw")
    images = [shape_image("red", "circle"), shape_image("blue", "square"), shape_image("yellow", "triangle")]
    red, blue, yellow = head.score(tiny_clip_scorer.embed_images(images))
    assert min(red, blue, yellow) >= 0.0 and max(red, blue, yellow) <= 1.0
    assert red > 0.5 > max(blue, yellow), (red, blue, yellow)


def test_a_head_for_another_clip_width_is_refused_naming_both_widths(tiny_clip_scorer, tmp_path):
    path = save_head(tmp_path / "wide.safetensors", random_layers(48))
    head = EmbeddingHead.from_file(path, kind="aesthetic")
    scorers = Scorers(clip=tiny_clip_scorer, aesthetic=head)
    with pytest.raises(ScorerUnavailable, match=r"wide\.safetensors.* takes 48-wide .* gives 32-wide") as error:
        scorers.load()
    assert str(path) in str(error.value)
    with pytest.raises(ScorerUnavailable, match="48-wide"):
        head.score(tiny_clip_scorer.embed_images([shape_image("red", "circle")]))


@pytest.mark.parametrize(("state", "message"), [
    ({"weight": torch.zeros(1, CLIP_DIM), "bias": torch.zeros(1)}, r"not in the LAION .*layout.*found bias, weight"),
    ({}, "found no tensors"),
    ({"layers.0.weight": torch.zeros(8, CLIP_DIM), "layers.0.bias": torch.zeros(8),
      "layers.2.weight": torch.zeros(1, 4), "layers.2.bias": torch.zeros(1)},
     "layers.2.weight takes 4 inputs, but the layer before it gives 8"),
    ({"layers.0.weight": torch.zeros(3, CLIP_DIM), "layers.0.bias": torch.zeros(3)},
     r"last layer \(layers.0\) gives 3 outputs"),
    ({"layers.0.weight": torch.zeros(1, CLIP_DIM), "layers.0.bias": torch.zeros(2)},
     r"layers.0.bias must be a float tensor \[1\]"),
    ({"layers.0.bias": torch.zeros(1)}, "layers.0.weight must be a 2-D float tensor"),
    ({"layers.0.weight": torch.zeros(1, CLIP_DIM, dtype=torch.int64)}, "layers.0.weight must be a 2-D float"),
])
def test_a_file_that_is_not_a_head_is_refused_saying_why(tmp_path, state, message):
    path = save_state_dict(tmp_path / "head.safetensors", state)
    with pytest.raises(ScorerUnavailable, match=message) as error:
        EmbeddingHead.from_file(path, kind="aesthetic")
    assert str(path) in str(error.value)


class Trojan:
    """Anything torch.save pickles by class: loading it would need code, which weights_only refuses."""


@pytest.mark.parametrize(("name", "content", "message"), [
    ("corrupt.pth", b"definitely not a checkpoint", "not a weights-only torch checkpoint"),
    ("truncated.pt", None, "not a readable torch checkpoint"),
    ("corrupt.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{broken", "not a readable .safetensors file"),
    ("head.onnx", b"onnx", r"unknown file type \.onnx"),
    ("code.pth", "trojan", "not a weights-only torch checkpoint"),
])
def test_an_unreadable_head_file_is_unavailable_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:  # a real checkpoint cut short
        save_head(path, random_layers(CLIP_DIM))
        path.write_bytes(path.read_bytes()[:100])
    elif content == "trojan":
        torch.save({"layers.0.weight": Trojan()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ScorerUnavailable, match=message) as error:
        EmbeddingHead.from_file(path, kind="nsfw")
    assert str(path) in str(error.value)
    assert not isinstance(error.value.__cause__, pickle.UnpicklingError) or "weights-only" in str(error.value)


def test_a_missing_head_file_and_an_unknown_kind_are_refused(tmp_path):
    with pytest.raises(ScorerUnavailable, match=r"aesthetic head file '.*absent.pth' does not exist"):
        EmbeddingHead.from_file(tmp_path / "absent.pth", kind="aesthetic")
    path = constant_head(tmp_path / "head.pth", CLIP_DIM, 1.0)
    with pytest.raises(ValueError, match="head kind must be one of aesthetic, nsfw, got 'beauty'"):
        EmbeddingHead.from_file(path, kind="beauty")


def test_scorers_from_paths_builds_what_is_configured(tiny_clip, tmp_path):
    name, weights = tiny_clip
    aesthetic = constant_head(tmp_path / "aesthetic.pth", CLIP_DIM, 7.0)
    nsfw = constant_head(tmp_path / "nsfw.safetensors", CLIP_DIM, -3.0)

    scorers = Scorers.from_paths(name, weights, aesthetic, nsfw, batch_size=4)
    scorers.load()
    assert scorers.clip is not None and scorers.clip.loaded and scorers.batch_size == 4
    assert (scorers.aesthetic.kind, scorers.nsfw.kind) == ("aesthetic", "nsfw")
    assert scorers.heads == [scorers.aesthetic, scorers.nsfw]

    nothing = Scorers.from_paths()
    assert (nothing.clip, nothing.aesthetic, nothing.nsfw) == (None, None, None)
    nothing.load()  # nothing to load is fine

    with pytest.raises(ScorerUnavailable, match="CLIP model name is configured without a weights file"):
        Scorers.from_paths(name, None)
    with pytest.raises(ScorerUnavailable, match="no CLIP model is configured"):
        Scorers.from_paths(aesthetic_weights=aesthetic)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        Scorers(batch_size=0)
    with pytest.raises(ValueError, match="the aesthetic scorer must be a aesthetic head, got a nsfw head"):
        Scorers(clip=scorers.clip, aesthetic=scorers.nsfw)


def test_the_gate_reports_what_the_heads_score(tiny_clip_scorer, tmp_path):
    scorers = Scorers(
        clip=tiny_clip_scorer,
        aesthetic=EmbeddingHead.from_file(constant_head(tmp_path / "a.pth", CLIP_DIM, 3.0), kind="aesthetic"),
        nsfw=EmbeddingHead.from_file(constant_head(tmp_path / "n.pth", CLIP_DIM, -4.0), kind="nsfw"),
    )
    # A review band, not a reject: a rejected image skips the checks after it, and nsfw runs after aesthetic.
    policy = Policy.from_dict({"checks": {"aesthetic": {"review": 5.0}, "nsfw": {"reject": 0.5}}})
    candidate = Candidate(encode(shape_image("green", "square", size=64)), "image/png")

    verdict = Sentinel(scorers).evaluate(candidate, policy)

    assert verdict.score("aesthetic") == pytest.approx(3.0, abs=1e-5)
    assert verdict.score("nsfw") == pytest.approx(1 / (1 + math.exp(4.0)), abs=1e-6)
    assert verdict.decision == "review" and "low_aesthetic" in verdict.reason_codes
    assert "nsfw" not in verdict.reason_codes


def test_the_model_pool_loads_each_model_once_and_reloads_after_eviction(tiny_clip, tmp_path):
    name, weights = tiny_clip
    pool = ModelPool(budget_bytes=1 << 30, name="sentinel-test")
    head_path = save_head(tmp_path / "aesthetic.safetensors", random_layers(CLIP_DIM, seed=5))
    scorers = Scorers.from_paths(name, weights, head_path, cache=pool)
    clip, head = scorers.clip, scorers.aesthetic
    scorers.load()
    assert pool.resident(clip.cache_key) and pool.resident(head.cache_key)

    images = [shape_image("red", shape) for shape in SHAPES]
    first = clip.embed_images(images)
    again = clip.embed_images(images)
    texts = clip.embed_texts([caption_for("red", shape) for shape in SHAPES])
    scores = head.score(first)
    assert pool.stats(clip.cache_key)["loads"] == 1 and pool.stats(clip.cache_key)["hits"] >= 3
    assert pool.stats(head.cache_key)["loads"] == 1
    np.testing.assert_array_equal(first, again)
    assert np.argmax(first @ texts.T, axis=1).tolist() == [0, 1, 2]  # each shape its own caption

    # Idle models may be evicted between calls; the next call loads them again from their files.
    assert pool.evict(clip.cache_key) and pool.evict(head.cache_key)
    np.testing.assert_allclose(clip.embed_images(images), first, atol=1e-6)
    np.testing.assert_allclose(head.score(first), scores, atol=1e-6)
    assert pool.stats(clip.cache_key)["loads"] == 2 and pool.stats(head.cache_key)["loads"] == 2

    # The same embeddings as a scorer that holds its own model.
    np.testing.assert_allclose(ClipScorer(name, weights).embed_images(images), first, atol=1e-6)
