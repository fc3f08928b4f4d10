"""Device and dtype choice, model sizes and memory budgets for the model pool.

torch is imported inside the functions: the pool (and whoever builds it at worker start) can import this module
without paying for torch until a model is actually handled.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "CPU_BUDGET_SHARE",
    "cuda_reserve_bytes",
    "default_budget",
    "device_free_bytes",
    "is_out_of_memory",
    "module_bytes",
    "pick_device",
    "pick_dtype",
    "total_ram_bytes",
    "WrapsModule",
]

log = logging.getLogger(__name__)

GIB = 1024**3
# Share of RAM the pool may fill on CPU; the rest is for activations, decoded images and everything else.
CPU_BUDGET_SHARE = 0.5
_DTYPE_NAMES = {
    "auto": "auto",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}


def pick_device(setting: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; ValueError naming the setting."""
    import torch

    text = (setting or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device setting {setting!r} asks for CUDA, but no CUDA device is available")
        index_text = text.partition(":")[2]
        if not index_text:
            return torch.device("cuda", torch.cuda.current_device())
        if not index_text.isdigit():
            raise ValueError(f"device setting {setting!r} is not valid: expected cuda:N with N a device number")
        index = int(index_text)
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device setting {setting!r} names CUDA device {index}, but only {count} exist")
        return torch.device("cuda", index)
    raise ValueError(f"device setting {setting!r} is not valid: use auto, cpu, cuda or cuda:N")


def pick_dtype(device: torch.device | str, setting: str = "auto") -> torch.dtype:
    """The weight dtype on ``device``: float32 on CPU whatever is asked (half precision is slow or unsupported
    there); on CUDA float16 unless ``bf16`` or ``fp32`` is asked (``bf16`` falls back to float16 with a warning
    on GPUs without bfloat16)."""
    import torch

    text = (setting or "auto").strip().lower()
    if text not in _DTYPE_NAMES:
        raise ValueError(f"dtype setting {setting!r} is not valid: use auto, fp16, bf16 or fp32")
    name = _DTYPE_NAMES[text]
    if torch.device(device).type != "cuda":
        return torch.float32
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        log.warning("dtype setting %r: this GPU has no bfloat16 support, using float16", setting)
    return torch.float16


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (each tensor counted once, even when shared)."""
    seen: set[int] = set()
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total


def total_ram_bytes() -> int:
    """Physical RAM, capped by the cgroup memory limit of a container; 8 GiB when neither can be read."""
    total = _meminfo_bytes("MemTotal")
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, OSError, ValueError):
            total = 8 * GIB
    limit = _cgroup_limit_bytes()
    return min(total, limit) if limit else total


def cuda_reserve_bytes(total: int) -> int:
    """VRAM kept out of the model budget for activations (the UNet's at 1024x1024 run to several GiB)."""
    return max(2 * GIB, total // 5)


def default_budget(device: torch.device | str) -> int:
    """Bytes of weights the pool may keep resident on ``device``.

    CUDA: total VRAM minus :func:`cuda_reserve_bytes`, lowered when other processes already hold part of the GPU.
    CPU: :data:`CPU_BUDGET_SHARE` of RAM (container limit respected).
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        ours = torch.cuda.memory_reserved(index)  # counted as used by mem_get_info, but ours to reuse
        usable = min(total, free + ours)
        return max(0, usable - cuda_reserve_bytes(total))
    return int(total_ram_bytes() * CPU_BUDGET_SHARE)


def device_free_bytes(device: torch.device | str) -> int:
    """Memory free right now: CUDA free VRAM, or MemAvailable on CPU (falls back to the RAM total)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.mem_get_info(index)[0]
    available = _meminfo_bytes("MemAvailable")
    return available if available is not None else total_ram_bytes()


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a CPU or GPU out-of-memory error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_oom(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # a torch error can only exist once torch is imported
    if torch is not None:
        oom_types = tuple(
            t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t
        )
        if oom_types and isinstance(exc, oom_types):
            return True
    if isinstance(exc, RuntimeError):
        message = str(exc).lower()
        return any(
            marker in message
            for marker in ("out of memory", "can't allocate memory", "cublas_status_alloc_failed", "hip out of memory")
        )
    return False


def _meminfo_bytes(field: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name == field:
                    return int(rest.split()[0]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit_bytes() -> int | None:
    """The memory limit of this process's cgroup (v2 memory.max or v1 limit_in_bytes), None when unlimited."""
    for candidate in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "no limit"
            return int(text)
    return None


class WrapsModule:
    """Mixin for a model wrapper holding one torch module as ``self.module``: its dtype, device and size (the
    pool reads ``size_bytes``)."""

    module: torch.nn.Module

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def size_bytes(self) -> int:
        return module_bytes(self.module)
