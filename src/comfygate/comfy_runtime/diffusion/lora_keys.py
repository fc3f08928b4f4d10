"""Key names of LoRA files: which keys belong together, and which model weight a group of keys patches.

LoRA files come from many trainers, and each names its tensors differently (facts read from ComfyUI's
``comfy/lora.py`` and ``comfy/weight_adapter``):

* kohya / LDM style: ``lora_unet_input_blocks_1_1_proj_in.lora_down.weight`` (+ ``.lora_up.weight``, ``.alpha``,
  ``.lora_mid.weight`` for LoCon convolutions); the module path of the original LDM UNet with ``.`` -> ``_``.
  The same trainers also write diffusers module paths: ``lora_unet_down_blocks_0_attentions_0_proj_in``.
  Text encoders: ``lora_te_`` (SD1/SD2, and CLIP-L of SDXL), ``lora_te1_`` / ``lora_te2_`` (SDXL CLIP-L / bigG).
* diffusers / peft: ``unet.down_blocks.0.attentions.0.proj_in.lora_A.weight`` (``lora_B`` is the up matrix),
  ``text_encoder.`` / ``text_encoder_2.``; older diffusers attention processors:
  ``unet.<...>.attn1.processor.to_q_lora.up.weight``.
* LyCORIS: LoHa (``hada_w1_a`` ...), LoKr (``lokr_w1`` ...), full differences (``diff``, ``diff_b``), DoRA
  (``dora_scale`` beside LoRA/LoHa/LoKr tensors).

Names are compared after replacing every ``.`` by ``_`` (the kohya convention), so one lookup table serves the
dotted and the underscored spellings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "KeyGroup",
    "NameIndex",
    "UNSUPPORTED_SUFFIXES",
    "group_keys",
    "normalise",
    "split_prefix",
]

# (key suffix, family, component). Longer suffixes first where one ends another.
_SUFFIXES: tuple[tuple[str, str, str], ...] = (
    (".lora_linear_layer.down.weight", "lora", "down"),
    (".lora_linear_layer.up.weight", "lora", "up"),
    (".lora_down.weight", "lora", "down"),
    (".lora_up.weight", "lora", "up"),
    (".lora_mid.weight", "lora", "mid"),
    (".lora_A.default.weight", "lora", "down"),
    (".lora_B.default.weight", "lora", "up"),
    (".lora_A.weight", "lora", "down"),
    (".lora_B.weight", "lora", "up"),
    (".lora_A", "lora", "down"),
    (".lora_B", "lora", "up"),
    ("_lora.down.weight", "lora", "down"),
    ("_lora.up.weight", "lora", "up"),
    (".lora.down.weight", "lora", "down"),
    (".lora.up.weight", "lora", "up"),
    (".hada_w1_a", "loha", "w1_a"),
    (".hada_w1_b", "loha", "w1_b"),
    (".hada_w2_a", "loha", "w2_a"),
    (".hada_w2_b", "loha", "w2_b"),
    (".hada_t1", "loha", "t1"),
    (".hada_t2", "loha", "t2"),
    (".lokr_w1_a", "lokr", "w1_a"),
    (".lokr_w1_b", "lokr", "w1_b"),
    (".lokr_w2_a", "lokr", "w2_a"),
    (".lokr_w2_b", "lokr", "w2_b"),
    (".lokr_w1", "lokr", "w1"),
    (".lokr_w2", "lokr", "w2"),
    (".lokr_t2", "lokr", "t2"),
    (".diff_b", "diff", "diff_b"),
    (".diff", "diff", "diff"),
    (".w_norm", "diff", "diff"),
    (".b_norm", "diff", "diff_b"),
    (".alpha", "", "alpha"),  # shared by every factorised family
    (".dora_scale", "", "dora_scale"),
)

# Adapter families ComfyUI knows but this runtime does not apply: refuse the file instead of half-applying it.
UNSUPPORTED_SUFFIXES: dict[str, str] = {
    ".oft_blocks": "OFT/BOFT",
    ".oft_diag": "OFT",
    ".a1.weight": "GLoRA",
    ".a2.weight": "GLoRA",
    ".b1.weight": "GLoRA",
    ".b2.weight": "GLoRA",
}


@dataclass
class KeyGroup:
    """The keys of one patched weight: ``stem`` is the key without its component suffix."""

    stem: str
    family: str = ""  # "lora" | "loha" | "lokr" | "diff"; "" while only alpha / dora_scale were seen
    keys: dict[str, str] = field(default_factory=dict)  # component -> full key in the file


def group_keys(keys: Iterable[str]) -> tuple[dict[str, KeyGroup], list[str]]:
    """Group file keys by stem. Returns (groups by stem, keys no known suffix explains)."""
    groups: dict[str, KeyGroup] = {}
    unrecognised: list[str] = []
    for key in keys:
        for suffix, family, component in _SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                stem = key[: -len(suffix)]
                group = groups.setdefault(stem, KeyGroup(stem))
                group.keys[component] = key
                if family:
                    group.family = group.family or family
                    if group.family != family:
                        group.family = "mixed"
                break
        else:
            unrecognised.append(key)
    return groups, unrecognised


def normalise(path: str) -> str:
    """The kohya spelling of a module path: every ``.`` becomes ``_``."""
    return path.replace(".", "_")


# Prefix -> (model part, text encoder index). Checked in order; the first match wins.
_PREFIXES: tuple[tuple[str, str, int], ...] = (
    ("lora_unet_", "unet", 0),
    ("lora_te1_", "text", 0),
    ("lora_te2_", "text", 1),
    ("lora_te_", "text", 0),
    ("model.diffusion_model.", "unet", 0),
    ("diffusion_model.", "unet", 0),
    ("base_model.model.", "unet", 0),  # peft's wrapper around a bare UNet
    ("unet.", "unet", 0),
    ("text_encoder_2.", "text", 1),
    ("text_encoder.", "text", 0),
)


def split_prefix(stem: str) -> tuple[str, int, str]:
    """(part, text encoder index, module path) of a key stem; part "unet" for unprefixed (bare diffusers) names."""
    for prefix, part, index in _PREFIXES:
        if stem.startswith(prefix):
            return part, index, stem[len(prefix):]
    return "unet", 0, stem


_TEXT_MODEL = re.compile(r"^text_model[._]")
_PROCESSOR = re.compile(r"[._]processor(?=[._])")


def _lookup_forms(path: str) -> list[str]:
    """Spellings of a LoRA module path to try, best first (normalised)."""
    path = _PROCESSOR.sub("", path)  # diffusers attention processors: attn1.processor.to_q -> attn1.to_q
    path = _TEXT_MODEL.sub("", path)  # transformers 5 CLIPTextModel has no "text_model." level
    return [normalise(path)]


class NameIndex:
    """Module paths of one model, by their normalised spellings, to the parameter a LoRA group patches.

    Built from the model's own parameter names (diffusers / transformers spelling) and from ``aliases`` (LDM key
    -> parameter name, as the checkpoint loader records it), so kohya names in either spelling resolve.
    """

    def __init__(self) -> None:
        self._params: dict[str, str] = {}  # normalised module path (no ".weight") -> parameter name

    def add(self, module_path: str, param_name: str) -> None:
        """Register a parameter under a module path (without ``.weight``); the first registration wins."""
        self._params.setdefault(normalise(_TEXT_MODEL.sub("", module_path)), param_name)

    def add_params(self, names: Iterable[str], *, prefix: str = "") -> None:
        """Register parameters by their own names (``prefix`` is prepended to the registered parameter name)."""
        for name in names:
            base, _, leaf = name.rpartition(".")
            if leaf == "weight":
                self.add(base, prefix + name)
                if base.endswith(".to_out.0"):  # old diffusers processors name the output projection "to_out"
                    self.add(base[: -len(".0")], prefix + name)
            elif leaf == "bias":
                self.add(f"{base}.bias", prefix + name)

    def add_aliases(self, aliases: Mapping[str, str]) -> None:
        """Register other spellings (e.g. LDM keys ``input_blocks.1.1.proj_in.weight``) of known parameters."""
        for alias, name in aliases.items():
            base, _, leaf = alias.rpartition(".")
            if leaf == "weight":
                self.add(base, name)
            elif leaf == "bias":
                self.add(f"{base}.bias", name)

    def weight(self, module_path: str) -> str | None:
        """The weight parameter a LoRA module path names, or None."""
        for form in _lookup_forms(module_path):
            if form in self._params:
                return self._params[form]
        return None

    def bias(self, module_path: str) -> str | None:
        """The bias parameter of a LoRA module path (for ``diff_b``), or None."""
        for form in _lookup_forms(module_path):
            name = self._params.get(form + "_bias")
            if name is not None:
                return name
        return None

    def __len__(self) -> int:
        return len(self._params)
