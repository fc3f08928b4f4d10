"""LoRA files: read once, matched to a loaded model's weights, applied per run without reloading the base.

``load_lora`` reads a ``.safetensors`` (or ``.pt`` / ``.ckpt`` / ``.bin`` with ``torch.load(weights_only=True)``)
file into a :class:`LoraFile`: one adapter per patched weight (LoRA / LoCon, LoHa, LoKr, full differences, DoRA
on top of those). :meth:`LoraFile.patches_for` matches them to a diffusion model (``DiffusionModel``: the
diffusers UNet plus the loader's LDM-name table) or to a checkpoint's text encoders (``TextEncoder``), refusing
a LoRA whose shapes do not fit (made for another architecture), and reporting keys that match no weight -- in
the result and in the log, as ComfyUI's "lora key not loaded" warnings do. :func:`apply_loras` is what a run
wraps its use of the model in: patches for the block, exact original weights afterwards.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError
from .lora_adapters import Adapter, DiffAdapter, LohaAdapter, LokrAdapter, LoraAdapter
from .lora_apply import LoraPatch, patched
from .lora_keys import UNSUPPORTED_SUFFIXES, KeyGroup, NameIndex, group_keys, split_prefix
from .weights import read_weights

__all__ = ["LoraFile", "LoraMatch", "LoraPatch", "apply_loras", "load_lora", "patched"]

log = logging.getLogger(__name__)

_SHOWN_KEYS = 10  # keys named in one log line; the returned lists are complete


def _some(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" (and {len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


@dataclass(frozen=True)
class LoraMatch:
    """A LoRA file matched to one model: the patches, and the file's keys meant for it that match no weight."""

    patches: tuple[LoraPatch, ...]
    not_loaded: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class _Entry:
    stem: str  # key stem in the file (prefix + module path)
    adapter: Adapter
    keys: tuple[str, ...]  # the file keys this entry consumed
    bias: bool = False  # patches the module's bias (diff_b) instead of its weight

    @property
    def key(self) -> str:
        """The key to name in messages: a weight tensor's, not the alpha's."""
        return next((k for k in self.keys if not k.endswith((".alpha", ".dora_scale"))), self.keys[0])


@dataclass(frozen=True, eq=False)
class _Target:
    part: str  # "unet" | "text"
    modules: tuple[torch.nn.Module, ...]
    aliases: Mapping[str, str]  # other spellings -> parameter name (the loader's param_of_ldm)

    @property
    def root(self) -> torch.nn.Module | tuple[torch.nn.Module, ...]:
        return self.modules[0] if self.part == "unet" else self.modules


def _target_of(model: Any) -> _Target:
    """What a LoRA patches in ``model``: a DiffusionModel (``.module``), a TextEncoder (``.modules``) or a module."""
    aliases = getattr(model, "param_of_ldm", None) or {}
    if isinstance(model, torch.nn.Module):
        return _Target("unet", (model,), aliases)
    module = getattr(model, "module", None)
    if isinstance(module, torch.nn.Module):
        return _Target("unet", (module,), aliases)
    modules = getattr(model, "modules", None)
    if isinstance(modules, (list, tuple)) and all(isinstance(m, torch.nn.Module) for m in modules):
        return _Target("text", tuple(modules), aliases)
    raise TypeError(f"cannot apply a LoRA to {type(model).__name__}: expected a diffusion model or text encoder")


_TE_ALIAS = re.compile(r"^te(\d+)\.")


