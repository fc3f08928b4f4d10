"""Links between nodes and the order to run them in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .errors import WorkflowInvalid

__all__ = ["execution_order", "is_link", "links_of", "needed_nodes", "node_sort_key"]


def is_link(value: Any) -> bool:
    """A link is ``[source node id (str), output index (int)]``."""
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order ("2" before "10"), other ids after them."""
    # isascii: "²".isdigit() is True, but int() refuses it.
    return (0, int(node_id), "") if node_id.isascii() and node_id.isdigit() else (1, 0, node_id)


def links_of(node: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    """``(input name, source node id, output index)`` for each linked input of ``node``."""
    for name, value in node.get("inputs", {}).items():
        if is_link(value):
            yield name, value[0], value[1]


def needed_nodes(prompt: dict[str, dict[str, Any]], targets: Iterable[str]) -> set[str]:
    """``targets`` and every node they depend on. Links to absent nodes are left to validation."""
    needed: set[str] = set()
    stack = [t for t in targets if t in prompt]
    while stack:
        node_id = stack.pop()
        if node_id in needed:
            continue
        needed.add(node_id)
        stack.extend(src for _, src, _ in links_of(prompt[node_id]) if src in prompt)
    return needed


def execution_order(prompt: dict[str, dict[str, Any]], targets: Iterable[str]) -> list[str]:
    """Nodes needed by ``targets``, each after its inputs (Kahn's algorithm, ties by id).

    A dependency cycle raises WorkflowInvalid naming the nodes on it.
    """
    needed = needed_nodes(prompt, targets)
    waiting_on = {n: {src for _, src, _ in links_of(prompt[n]) if src in needed} for n in needed}
    order: list[str] = []
    ready = sorted((n for n, deps in waiting_on.items() if not deps), key=node_sort_key)
    while ready:
        node_id = ready.pop(0)
        order.append(node_id)
        del waiting_on[node_id]
        for other, deps in waiting_on.items():
            if node_id in deps:
                deps.discard(node_id)
                if not deps:
                    ready.append(other)
        ready.sort(key=node_sort_key)
    if waiting_on:
        stuck = sorted(waiting_on, key=node_sort_key)
        message = "Dependency cycle detected"
        details = f"nodes {', '.join(stuck)} are on a dependency cycle or wait on one"
        raise WorkflowInvalid(
            {"type": "dependency_cycle", "message": message, "details": details, "extra_info": {}},
            {
                n: {
                    "errors": [{"type": "dependency_cycle", "message": message, "details": details,
                                "extra_info": {}}],
                    "dependent_outputs": [],
                    "class_type": prompt[n]["class_type"],
                }
                for n in stuck
            },
        )
    return order
