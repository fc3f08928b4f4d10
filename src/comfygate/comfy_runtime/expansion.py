"""Node expansion: a node function may answer with a graph to run in its place.

A node returns ``{"result": (value_or_link, ...), "expand": {node_id: {"class_type", "inputs",
"override_display_id"?}}}``. The executor adds those nodes to the run, runs the output nodes among them and
whatever the result links need, then gives the expanding node the values the links point at (a link stands for
every item that output produced). Ids must not collide with the prompt's or another expansion's: build the
graph with :class:`GraphBuilder`, whose default prefix ``"<node id>.<call index>.<graph index>."`` (ComfyUI's
scheme) the executor sets before each call of a node function. Expanded nodes may link to any node of the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .graph import is_link
from .node_kinds import NodeKinds

__all__ = ["ExpansionError", "GraphBuilder", "GraphNode", "RunGraph", "default_prefix"]


class ExpansionError(ValueError):
    """An expansion graph is malformed; the message names the node and input at fault."""


_default_prefix: ContextVar[tuple[str, int, int]] = ContextVar("comfygate_graph_prefix", default=("", 0, 0))


@contextmanager
def default_prefix(node_id: str, call_index: int) -> Iterator[None]:
    """GraphBuilders made inside the block prefix their ids with ``"<node_id>.<call_index>.<n>."``."""
    token = _default_prefix.set((node_id, call_index, 0))
    try:
        yield
    finally:
        _default_prefix.reset(token)


class GraphNode:
    """A node being built; ``out(i)`` is the link to its output slot ``i``."""

    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list:
        return [self.id, index]

    def set_input(self, name: str, value: Any) -> None:
        """Set an input; None removes it."""
        if value is None:
            self.inputs.pop(name, None)
        else:
            self.inputs[name] = value

    def get_input(self, name: str) -> Any:
        return self.inputs.get(name)

    def set_override_display_id(self, display_id: str) -> None:
        self.override_display_id = display_id

    def serialize(self) -> dict[str, Any]:
        node: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            node["override_display_id"] = self.override_display_id
        return node


class GraphBuilder:
    """Builds an expansion graph with ids unique to the calling node, as ComfyUI's GraphBuilder does."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = self.alloc_prefix() if prefix is None else prefix
        self.nodes: dict[str, GraphNode] = {}
        self._next_id = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        _default_prefix.set((prefix_root, call_index, graph_index))

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        """The next default prefix; each call advances the graph index so two builders never collide."""
        default_root, default_call, default_graph = _default_prefix.get()
        prefix = (f"{default_root if root is None else root}.{default_call if call_index is None else call_index}."
                  f"{default_graph if graph_index is None else graph_index}.")
        _default_prefix.set((default_root, default_call, default_graph + 1))
        return prefix

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> GraphNode:  # noqa: A002 (ComfyUI's name)
        if id is None:
            id = str(self._next_id)
            self._next_id += 1
        full_id = self.prefix + id
        if full_id not in self.nodes:
            self.nodes[full_id] = GraphNode(full_id, class_type, inputs)
        return self.nodes[full_id]

    def lookup_node(self, id: str) -> GraphNode | None:  # noqa: A002
        return self.nodes.get(self.prefix + id)

    def remove_node(self, id: str) -> None:  # noqa: A002
        del self.nodes[self.prefix + id]

    def finalize(self) -> dict[str, dict[str, Any]]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}


class RunGraph:
    """The submitted prompt plus the nodes expansions added during one run."""

    def __init__(self, prompt: Mapping[str, dict[str, Any]]) -> None:
        self.prompt = prompt
        self._added: dict[str, dict[str, Any]] = {}
        self._parent: dict[str, str] = {}
        self._display: dict[str, str] = {}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.prompt or node_id in self._added

    def node(self, node_id: str) -> dict[str, Any]:
        return self._added[node_id] if node_id in self._added else self.prompt[node_id]

    def class_type(self, node_id: str) -> str:
        return self.node(node_id)["class_type"]

    def real_node(self, node_id: str) -> str:
        """The prompt node that (through expansions) added ``node_id``; the node itself for prompt nodes."""
        while node_id in self._parent:
            node_id = self._parent[node_id]
        return node_id

    def display_node(self, node_id: str) -> str:
        """The prompt node a user sees for ``node_id``: its expanding node unless it overrode that."""
        seen = {node_id}
        while node_id in self._display and self._display[node_id] not in seen:  # overrides may loop
            node_id = self._display[node_id]
            seen.add(node_id)
        return node_id

    def add_expansion(self, parent_id: str, graph: Any, kinds: NodeKinds) -> list[str]:
        """Check ``graph`` whole, then add its nodes under ``parent_id``; ExpansionError says what is wrong."""
        if not isinstance(graph, Mapping) or not graph:
            raise ExpansionError(f"'expand' must be a non-empty object of node id -> node, got {graph!r:.80}")
        checked: dict[str, dict[str, Any]] = {}
        for node_id, node in graph.items():
            where = f"expanded node {node_id!r}"
            if not isinstance(node_id, str) or not node_id:
                raise ExpansionError(f"expanded node ids must be non-empty strings, got {node_id!r}")
            if node_id in self:
                raise ExpansionError(f"{where} reuses an id already in the run; build expansions with GraphBuilder")
            if not isinstance(node, Mapping) or not isinstance(node.get("inputs", {}), Mapping):
                raise ExpansionError(f"{where} must be an object with class_type and inputs")
            try:
                kinds.get(node.get("class_type"))
            except LookupError as exc:
                raise ExpansionError(f"{where}: {exc}") from None
            display = node.get("override_display_id", parent_id)
            if not isinstance(display, str):
                raise ExpansionError(f"{where}: override_display_id must be a string")
            checked[node_id] = {"class_type": node["class_type"], "inputs": dict(node.get("inputs", {})),
                                "display": display}
        for node_id, node in checked.items():
            for name, value in node["inputs"].items():
                if is_link(value) and value[0] not in self and value[0] not in checked:
                    raise ExpansionError(
                        f"expanded node {node_id!r}, input {name!r} links to node {value[0]!r}, which does not exist")
        for node_id, node in checked.items():
            self._display[node_id] = node.pop("display")
            self._added[node_id] = node
            self._parent[node_id] = parent_id
        return list(checked)