def _indexes(target: _Target) -> list[NameIndex]:
    """One name index per module: LDM spellings from the loader's table, then the modules' own names."""
    indexes = [NameIndex() for _ in target.modules]
    if target.part == "unet":
        indexes[0].add_aliases(target.aliases)
        indexes[0].add_params(name for name, _ in target.modules[0].named_parameters())
        return indexes
    for alias, name in target.aliases.items():  # "te1.text_model...q_proj.weight" -> "0.encoder...q_proj.weight"
        head = name.partition(".")[0]
        index = int(head) if head.isdigit() else 0
        if index < len(indexes):
            indexes[index].add_aliases({_TE_ALIAS.sub("", alias): name if head.isdigit() else f"0.{name}"})
    for i, module in enumerate(target.modules):
        indexes[i].add_params((name for name, _ in module.named_parameters()), prefix=f"{i}.")
    return indexes


class LoraFile:
    """A LoRA file's adapters by key stem; ``size_bytes`` is what it holds in memory (the pool's measure)."""

    def __init__(self, path: Path, entries: list[_Entry], unrecognised: list[str]) -> None:
        self.path = path
        self.entries = entries
        self.unrecognised = tuple(unrecognised)  # keys no known LoRA naming explains
        self.size_bytes = sum(t.numel() * t.element_size() for e in entries for t in _tensors(e.adapter))
        self._matches: weakref.WeakKeyDictionary[torch.nn.Module, LoraMatch] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LoraFile({self.path.name!r}, {len(self.entries)} weights)"

    def patches_for(self, model: Any) -> LoraMatch:
        """The patches for ``model`` (cached per model). Raises ModelLoadError when a shape does not fit."""
        target = _target_of(model)
        with self._lock:
            match = self._matches.get(target.modules[0])
            if match is None:
                match = self._matches[target.modules[0]] = self._match(target)
        return match

    def _match(self, target: _Target) -> LoraMatch:
        indexes = _indexes(target)
        shapes = {f"{i}.{name}" if target.part == "text" else name: tuple(p.shape)
                  for i, module in enumerate(target.modules) for name, p in module.named_parameters()}
        patches: list[LoraPatch] = []
        not_loaded: list[str] = []
        for entry in self.entries:
            part, index, path = split_prefix(entry.stem)
            if part != target.part:
                continue
            names = indexes[index] if index < len(indexes) else None
            name = None if names is None else names.bias(path) if entry.bias else names.weight(path)
            if name is None:
                not_loaded.extend(entry.keys)
                continue
            if not entry.adapter.fits(shapes[name]):
                raise ModelLoadError(
                    f"LoRA {self.path.name}: {entry.key} changes a weight of shape {list(entry.adapter.shape)} "
                    f"but the model's {name} has shape {list(shapes[name])}; the LoRA was made for a different "
                    f"model architecture")
            patches.append(LoraPatch(name, entry.adapter, entry.stem))
        not_loaded = list(dict.fromkeys(not_loaded))  # a diff entry's weight and bias share their keys
        if not_loaded:
            what = "diffusion model" if target.part == "unet" else "text encoder"
            log.warning("LoRA %s: %d keys not loaded (no matching %s weight): %s",
                        self.path.name, len(not_loaded), what, _some(not_loaded))
        return LoraMatch(tuple(patches), tuple(not_loaded))


def _tensors(adapter: Adapter) -> list[torch.Tensor]:
    return [v for v in vars(adapter).values() if isinstance(v, torch.Tensor)]


def _read(path: Path) -> dict[str, Any]:
    data = read_weights(path, "LoRA file")
    if isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return data


def _alpha(path: Path, group: KeyGroup, sd: Mapping[str, torch.Tensor]) -> float | None:
    key = group.keys.get("alpha")
    if key is None:
        return None
    value = sd[key]
    if value.numel() != 1:
        raise ModelLoadError(f"LoRA file {path}: {key} should be one number, has shape {list(value.shape)}")
    return float(value.item())


_PART_NAMES = {"down": "down matrix (lora_down / lora_A)", "up": "up matrix (lora_up / lora_B)"}


