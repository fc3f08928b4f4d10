"""Prompt alignment with open_clip, loaded from a local weights file only.

torch and open_clip are imported inside this module's functions, never at import time, so a gate that runs
only the pixel checks does not pay for them.
"""

from __future__ import annotations

import json
import pickle
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import ScorerUnavailable

__all__ = ["ClipScorer", "register_model_config", "config_sidecar_path"]

_REQUIRED_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


def config_sidecar_path(weights_path: Path) -> Path:
    """Where ``ClipScorer`` looks for a model config shipped with weights: ``<weights>.config.json``."""
    return Path(f"{weights_path}.config.json")


def register_model_config(model_name: str, config: Mapping[str, Any]) -> None:
    """Make ``model_name`` known to open_clip with ``config`` (the JSON of an open_clip model config).

    open_clip registers configs from files named ``<model name>.json``; the file is written to a temporary
    folder because open_clip keeps its parsed copy and does not read the file again.
    """
    import open_clip

    _check_offline_config(model_name, config)
    with tempfile.TemporaryDirectory(prefix="comfygate-clip-config-") as folder:
        path = Path(folder) / f"{model_name}.json"
        path.write_text(json.dumps(dict(config)))
        open_clip.add_model_config(path)


def _check_offline_config(model_name: str, config: Mapping[str, Any]) -> None:
    missing = [key for key in _REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise ScorerUnavailable(f"model config for {model_name!r} lacks {', '.join(missing)}")
    text_cfg = config.get("text_cfg", {})
    # These towers and tokenizers are fetched from the Hugging Face hub at creation; nothing may download.
    if "hf_model_name" in text_cfg or "hf_tokenizer_name" in text_cfg:
        raise ScorerUnavailable(
            f"model {model_name!r} needs a Hugging Face text model or tokenizer, which would be downloaded; "
            "only models with open_clip's built-in text tower and tokenizer are supported"
        )


@dataclass
class _Loaded:
    model: Any  # open_clip CLIP, in eval mode on the scorer's device
    preprocess: Any  # PIL image -> float tensor [3, S, S]
    tokenizer: Any  # list[str] -> int tensor [T, context_length]


class ClipScorer:
    """Cosine similarity between an image and texts, with an open_clip model from a local weights file.

    ``model_name`` is an open_clip model config name (``"ViT-B-32"``) and ``weights_path`` a local
    checkpoint (a state dict saved with ``torch.save``, or ``.safetensors``). Nothing is ever downloaded:
    the weights come from that file, and model names that would make open_clip reach a hub (``hf-hub:``
    names, Hugging Face text towers, SigLIP tokenizers) are refused.

    A model that open_clip does not ship a config for can bring its own: ``config_path``, or else a file
    ``<weights_path>.config.json`` next to the weights, holding the open_clip model config (the JSON of a
    file in ``open_clip/model_configs``: ``embed_dim``, ``vision_cfg``, ``text_cfg``). It is registered with
    ``open_clip.add_model_config`` under ``model_name`` before the model is created, so a worker process
    needs only the two settings (model name, weights path) to load a custom model.

    The model loads on the first ``similarity`` call (or ``load()``), once, under a lock, so threads may
    share a scorer. Loading problems raise ``ScorerUnavailable``.
    """

    def __init__(
        self, model_name: str, weights_path: Path, device: str = "cpu", *, config_path: Path | None = None
    ) -> None:
        self.model_name = model_name
        self.weights_path = Path(weights_path)
        self.device = device
        self.config_path = Path(config_path) if config_path is not None else None
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None

    def __repr__(self) -> str:
        return f"ClipScorer({self.model_name!r}, {str(self.weights_path)!r}, device={self.device!r})"

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> None:
        """Load the model now (a worker may call this at start to fail early); later calls do nothing."""
        self._ensure_loaded()

    def similarity(self, image: Image.Image, texts: Sequence[str]) -> list[float]:
        """Cosine similarity (-1..1) of ``image`` with each of ``texts``, in order."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if not texts:
            return []
        import torch

        loaded = self._ensure_loaded()
        pixels = loaded.preprocess(image.convert("RGB")).unsqueeze(0).to(self.device)  # [1, 3, S, S]
        tokens = loaded.tokenizer(list(texts)).to(self.device)  # [T, context_length]
        with torch.inference_mode():
            image_features = loaded.model.encode_image(pixels, normalize=True)  # [1, D]
            text_features = loaded.model.encode_text(tokens, normalize=True)  # [T, D]
            similarities = (image_features @ text_features.T)[0]  # [T]
        return [float(value) for value in similarities.cpu()]

    def _ensure_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Loaded:
        if not self.model_name or ":" in self.model_name:
            # "hf-hub:org/repo" fetches from the hub; "local-dir:" ignores weights_path.
            raise ScorerUnavailable(
                f"CLIP model name {self.model_name!r} is not supported: give an open_clip config name "
                "(e.g. ViT-B-32) and a local weights file"
            )
        if "siglip" in self.model_name.lower():
            raise ScorerUnavailable(
                f"CLIP model {self.model_name!r} uses a SigLIP tokenizer, which open_clip downloads from the "
                "Hugging Face hub; it is not supported"
            )
        # open_clip looks names up with "/" spelled "-" ("ViT-B/32" is "ViT-B-32").
        name = self.model_name.replace("/", "-")
        weights = self.weights_path.expanduser().absolute()
        if not weights.is_file():
            raise ScorerUnavailable(
                f"CLIP weights file {str(weights)!r} does not exist (nothing is downloaded)"
            )

        import open_clip

        self._register_config(name)
        config = open_clip.get_model_config(name)
        if config is None:
            raise ScorerUnavailable(
                f"unknown open_clip model {self.model_name!r}: not a built-in config, and neither a "
                f"config_path nor {config_sidecar_path(self.weights_path).name!r} next to the weights "
                "was given"
            )
        _check_offline_config(name, config)
        try:
            # An absolute path is never one of open_clip's pretrained tags, so it is loaded as a file.
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=str(weights), device=self.device,
                pretrained_image=False, pretrained_text=False,
            )
        except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
            # How torch.load and load_state_dict report unreadable files and mismatched tensors.
            raise ScorerUnavailable(
                f"cannot load CLIP model {self.model_name!r} from {str(weights)!r}: {exc}"
            ) from exc
        model.eval()
        return _Loaded(model, preprocess, open_clip.get_tokenizer(name))

    def _register_config(self, name: str) -> None:
        path = self.config_path
        if path is None:
            sidecar = config_sidecar_path(self.weights_path)
            if not sidecar.is_file():
                return
            path = sidecar
        try:
            config = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ScorerUnavailable(f"cannot read CLIP model config {str(path)!r}: {exc}") from exc
        if not isinstance(config, dict):
            raise ScorerUnavailable(f"CLIP model config {str(path)!r} is not a JSON object")
        register_model_config(name, config)
