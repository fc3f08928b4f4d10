"""Cache keys: what a node's output depends on, as one digest.

As in ComfyUI, a node's key covers its class_type, what its ``IS_CHANGED`` returned, its inputs by name
(constants by value, links by the key of the linked node and the output slot) and, for nodes with a
``UNIQUE_ID`` hidden input or ``NOT_IDEMPOTENT = True``, its node id. Node ids are not part of other keys:
the same subgraph under other ids (another workflow, a duplicated branch) hits the same entries. Hidden
inputs (PROMPT, INPUT_DIR, ...) are not part of the key; a node whose output depends on them says so through
IS_CHANGED (LoadImage returns the hash of its file).

``IS_CHANGED`` returning NaN (or raising) makes the key volatile: the node runs every time and so does
everything downstream of it; volatile keys are never stored.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .expansion import RunGraph
from .graph import is_link
from .node_kinds import NodeKinds

__all__ = ["NO_FINGERPRINT", "CacheKeys", "NodeKey"]

NO_FINGERPRINT = object()  # the class has no IS_CHANGED


@dataclass(frozen=True)
class NodeKey:
    digest: str
    volatile: bool  # IS_CHANGED said NaN here or upstream: never served from or stored in the cache


def _is_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list | tuple):
        return any(_is_nan(item) for item in value)
    return False


def _stable_repr(value: Any) -> str:
    """A text form equal for equal constants (dict key order ignored); repr distinguishes 1, 1.0 and True."""
    if isinstance(value, Mapping):
        items = sorted((_stable_repr(k), _stable_repr(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_stable_repr(item) for item in value) + "]"
    return repr(value)


class CacheKeys:
    """Keys of one run's nodes, computed on first use. ``fingerprint(node_id)`` returns IS_CHANGED's answer."""

    def __init__(self, graph: RunGraph, kinds: NodeKinds, fingerprint: Callable[[str], Any]) -> None:
        self._graph = graph
        self._kinds = kinds
        self._fingerprint = fingerprint
        self._keys: dict[str, NodeKey] = {}

    def key(self, node_id: str) -> NodeKey:
        # Iterative post-order over the ancestors: deep graphs must not hit the recursion limit.
        stack = [node_id]
        visiting: set[str] = set()
        while stack:
            current = stack[-1]
            if current in self._keys:
                stack.pop()
                continue
            if current not in self._graph:  # a dangling link; the run reports it when it gets there
                self._keys[current] = NodeKey(f"missing:{uuid.uuid4().hex}", volatile=True)
                stack.pop()
                continue
            sources = [v[0] for v in self._graph.node(current)["inputs"].values() if is_link(v)]
            pending = [s for s in sources if s not in self._keys and s not in visiting]
            if pending and current not in visiting:
                visiting.add(current)
                stack.extend(pending)
                continue
            stack.pop()
            visiting.discard(current)
            self._keys[current] = self._immediate_key(current)
        return self._keys[node_id]

    def _immediate_key(self, node_id: str) -> NodeKey:
        node = self._graph.node(node_id)
        kind = self._kinds.get(node["class_type"])
        fingerprint = self._fingerprint(node_id)
        volatile = _is_nan(fingerprint)
        parts = [f"class={kind.class_type!r}"]
        if volatile:
            parts.append(f"changed={uuid.uuid4().hex}")
        elif fingerprint is not NO_FINGERPRINT:
            parts.append(f"changed={_stable_repr(fingerprint)}")
        if kind.keyed_by_node_id:
            parts.append(f"id={node_id!r}")
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value):
                # A source still being keyed here sits on a cycle; the run refuses that, the key is moot.
                source = self._keys.get(value[0]) or NodeKey(f"cycle:{uuid.uuid4().hex}", volatile=True)
                volatile = volatile or source.volatile
                parts.append(f"{name!r}=link:{source.digest}:{value[1]!r}")
            else:
                parts.append(f"{name!r}={_stable_repr(value)}")
        digest = hashlib.sha256("\n".join(parts).encode("utf-8", "backslashreplace")).hexdigest()
        return NodeKey(digest, volatile)
