"""Text encoders of SD1, SD2 and SDXL checkpoints with ComfyUI's CLIPTextEncode semantics.

How a loader builds one (checkpoints.py): build the transformers modules, then

    encoder = build_text_encoder("sdxl", [clip_l_module, clip_g_module])     # kinds and defaults from the arch
    # or, spelled out:
    encoder = TextEncoder("sdxl", [TextPart.preset("sdxl", "clip_l", clip_l_module),
                                   TextPart.preset("sdxl", "clip_g", clip_g_module)])

Modules per arch (in this order):
  sd1           [clip_l]           transformers CLIPTextModel (CLIP ViT-L/14 text, 768)
  sd2           [clip_h]           CLIPTextModel converted from OpenCLIP ViT-H/14 (1024, gelu)
  sdxl          [clip_l, clip_g]   CLIPTextModel (768) + CLIPTextModelWithProjection converted from OpenCLIP bigG (1280)
  sdxl_refiner  [clip_g]           CLIPTextModelWithProjection (bigG)

Per-part rules (``TextPart``; ComfyUI's sd1_clip / sd2_clip / sdxl_clip), for 77-token chunks:

  arch / kind          default layer           final norm on a hidden layer   pad id   pooled
  sd1 clip_l           last (final norm)       yes                            49407    -
  sd2 clip_h           penultimate (-2)        yes                            0        -
  sdxl clip_l          penultimate (-2)        no                             49407    -
  sdxl(_refiner) g     penultimate (-2)        no                             0        text_projection(EOS token)

``encode(text, clip_skip)``:
  * ``clip_skip=None`` (no CLIPSetLastLayer in the graph) uses each part's default layer. A negative int (the
    node's ``stop_at_clip_layer``, -1 = last) replaces every part's layer, as ComfyUI does: ``-k`` is the output
    of the k-th layer from the end, final-normed only where the table says so (so -1 on SDXL is the last layer
    *without* final norm, not the same as no CLIPSetLastLayer); ``|k|`` beyond the depth means the normed last
    layer.
  * the prompt is split into chunks of 75 tokens (tokenizer.tokenize_weighted); each part encodes all chunks in
    one batch and they are concatenated on the token axis: cond ``[1, 77*k, D]``. Parts are concatenated on the
    feature axis (SDXL: 768 + 1280 = 2048).
  * weights: where any token's weight is not 1, the empty prompt ``[BOS, EOS, pad...]`` is encoded in the same
    batch and each token becomes ``empty + (token - empty) * weight`` (per position).
  * pooled ``[1, P]``: the pooling part's ``text_projection`` of its final-normed last layer at the first EOS of the
    first chunk (whatever ``clip_skip`` is); ``None`` for SD1/SD2.
  * output: float32 on the CPU (ComfyUI keeps conditioning on its intermediate device), computed under
    ``torch.inference_mode``.

LoRA (lora.py): ``param_of_ldm`` maps LoRA-side parameter names to ``"<part index>.<module parameter name>"``.
The default (when the loader passes none) names every parameter as Hugging Face CLIP does,
``text_model.encoder.layers.0.self_attn.q_proj.weight`` (the layout kohya LoRA keys ``lora_te_*`` follow), prefixed
``te1.`` / ``te2.`` when there are two parts (``lora_te1_*`` -> clip_l, ``lora_te2_*`` -> clip_g). A projection
outside ``text_model`` keeps its own name (``te2.text_projection.weight``). ``lora_targets()`` resolves them to
``(module, parameter name)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .tokenizer import EOS_ID, ClipTokenizer, WeightedChunk, get_tokenizer, tokenize_weighted

__all__ = ["ARCH_KINDS", "TextEncoder", "TextPart", "build_text_encoder"]

ARCH_KINDS: dict[str, tuple[str, ...]] = {
    "sd1": ("clip_l",),
    "sd2": ("clip_h",),
    "sdxl": ("clip_l", "clip_g"),
    "sdxl_refiner": ("clip_g",),
}
_KINDS = ("clip_l", "clip_g", "clip_h")
# (arch, kind) -> (default layer: None = last, layer norm on a hidden layer, pad id, pooled)
_PRESETS: dict[tuple[str, str], tuple[int | None, bool, int, bool]] = {
    ("sd1", "clip_l"): (None, True, EOS_ID, False),
    ("sd2", "clip_h"): (-2, True, 0, False),
    ("sdxl", "clip_l"): (-2, False, EOS_ID, False),
    ("sdxl", "clip_g"): (-2, False, 0, True),
    ("sdxl_refiner", "clip_g"): (-2, False, 0, True),
}


@dataclass(frozen=True)
class TextPart:
    """One text model and how ComfyUI reads it.

    kind: "clip_l" | "clip_g" | "clip_h".  module: transformers CLIPTextModel / CLIPTextModelWithProjection.
    default_layer: None = last layer (final-normed) or a negative hidden-layer index (-2 = penultimate).
    layer_norm_hidden: apply the final layer norm to a hidden (not last) layer's output.
    pad_id: id that fills each 77-token chunk after EOS.  pooled: this part gives the pooled output (needs
    ``module.text_projection``).
    """

    kind: str
    module: torch.nn.Module
    default_layer: int | None
    layer_norm_hidden: bool
    pad_id: int
    pooled: bool = False

    @classmethod
    def preset(cls, arch: str, kind: str, module: torch.nn.Module) -> TextPart:
        """The part ComfyUI builds for ``kind`` inside a model of ``arch``."""
        if (arch, kind) not in _PRESETS:
            known = ", ".join(f"{a}/{k}" for a, k in _PRESETS)
            raise ValueError(f"no text encoder preset for {arch}/{kind}; known: {known}")
        layer, norm, pad, pooled = _PRESETS[(arch, kind)]
        return cls(kind, module, layer, norm, pad, pooled)

    @property
    def num_layers(self) -> int:
        return int(self.module.config.num_hidden_layers)

    @property
    def width(self) -> int:
        return int(self.module.config.hidden_size)


def _text_model(module: torch.nn.Module) -> torch.nn.Module:
    """The transformer inside (CLIPTextModelWithProjection wraps a CLIPTextModel as ``text_model``)."""
    return getattr(module, "text_model", module)


def _default_param_names(parts: Sequence[TextPart]) -> dict[str, str]:
    names: dict[str, str] = {}
    for index, part in enumerate(parts):
        prefix = f"te{index + 1}." if len(parts) > 1 else ""
        wrapped = hasattr(part.module, "text_model")  # CLIPTextModelWithProjection: text_model.* + text_projection
        for name, _ in part.module.named_parameters():
            names[prefix + (name if wrapped else f"text_model.{name}")] = f"{index}.{name}"
    return names


class TextEncoder:
    """The text side of a checkpoint: one or two CLIP text models, the tokenizer, and ComfyUI's encode rules."""

    def __init__(self, arch: str, parts: Sequence[TextPart], param_of_ldm: dict[str, str] | None = None) -> None:
        if not parts:
            raise ValueError(f"text encoder for {arch!r} has no text models")
        for part in parts:
            if part.kind not in _KINDS:
                raise ValueError(f"unknown text encoder kind {part.kind!r}; expected one of {', '.join(_KINDS)}")
            if not hasattr(part.module, "config") or not hasattr(_text_model(part.module), "final_layer_norm"):
                raise ValueError(
                    f"{part.kind} module {type(part.module).__name__} is not a transformers CLIP text model"
                )
            if part.pooled and not hasattr(part.module, "text_projection"):
                raise ValueError(f"{part.kind} gives the pooled output but its module has no text_projection")
        self.arch = arch
        self.parts = tuple(parts)
        self.modules = [part.module for part in parts]
        self.tokenizer: ClipTokenizer = get_tokenizer()
        self.param_of_ldm = dict(param_of_ldm) if param_of_ldm is not None else _default_param_names(self.parts)
        self.size_bytes = sum(
            t.numel() * t.element_size() for m in self.modules for t in (*m.parameters(), *m.buffers())
        )

    @property
    def width(self) -> int:
        """Feature size D of the conditioning (sum over parts)."""
        return sum(part.width for part in self.parts)

    def tokenize(self, text: str) -> list[list[WeightedChunk]]:
        """Per part: its 77-token chunks of (id, weight); parts differ only in their pad id."""
        return [tokenize_weighted(text, part.pad_id, self.tokenizer) for part in self.parts]

    def encode(self, text: str, clip_skip: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """cond float32 [1, 77*k, D] and pooled float32 [1, P] (or None), both on the CPU."""
        if clip_skip is not None and (isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or clip_skip >= 0):
            raise ValueError(f"clip_skip must be a negative int (CLIPSetLastLayer, -1 = last layer), got {clip_skip!r}")
        outputs: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        with torch.inference_mode():
            for part, chunks in zip(self.parts, self.tokenize(text), strict=True):
                cond, part_pooled = _encode_part(part, chunks, clip_skip)
                outputs.append(cond)
                if part_pooled is not None and pooled is None:
                    pooled = part_pooled
            tokens = min(c.shape[1] for c in outputs)
            cond = torch.cat([c[:, :tokens] for c in outputs], dim=-1)
        return cond, pooled

    def lora_targets(self) -> dict[str, tuple[torch.nn.Module, str]]:
        """LoRA-side name -> (text module, its parameter name), e.g. ``module.get_parameter(name)``."""
        targets: dict[str, tuple[torch.nn.Module, str]] = {}
        for lora_name, where in self.param_of_ldm.items():
            index_text, _, param = where.partition(".")
            if not index_text.isdigit() or int(index_text) >= len(self.modules):
                raise ValueError(f"text encoder parameter map: {lora_name!r} -> {where!r} names no text model part")
            module = self.modules[int(index_text)]
            try:
                module.get_parameter(param)
            except AttributeError as exc:
                raise ValueError(
                    f"text encoder parameter map: {lora_name!r} -> {where!r}: "
                    f"{type(module).__name__} has no parameter {param!r}"
                ) from exc
            targets[lora_name] = (module, param)
        return targets


def build_text_encoder(
    arch: str, modules: Sequence[torch.nn.Module], param_of_ldm: dict[str, str] | None = None
) -> TextEncoder:
    """The TextEncoder of ``arch`` ("sd1" | "sd2" | "sdxl" | "sdxl_refiner") from its modules, in ARCH_KINDS order."""
    if arch not in ARCH_KINDS:
        raise ValueError(f"unknown text encoder architecture {arch!r}; expected one of {', '.join(ARCH_KINDS)}")
    kinds = ARCH_KINDS[arch]
    if len(modules) != len(kinds):
        raise ValueError(f"{arch} text encoder needs {len(kinds)} text models ({', '.join(kinds)}), got {len(modules)}")
    return TextEncoder(arch, [TextPart.preset(arch, k, m) for k, m in zip(kinds, modules, strict=True)], param_of_ldm)


def _select_layer(part: TextPart, clip_skip: int | None) -> int | None:
    """None = final-normed last layer; negative = that hidden layer (ComfyUI's set_clip_options)."""
    layer = part.default_layer if clip_skip is None else clip_skip
    if layer is None or abs(layer) > part.num_layers:
        return None
    return layer


def _encode_part(
    part: TextPart, chunks: list[WeightedChunk], clip_skip: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """cond float32 [1, 77*k, D_part] (weights applied) and pooled [1, P] or None."""
    module = part.module
    device = next(module.parameters()).device
    weights = torch.tensor([[w for _, w in chunk] for chunk in chunks], dtype=torch.float32)  # [k, 77]
    rows = [[t for t, _ in chunk] for chunk in chunks]
    weighted = bool((weights != 1.0).any())
    if weighted:
        length = len(rows[0])
        rows.append([rows[0][0], EOS_ID] + [part.pad_id] * (length - 2))  # the empty prompt
    ids = torch.tensor(rows, dtype=torch.long, device=device)  # [k (+1), 77]

    layer = _select_layer(part, clip_skip)
    out = module(input_ids=ids, output_hidden_states=layer is not None)
    last = out.last_hidden_state  # [n, 77, D] final-normed
    if layer is None:
        hidden = last
    else:
        hidden = out.hidden_states[layer]  # output of that layer (index 0 is the embeddings)
        if part.layer_norm_hidden:
            hidden = _text_model(module).final_layer_norm(hidden)
    hidden = hidden.float().cpu()  # [n, 77, D]

    pooled = None
    if part.pooled:
        eos_at = int((ids[0] == EOS_ID).int().argmax())
        pooled = module.text_projection(last[0:1, eos_at]).float().cpu()  # [1, P]

    z = hidden[: len(chunks)]
    if weighted:
        empty = hidden[-1:]  # [1, 77, D]
        w = weights.unsqueeze(-1)  # [k, 77, 1]
        z = torch.where(w != 1.0, empty + (z - empty) * w, z)  # tokens of weight 1 stay exactly as encoded
    return z.reshape(1, -1, z.shape[-1]), pooled  # chunks side by side on the token axis
