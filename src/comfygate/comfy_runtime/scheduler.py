"""Which node runs next: a topological queue that can grow while the run goes.

Nodes join when an output (or an expansion, or a lazy node asking for an input) needs them. A node waits
for the sources of its non-lazy links. Nodes already done (served from the cache) join too, so the run can
hand their UI results over again (e.g. images of output nodes an expansion added), but a done node never
brings in a source that is not done itself: that source is not needed.
A node handed out may come back unfinished (a lazy node that asked for more inputs, a node that expanded):
it stays queued and is handed out again once its new dependencies are done. Among ready nodes the lowest id
goes first ("2" before "10"), so a run's order, and the numbering of its images, is stable.
"""

from __future__ import annotations

from collections.abc import Callable

from .expansion import RunGraph
from .graph import is_link, node_sort_key

__all__ = ["ExecutionQueue", "StuckNodes"]


class StuckNodes(Exception):
    """Queued nodes wait on each other (a cycle an expansion made); ``node_ids`` lists them."""

    def __init__(self, node_ids: list[str]) -> None:
        self.node_ids = node_ids
        super().__init__(f"nodes {', '.join(node_ids)} wait on each other (dependency cycle)")


class ExecutionQueue:
    def __init__(self, graph: RunGraph, is_lazy: Callable[[str, str], bool], is_done: Callable[[str], bool]) -> None:
        self._graph = graph
        self._is_lazy = is_lazy  # (node id, input name) -> declared lazy
        self._is_done = is_done
        self._waits_on: dict[str, set[str]] = {}  # queued node -> sources it still waits for
        self._waited_by: dict[str, set[str]] = {}  # source -> queued nodes waiting for it
        self._completed: set[str] = set()  # handed out and done: never queued again

    def __bool__(self) -> bool:
        return bool(self._waits_on)

    def add_node(self, node_id: str) -> None:
        """Queue ``node_id`` and the sources of its non-lazy links it needs (see the module docstring)."""
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in self._waits_on or current in self._completed:
                continue
            self._waits_on[current] = set()
            done = self._is_done(current)
            for name, value in self._graph.node(current)["inputs"].items():
                if not is_link(value) or self._is_lazy(current, name):
                    continue
                # A done node needs nothing evaluated; its done sources still join, to hand over their UI.
                if not done or self._is_done(value[0]):
                    self._wait(current, value[0], stack)

    def add_dependency(self, source_id: str, node_id: str) -> None:
        """Make queued ``node_id`` wait for ``source_id``, queuing it when it is not yet."""
        stack: list[str] = []
        self._wait(node_id, source_id, stack)
        for queued in stack:
            self.add_node(queued)

    def require_input(self, node_id: str, input_name: str) -> None:
        """A lazy node asked for ``input_name``: evaluate its source before handing the node out again."""
        value = self._graph.node(node_id)["inputs"].get(input_name)
        if not is_link(value):
            raise ValueError(f"check_lazy_status asked for input {input_name!r}, which is not linked")
        self.add_dependency(value[0], node_id)

    def _wait(self, node_id: str, source_id: str, stack: list[str]) -> None:
        if source_id in self._completed:
            return
        if source_id not in self._waits_on:
            stack.append(source_id)
        self._waits_on[node_id].add(source_id)
        self._waited_by.setdefault(source_id, set()).add(node_id)

    def next_ready(self) -> str:
        """The queued node to run next; StuckNodes when every queued node waits on another."""
        ready = [node_id for node_id, sources in self._waits_on.items() if not sources]
        if not ready:
            raise StuckNodes(sorted(self._waits_on, key=node_sort_key))
        return min(ready, key=node_sort_key)

    def complete(self, node_id: str) -> None:
        """``node_id`` is done: drop it and release the nodes waiting for it."""
        del self._waits_on[node_id]
        self._completed.add(node_id)
        for waiting in self._waited_by.pop(node_id, ()):
            if waiting in self._waits_on:
                self._waits_on[waiting].discard(node_id)
