"""Reading model files without running their code: one reader for checkpoints, VAEs, LoRAs and upscalers.

``.safetensors`` files (by name, or by their header when misnamed) are read by safetensors; ``.ckpt``/``.pt``/
``.pth``/``.bin`` by ``torch.load(weights_only=True)``, which refuses a pickle that needs more than tensors and
plain containers. Every error is a ModelLoadError naming the file; the callers unwrap their own layouts.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from comfygate.comfy_runtime.diffusion.errors import ModelFileNotFound, ModelLoadError

__all__ = ["PICKLE_SUFFIXES", "SAFETENSORS_SUFFIXES", "read_weights"]

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def read_weights(path: str | Path, what: str = "model file") -> dict[str, Any]:
    """The top-level dict stored in ``path`` (tensors on the CPU). ``what`` names the kind of file in errors."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFound(f"no such {what}: {path}")
    with path.open("rb") as file:
        head = file.read(9)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES or head[8:9] == b"{":  # an 8-byte header length, then JSON
        data = _read_safetensors(path, what)
    elif suffix in PICKLE_SUFFIXES:
        data = _read_pickle(path, head, what)
    else:
        raise ModelLoadError(f"cannot read {what} {path}: unknown model file type (extension {suffix or '(none)'}); "
                             f"expected one of {', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}")
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what} {path} holds a {type(data).__name__}, not a state dict")
    return data


def _read_safetensors(path: Path, what: str) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {what} {path}: not a readable .safetensors file ({exc})") from exc


def _read_pickle(path: Path, head: bytes, what: str) -> Any:
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # torch.save's zip archive, or a bare pickle
        raise ModelLoadError(f"cannot read {what} {path}: not a readable torch checkpoint "
                             f"(neither a torch zip archive nor a pickle)")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message ends by suggesting weights_only=False, the unsafe load we refuse: name the global only.
        found = re.search(r"(?:Unsupported global|GLOBAL|global):? ?([\w.]+)", str(exc))
        needs = f" (it needs {found.group(1)})" if found else ""
        raise ModelLoadError(
            f"{what} {path} refused: this pickle holds more than weights and would run code to load{needs}. "
            f"Only weights-only files load (torch.load with weights_only=True); convert it to .safetensors"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {what} {path}: not a readable torch checkpoint ({exc})") from exc