def _adapter(path: Path, group: KeyGroup, sd: Mapping[str, torch.Tensor]) -> list[tuple[Adapter, bool]]:
    """The adapter(s) of one key group: (adapter, patches the bias)."""
    get = {component: sd[key] for component, key in group.keys.items()}
    alpha, dora = _alpha(path, group, sd), get.get("dora_scale")

    def need(*components: str) -> None:
        missing = [c for c in components if c not in get]
        if missing:
            present = ", ".join(sorted(group.keys.values()))
            wanted = ", ".join(_PART_NAMES.get(c, c) for c in missing)
            raise ModelLoadError(f"LoRA file {path}: {group.stem} is incomplete: has {present} but no {wanted}")

    if group.family == "lora":
        need("up", "down")
        return [(LoraAdapter(alpha, dora, get["up"], get["down"], get.get("mid")), False)]
    if group.family == "loha":
        need("w1_a", "w1_b", "w2_a", "w2_b")
        return [(LohaAdapter(alpha, dora, get["w1_a"], get["w1_b"], get["w2_a"], get["w2_b"],
                             get.get("t1"), get.get("t2")), False)]
    if group.family == "lokr":
        if "w1" not in get:
            need("w1_a", "w1_b")
        if "w2" not in get:
            need("w2_a", "w2_b")
        return [(LokrAdapter(alpha, dora, get.get("w1"), get.get("w1_a"), get.get("w1_b"), get.get("w2"),
                             get.get("w2_a"), get.get("w2_b"), get.get("t2")), False)]
    if group.family == "diff":
        out = []
        if "diff" in get:
            out.append((DiffAdapter(None, None, get["diff"]), False))
        if "diff_b" in get:
            out.append((DiffAdapter(None, None, get["diff_b"]), True))
        return out
    raise ModelLoadError(f"LoRA file {path}: {group.stem} mixes tensors of different LoRA kinds: "
                         f"{', '.join(sorted(group.keys.values()))}")


def load_lora(path: str | Path) -> LoraFile:
    """Read a LoRA file. Raises ModelLoadError for unreadable files, unsupported adapter kinds (OFT, GLoRA),
    incomplete entries and files with no LoRA weights at all; keys of unknown naming are logged and kept in
    ``LoraFile.unrecognised``."""
    path = Path(path)
    raw = _read(path)
    sd = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    groups, unrecognised = group_keys(sd)
    unrecognised += sorted(str(k) for k, v in raw.items() if k not in sd)
    for key in unrecognised:
        for suffix, kind in UNSUPPORTED_SUFFIXES.items():
            if key.endswith(suffix):
                raise ModelLoadError(f"LoRA file {path} is a {kind} adapter ({key}); this runtime applies LoRA, "
                                     f"LoCon, LoHa, LoKr, DoRA and full-difference files only")
    entries: list[_Entry] = []
    for group in groups.values():
        if not group.family:  # only an alpha / dora_scale, nothing to scale
            unrecognised.extend(group.keys.values())
            continue
        keys = tuple(group.keys.values())
        for adapter, bias in _adapter(path, group, sd):
            entries.append(_Entry(group.stem, adapter, keys, bias))
    if not entries:
        sample = _some(sorted(sd)) if sd else "none"
        raise ModelLoadError(f"{path} has no LoRA weights this runtime recognises (keys: {sample})")
    if unrecognised:
        log.warning("LoRA %s: %d keys not loaded (unknown naming): %s", path.name, len(unrecognised),
                    _some(unrecognised))
    return LoraFile(path, entries, unrecognised)


@contextmanager
def apply_loras(model: Any, files: Sequence[tuple[LoraFile, float]]) -> Iterator[Any]:
    """Use ``model`` (DiffusionModel, TextEncoder or module) with ``files`` at their strengths for the block.

    Call it for every use of a shared model, also with no files: the block then waits while another thread
    has the model patched with a LoRA, instead of running on that LoRA's weights.
    """
    target = _target_of(model)
    groups = [(lora.patches_for(model).patches, strength) for lora, strength in files if strength != 0]
    with patched(target.root, groups):
        yield model
