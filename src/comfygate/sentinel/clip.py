"""CLIP embeddings with open_clip, loaded from a local weights file only.

The gate embeds images and prompts in batches (``embed_images``, ``embed_texts``); prompt alignment is the
cosine of the two, and the aesthetic and NSFW heads read the same image embeddings. torch and open_clip are
imported inside this module's functions, never at import time, so a gate that runs only the pixel checks does
not pay for them.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .errors import ScorerUnavailable

__all__ = ["ClipScorer", "ModelCache", "register_model_config", "config_sidecar_path"]

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


class ModelCache(Protocol):
    """Where a scorer may keep its model instead of holding it: the worker's model pool.

    ``use(key, load, size_hint)`` is a context manager giving the model stored under ``key``, calling
    ``load()`` when it is not resident; the model stays resident (not evictable) until the context closes.
    Stored values have an int ``size_bytes``. comfy_runtime's ``ModelPool`` has this shape; the sentinel does
    not import it.
    """

    def use(
        self, key: Hashable, load: Callable[[], Any], size_hint: int | None = None
    ) -> contextlib.AbstractContextManager[Any]: ...


@dataclass
class _Loaded:
    model: Any  # open_clip CLIP, in eval mode on the scorer's device
    preprocess: Any  # PIL image -> float tensor [3, S, S]
    tokenizer: Any  # list[str] -> int tensor [T, context_length]
    size_bytes: int  # parameters and buffers on the device, for a model cache's budget


def _module_bytes(module: Any) -> int:
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}  # shared tensors counted once
    return sum(t.numel() * t.element_size() for t in tensors.values())


class ClipScorer:
    """Image and text embeddings (and their cosine similarity) from an open_clip model in a local file.

    ``model_name`` is an open_clip model config name (``"ViT-B-32"``) and ``weights_path`` a local
    checkpoint (a state dict saved with ``torch.save``, or ``.safetensors``). Nothing is ever downloaded:
    the weights come from that file, and model names that would make open_clip reach a hub (``hf-hub:``
    names, Hugging Face text towers, SigLIP tokenizers) are refused.

    A model that open_clip does not ship a config for can bring its own: ``config_path``, or else a file
    ``<weights_path>.config.json`` next to the weights, holding the open_clip model config (the JSON of a
    file in ``open_clip/model_configs``: ``embed_dim``, ``vision_cfg``, ``text_cfg``). It is registered with
    ``open_clip.add_model_config`` under ``model_name`` before the model is created, so a worker process
    needs only the two settings (model name, weights path) to load a custom model.

    The model loads on first use (or ``load()``), once, under a lock, so threads may share a scorer. With a
    ``cache`` (the worker's model pool, see ``ModelCache``) the model lives there instead, under
    ``cache_key``: it is pinned while an embedding call runs and may be evicted between calls, to be loaded
    again from the file when next needed. Loading problems raise ``ScorerUnavailable``.
    """

    def __init__(
        self,
        model_name: str,
        weights_path: Path,
        device: str = "cpu",
        *,
        config_path: Path | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        self.model_name = model_name
        self.weights_path = Path(weights_path)
        self.device = device
        self.config_path = Path(config_path) if config_path is not None else None
        self.cache = cache
        self._lock = threading.Lock()  # one load of the held model
        self._config_lock = threading.Lock()  # one config lookup (a load takes it while holding _lock)
        self._loaded: _Loaded | None = None  # held here only without a cache
        self._has_loaded = False
        self._config: tuple[str, dict[str, Any]] | None = None  # (open_clip name, model config)

    def __repr__(self) -> str:
        return f"ClipScorer({self.model_name!r}, {str(self.weights_path)!r}, device={self.device!r})"

    @property
    def cache_key(self) -> tuple[str, ...]:
        """The key of this model in a model cache: the same file on the same device is one entry."""
        return ("clip", self.model_name, str(self.weights_path.expanduser().absolute()), str(self.device))

    @property
    def loaded(self) -> bool:
        """True once the model has loaded (with a cache, the cache may have evicted it since)."""
        return self._has_loaded

    def load(self) -> None:
        """Load the model now (a worker calls this at start to fail early); later calls do nothing.

        With a cache, the model is loaded into it and left there, idle.
        """
        with self._use():
            pass

    @property
    def embed_dim(self) -> int:
        """Width of the embeddings, from the model config (the weights need not be loaded)."""
        return int(self._model_config()[1]["embed_dim"])

    def embed_images(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """L2-normalised embeddings of ``images``: float32 ``[N, embed_dim]``, row i for image i.

        All images go through the model in one forward pass, or in chunks of ``batch_size`` to bound memory.
        """
        if isinstance(images, Image.Image):
            raise TypeError("images must be a sequence of PIL images, not one image")
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        images = list(images)
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        import torch

        step = batch_size or len(images)
        chunks: list[np.ndarray] = []
        with self._use() as loaded, torch.inference_mode():
            for start in range(0, len(images), step):
                pixels = torch.stack([loaded.preprocess(image.convert("RGB"))
                                      for image in images[start:start + step]])  # [n, 3, S, S]
                features = loaded.model.encode_image(pixels.to(self.device), normalize=True)  # [n, D]
                chunks.append(features.float().cpu().numpy())
        return np.concatenate(chunks)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings of ``texts``: float32 ``[T, embed_dim]``, row i for text i."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        import torch

        with self._use() as loaded, torch.inference_mode():
            tokens = loaded.tokenizer(texts).to(self.device)  # [T, context_length]
            features = loaded.model.encode_text(tokens, normalize=True)  # [T, D]
            return features.float().cpu().numpy()

    def similarity(self, image: Image.Image, texts: Sequence[str]) -> list[float]:
        """Cosine similarity (-1..1) of ``image`` with each of ``texts``, in order."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if not texts:
            return []
        image_embedding = self.embed_images([image])[0]  # [D]
        return [float(value) for value in self.embed_texts(texts) @ image_embedding]

    @contextlib.contextmanager
    def _use(self) -> Iterator[_Loaded]:
        """The loaded model for the duration of the block: from the cache (pinned there), or held here."""
        if self.cache is None:
            yield self._ensure_loaded()
            return
        size_hint = self.weights_path.stat().st_size if self.weights_path.is_file() else None
        with self.cache.use(self.cache_key, self._load, size_hint) as loaded:
            yield loaded

    def _ensure_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _model_config(self) -> tuple[str, dict[str, Any]]:
        """(open_clip model name, its config), checked for anything that would download; once per scorer."""
        with self._config_lock:
            if self._config is None:
                self._config = self._resolve_config()
            return self._config

    def _resolve_config(self) -> tuple[str, dict[str, Any]]:
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
        return name, config

    def _load(self) -> _Loaded:
        weights = self.weights_path.expanduser().absolute()
        if not weights.is_file():
            raise ScorerUnavailable(
                f"CLIP weights file {str(weights)!r} does not exist (nothing is downloaded)"
            )
        name, _ = self._model_config()
        import open_clip

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
        self._has_loaded = True
        return _Loaded(model, preprocess, open_clip.get_tokenizer(name), _module_bytes(model))

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
