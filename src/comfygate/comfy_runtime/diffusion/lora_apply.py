"""Patch a shared model's weights in place for one block of work, and put the exact originals back afterwards.

Models in the pool are shared by every run in the process, and runs execute on several threads. A run with a
LoRA therefore cannot keep its own copy of the model (that would double the memory) nor leave its patches
behind. Each module has a *gate*: any number of threads may use the module at once as long as they want the
same patches (the same LoRA tensors at the same strengths, or none); a thread that wants different patches
waits until the module is free, then the first thread in applies its patches and the last one out restores the
backed-up original weights bit for bit. Waiting threads with other patches are not starved: while one waits,
newcomers with the current patches queue behind it.

Every use of a shared model should pass through :func:`patched` (with no patches when the run has none);
otherwise an unpatched run could see another run's LoRA.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from .lora_adapters import Adapter

__all__ = ["LoraPatch", "patched"]


@dataclass(frozen=True, eq=False)
class LoraPatch:
    """One weight change from a LoRA file: ``target`` is the parameter name under the patched root (for a
    sequence of modules, ``"<index>.<name>"``), ``key`` the file's key stem it came from."""

    target: str
    adapter: Adapter
    key: str


_Item = tuple[str, LoraPatch, float]  # (parameter name in its module, patch, strength)
_Signature = tuple[tuple[str, int, float], ...]


def _signature(items: Sequence[_Item]) -> _Signature:
    # Adapters are identified by object: every holder keeps its patches alive, so ids cannot be reused
    # while a signature is compared.
    return tuple((name, id(patch.adapter), strength) for name, patch, strength in items)


def _apply(module: torch.nn.Module, items: Sequence[_Item]) -> dict[str, torch.Tensor]:
    """Patch ``module`` in place; returns CPU copies of the original weights (all restored on any failure)."""
    changes: dict[str, list[tuple[Adapter, float]]] = {}
    for name, patch, strength in items:
        changes.setdefault(name, []).append((patch.adapter, strength))
    backup: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, adapters in changes.items():
                param = module.get_parameter(name)
                backup[name] = param.detach().to("cpu", copy=True)
                weight = param.detach().to(torch.float32, copy=True)  # several LoRAs add up in float32
                for adapter, strength in adapters:
                    weight = adapter.apply(weight, strength)
                param.copy_(weight)  # cast back to the weight's own dtype
    except BaseException:
        _restore(module, backup)
        raise
    return backup


def _restore(module: torch.nn.Module, backup: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, original in backup.items():
            module.get_parameter(name).copy_(original)


class _Gate:
    """Who may use one module now: any number of holders sharing one patch signature."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._signature: _Signature | None = None
        self._holders: Counter[int] = Counter()  # thread id -> open holds
        self._waiting: Counter[_Signature] = Counter()
        self._backup: dict[str, torch.Tensor] = {}

    def _may_enter(self, signature: _Signature) -> bool:
        if not self._holders:
            return True
        if signature != self._signature:
            return False
        if threading.get_ident() in self._holders:
            return True  # a nested use on the same thread
        return not any(waiting != signature for waiting in self._waiting)

    @contextmanager
    def hold(self, module: torch.nn.Module, items: Sequence[_Item]) -> Iterator[None]:
        signature = _signature(items)
        me = threading.get_ident()
        with self._cond:
            if me in self._holders and signature != self._signature:
                raise RuntimeError("this thread already uses the model with other LoRA patches; nesting uses "
                                   "with different patches would wait forever")
            self._waiting[signature] += 1
            try:
                while not self._may_enter(signature):
                    self._cond.wait()
            finally:
                self._waiting[signature] -= 1
                if not self._waiting[signature]:
                    del self._waiting[signature]
            if not self._holders:
                try:
                    self._backup = _apply(module, items)
                finally:
                    self._cond.notify_all()  # on failure: let the waiters try
                self._signature = signature
            self._holders[me] += 1
        try:
            yield
        finally:
            with self._cond:
                self._holders[me] -= 1
                if not self._holders[me]:
                    del self._holders[me]
                if not self._holders:
                    try:
                        _restore(module, self._backup)
                    finally:
                        self._backup, self._signature = {}, None
                        self._cond.notify_all()


_gates: weakref.WeakKeyDictionary[torch.nn.Module, _Gate] = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()


def _gate_of(module: torch.nn.Module) -> _Gate:
    with _gates_lock:
        gate = _gates.get(module)
        if gate is None:
            gate = _gates[module] = _Gate()
        return gate


@contextmanager
def patched(root: torch.nn.Module | Sequence[torch.nn.Module],
            patches: Sequence[tuple[Sequence[LoraPatch], float]]) -> Iterator[None]:
    """Use ``root`` with ``patches`` (groups of LoRA patches, each with a strength) applied for the block.

    ``root`` is one module (patch targets are its parameter names) or a sequence of modules (targets
    ``"<index>.<name>"``, as for a checkpoint's text encoders). Groups with strength 0 are skipped. Blocks until
    no other thread uses the module(s) with different patches; the original weights are restored bit for bit
    when the last user leaves, also after an exception.
    """
    modules = [root] if isinstance(root, torch.nn.Module) else list(root)
    items: list[list[_Item]] = [[] for _ in modules]
    for group, strength in patches:
        if strength == 0:
            continue
        for patch in group:
            if isinstance(root, torch.nn.Module):
                items[0].append((patch.target, patch, float(strength)))
            else:
                index, _, name = patch.target.partition(".")
                items[int(index)].append((name, patch, float(strength)))
    with ExitStack() as stack:
        # One fixed order (by object id) over the modules, so two threads can never hold one gate each and
        # wait for the other's.
        for i in sorted(range(len(modules)), key=lambda i: id(modules[i])):
            stack.enter_context(_gate_of(modules[i]).hold(modules[i], items[i]))
        yield
