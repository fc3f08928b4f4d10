"""CLIP tokenizer, ComfyUI prompt syntax and the TextEncoder's encode rules, on tiny random CLIP text models."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from comfygate.comfy_runtime.diffusion.text_encoders import TextEncoder, TextPart, build_text_encoder
from comfygate.comfy_runtime.diffusion.tokenizer import (
    BOS_ID,
    EOS_ID,
    get_tokenizer,
    parse_weights,
    tokenize_weighted,
)

L_WIDTH, G_WIDTH, G_PROJ = 32, 48, 40


def _tiny_clip(seed: int, *, width: int, layers: int, projection: int | None = None, act: str = "quick_gelu"):
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection or width,
    )
    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


@pytest.fixture(scope="module")
def clip_l() -> CLIPTextModel:
    return _tiny_clip(0, width=L_WIDTH, layers=3)


@pytest.fixture(scope="module")
def clip_g() -> CLIPTextModelWithProjection:
    return _tiny_clip(1, width=G_WIDTH, layers=4, projection=G_PROJ, act="gelu")


@pytest.fixture(scope="module")
def sd1(clip_l) -> TextEncoder:
    return build_text_encoder("sd1", [clip_l])


@pytest.fixture(scope="module")
def sdxl(clip_l, clip_g) -> TextEncoder:
    return build_text_encoder("sdxl", [clip_l, clip_g])


def _ids(text: str, pad: int) -> torch.Tensor:
    """The single 77-token chunk of ``text`` as a [1, 77] batch."""
    (chunk,) = tokenize_weighted(text, pad)
    return torch.tensor([[t for t, _ in chunk]])


def _hidden(module, ids: torch.Tensor, layer: int) -> torch.Tensor:
    with torch.inference_mode():
        return module(input_ids=ids, output_hidden_states=True).hidden_states[layer]


def _final_norm(module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return getattr(module, "text_model", module).final_layer_norm(x)


# --- tokenizer ---------------------------------------------------------------------------------------------------


def test_known_token_ids():
    tok = get_tokenizer()
    assert tok("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (tok.bos_id, tok.eos_id, tok.model_max_length, tok.vocab_size) == (BOS_ID, EOS_ID, 77, 49408)
    # The vocabulary starts with the 188 printable bytes ("!" = 33 first), then the same with "</w>" from 256:
    # "a" is printable byte 97 - 33 = 64 -> "a</w>" = 320, "," -> 256 + 11 = 267, "1" -> 256 + 16 = 272.
    assert tok.encode("!") == [256]
    assert tok.encode("a , 1") == [320, 267, 272]
    assert tok.get_vocab()["<|endoftext|>"] == EOS_ID
    assert get_tokenizer() is tok  # one per process


def test_tokenizer_matches_open_clip_and_normalises_text():
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer()
    tok = get_tokenizer()
    prompts = [
        "masterpiece, best quality, 1girl, solo, looking at viewer",
        "A hyper-realistic portrait of an old man's face, 8k, (detailed:1.2)",
        "naïve café résumé, don't you've we'll",
        "supercalifragilisticexpialidocious 12345 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ]
    for prompt in prompts:
        assert tok.encode(prompt) == reference.encode(prompt), prompt
    assert tok.encode("A  PHOTO\n of\ta Cat") == tok.encode("a photo of a cat")
    assert tok.encode("a <|endoftext|> b") == [320, EOS_ID, 321]
    assert tok.decode(tok("a photo of a cat")) == "a photo of a cat"


# --- prompt weights ----------------------------------------------------------------------------------------------


def test_weight_syntax():
    assert parse_weights("a (cat:1.2) dog") == [("a ", 1.0), ("cat", 1.2), (" dog", 1.0)]
    ((text, weight),) = parse_weights("(cat)")
    assert text == "cat" and weight == pytest.approx(1.1)
    ((_, weight),) = parse_weights("((cat))")
    assert weight == pytest.approx(1.21)
    assert parse_weights("((cat:0.5))") == [("cat", 0.5)]  # an explicit weight replaces the nested 1.1
    nested = parse_weights("(a (b:1.5) c)")
    assert [t for t, _ in nested] == ["a ", "b", " c"]
    assert [w for _, w in nested] == pytest.approx([1.1, 1.5, 1.1])
    assert parse_weights(r"\(cat\) (dog:2)") == [("(cat) ", 1.0), ("dog", 2.0)]
    assert parse_weights("[cat]") == [("[cat]", 1.0)]  # square brackets are plain text in ComfyUI
    ((text, weight),) = parse_weights("(cat:big)")  # not a number: the colon is text, the group still weighs 1.1
    assert text == "cat:big" and weight == pytest.approx(1.1)
    ((text, _),) = parse_weights("(cat:nan)")
    assert text == "cat:nan"


@pytest.mark.parametrize("prompt", ["a (b", "a) b", ")(", "((", "a ) ( b", "(a:1.2", "a:1.2)", "x \\"])
def test_unbalanced_parentheses_are_text(prompt):
    segments = parse_weights(prompt)
    assert "".join(t for t, _ in segments) == prompt and all(w == 1.0 for _, w in segments)
    (chunk,) = tokenize_weighted(prompt, EOS_ID)  # never an exception; every character is tokenized
    assert get_tokenizer().decode(t for t, _ in chunk).replace(" ", "") == prompt.replace(" ", "")


@pytest.mark.parametrize("prompt", ["()", "(:2)", "(((", "((a)", "a (:) b", "(a:1e400)"])
def test_odd_groups_never_raise(prompt):
    (chunk,) = tokenize_weighted(prompt, 0)
    assert len(chunk) == 77 and chunk[0][0] == BOS_ID


# --- chunks ------------------------------------------------------------------------------------------------------


def test_chunks_and_padding():
    assert tokenize_weighted("", EOS_ID) == [[(BOS_ID, 1.0), (EOS_ID, 1.0)] + [(EOS_ID, 1.0)] * 75]
    assert [t for t, _ in tokenize_weighted("cat", 0)[0]] == [BOS_ID, 2368, EOS_ID] + [0] * 74

    (full,) = tokenize_weighted("cat " * 75, EOS_ID)
    assert [t for t, _ in full] == [BOS_ID] + [2368] * 75 + [EOS_ID]
    first, second = tokenize_weighted("cat " * 76, 0)
    assert [t for t, _ in first] == [BOS_ID] + [2368] * 75 + [EOS_ID]
    assert [t for t, _ in second] == [BOS_ID, 2368, EOS_ID] + [0] * 74


def test_short_weighted_group_moves_whole_and_long_one_splits():
    first, second = tokenize_weighted("cat " * 73 + "(a b c:1.2)", 0)
    assert [t for t, _ in first][73:] == [2368, EOS_ID, 0, 0]  # "a b c" did not fit: padded, moved on
    assert second[:5] == [(BOS_ID, 1.0), (320, 1.2), (321, 1.2), (322, 1.2), (EOS_ID, 1.0)]

    first, second = tokenize_weighted("cat " * 73 + "(a b c d e f g h:1.2)", 0)
    assert [t for t, _ in first][74:] == [320, 321, EOS_ID]  # 8 tokens: split at the chunk boundary
    assert [t for t, _ in second][:8] == [BOS_ID, 322, 323, 324, 325, 326, 327, EOS_ID]


def test_embedding_words_are_dropped():
    tok = get_tokenizer()
    ids = [t for t, _ in tokenize_weighted("a cat embedding:foo, dog", EOS_ID)[0]]
    assert ids[:6] == [BOS_ID, *tok.encode("a cat , dog"), EOS_ID]


# --- encode ------------------------------------------------------------------------------------------------------


def test_sd1_encode_is_last_layer(sd1, clip_l):
    cond, pooled = sd1.encode("a photo of a cat")
    assert cond.shape == (1, 77, L_WIDTH) and cond.dtype == torch.float32 and cond.device.type == "cpu"
    assert pooled is None
    with torch.inference_mode():
        expected = clip_l(input_ids=_ids("a photo of a cat", EOS_ID)).last_hidden_state
    torch.testing.assert_close(cond, expected)
    assert torch.equal(sd1.encode("a photo of a cat")[0], cond)  # same text -> identical tensors


def test_long_prompt_gives_two_chunks(sd1, sdxl):
    prompt = "a photo of a cat, " * 20  # 120 tokens
    cond, _ = sd1.encode(prompt)
    assert cond.shape == (1, 154, L_WIDTH)
    cond, pooled = sdxl.encode(prompt)
    assert cond.shape == (1, 154, L_WIDTH + G_WIDTH) and pooled.shape == (1, G_PROJ)


def test_clip_skip(sd1, clip_l):
    text = "a photo of a cat"
    default, _ = sd1.encode(text)
    last, _ = sd1.encode(text, clip_skip=-1)
    penultimate, _ = sd1.encode(text, clip_skip=-2)
    torch.testing.assert_close(last, default)  # SD1: the last layer with final norm either way
    assert not torch.allclose(penultimate, last, atol=1e-3)
    torch.testing.assert_close(penultimate, _final_norm(clip_l, _hidden(clip_l, _ids(text, EOS_ID), -2)))
    torch.testing.assert_close(sd1.encode(text, clip_skip=-24)[0], default)  # deeper than the model: last layer
    for bad in (0, 1, 2.0, True, "-2"):
        with pytest.raises(ValueError, match="clip_skip"):
            sd1.encode(text, clip_skip=bad)


def test_weights(sd1):
    plain, _ = sd1.encode("a photo of a cat")
    assert torch.equal(sd1.encode("a photo of a (cat:1.0)")[0], plain)  # weight 1 is no weight
    weighted, _ = sd1.encode("a photo of a (cat:1.5)")
    empty, _ = sd1.encode("")
    cat = 5  # BOS a photo of a cat
    others = [i for i in range(77) if i != cat]
    torch.testing.assert_close(weighted[:, others], plain[:, others])
    assert not torch.allclose(weighted[:, cat], plain[:, cat], atol=1e-3)
    torch.testing.assert_close(weighted[:, cat], empty[:, cat] + (plain[:, cat] - empty[:, cat]) * 1.5)


def test_sdxl_parts(sdxl, clip_l, clip_g):
    text = "a photo of a cat"
    cond, pooled = sdxl.encode(text)
    assert cond.shape == (1, 77, L_WIDTH + G_WIDTH) and pooled.shape == (1, G_PROJ)
    ids_l, ids_g = _ids(text, EOS_ID), _ids(text, 0)  # clip_l pads with EOS, bigG with 0
    assert ids_g[0, 7:].eq(0).all() and ids_l[0, 7:].eq(EOS_ID).all()
    # Penultimate layer, no final norm, for both; features side by side (l then g).
    torch.testing.assert_close(cond[..., :L_WIDTH], _hidden(clip_l, ids_l, -2))
    torch.testing.assert_close(cond[..., L_WIDTH:], _hidden(clip_g, ids_g, -2))
    with torch.inference_mode():
        torch.testing.assert_close(pooled, clip_g(input_ids=ids_g).text_embeds)

    last, pooled_last = sdxl.encode(text, clip_skip=-1)  # CLIPSetLastLayer(-1): last layer, still no final norm
    torch.testing.assert_close(last[..., L_WIDTH:], _hidden(clip_g, ids_g, -1))
    assert not torch.allclose(last, cond, atol=1e-3)
    torch.testing.assert_close(pooled_last, pooled)  # pooled always comes from the normed last layer

    _, pooled_weighted = sdxl.encode("a photo of a (cat:1.5)")
    torch.testing.assert_close(pooled_weighted, pooled)  # weights change tokens, not the pooled output


def test_sd2_preset_is_normed_penultimate(clip_l):
    encoder = TextEncoder("sd2", [TextPart.preset("sd2", "clip_h", clip_l)])
    cond, pooled = encoder.encode("a cat")
    ids = _ids("a cat", 0)
    assert pooled is None and ids[0, 4:].eq(0).all()
    torch.testing.assert_close(cond, _final_norm(clip_l, _hidden(clip_l, ids, -2)))


def test_lora_targets_resolve_to_the_live_parameters(sd1, sdxl, clip_l, clip_g):
    module, name = sd1.lora_targets()["text_model.encoder.layers.0.self_attn.q_proj.weight"]
    assert module is clip_l and module.get_parameter(name) is clip_l.encoder.layers[0].self_attn.q_proj.weight

    targets = sdxl.lora_targets()
    assert targets["te1.text_model.encoder.layers.2.mlp.fc1.weight"][0] is clip_l
    module, name = targets["te2.text_model.encoder.layers.3.mlp.fc1.weight"]
    assert module is clip_g and name == "text_model.encoder.layers.3.mlp.fc1.weight"
    assert "te2.text_projection.weight" in targets
    assert len(targets) == len(list(clip_l.parameters())) + len(list(clip_g.parameters()))

    # A patch applied in place (what lora.py does per run) is seen by the next encode, and undone cleanly.
    before, _ = sd1.encode("a cat")
    param = clip_l.encoder.layers[0].mlp.fc1.weight
    delta = torch.randn(param.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        param.add_(delta)
        patched, _ = sd1.encode("a cat")
        param.sub_(delta)
    assert not torch.allclose(patched, before, atol=1e-4)
    torch.testing.assert_close(sd1.encode("a cat")[0], before)


def test_bad_construction_is_a_value_error(clip_l):
    with pytest.raises(ValueError, match="names no text model"):
        TextEncoder("sd1", [TextPart.preset("sd1", "clip_l", clip_l)], {"x": "3.foo"}).lora_targets()
    with pytest.raises(ValueError, match="no parameter"):
        TextEncoder("sd1", [TextPart.preset("sd1", "clip_l", clip_l)], {"x": "0.nope.weight"}).lora_targets()
    with pytest.raises(ValueError, match="unknown text encoder architecture"):
        build_text_encoder("sd3", [clip_l])
    with pytest.raises(ValueError, match="needs 2 text models"):
        build_text_encoder("sdxl", [clip_l])
    with pytest.raises(ValueError, match="text_projection"):
        build_text_encoder("sdxl_refiner", [clip_l])  # bigG must be a ...WithProjection
    with pytest.raises(ValueError, match="not a transformers CLIP text model"):
        build_text_encoder("sd1", [torch.nn.Linear(2, 2)])


def test_size_bytes(sd1, clip_l):
    assert sd1.size_bytes == sum(p.numel() * 4 for p in clip_l.parameters()) + sum(
        b.numel() * b.element_size() for b in clip_l.buffers()
    )
    assert sd1.width == L_WIDTH
