"""Reading a UI-format document into small typed records, checking its shape on the way.

The editor saves a graph as ``{"nodes": [...], "links": [...], "definitions": {"subgraphs": [...]}}``
(links: see :mod:`.links`). Node ids are kept as strings, the form the API prompt uses. Every error names
the graph, the node id and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import WorkflowFormatError
from .links import UiLink, fail, read_id, read_links, read_slot_type

__all__ = [
    "SUBGRAPH_INPUT_NODE",
    "SUBGRAPH_OUTPUT_NODE",
    "SubgraphDefinition",
    "SubgraphSlot",
    "UiGraph",
    "UiInput",
    "UiNode",
    "UiOutput",
    "read_document",
]

# Inside a subgraph, links from its inputs start at this pseudo node and links to its outputs end at the other.
SUBGRAPH_INPUT_NODE = "-10"
SUBGRAPH_OUTPUT_NODE = "-20"


@dataclass(frozen=True)
class UiInput:
    name: str
    type: str
    link: str | None  # link id, None when nothing is connected
    widget: str | None  # name of the widget this input stands for, when it is a widget input


@dataclass(frozen=True)
class UiOutput:
    name: str
    type: str


@dataclass(frozen=True)
class UiNode:
    id: str
    type: str
    mode: int  # 0 always, 2 muted ("never"), 4 bypassed; 1 and 3 run like 0
    title: str | None
    inputs: tuple[UiInput, ...]
    outputs: tuple[UiOutput, ...]
    widgets_values: list[Any] | dict[str, Any] | None
    properties: Mapping[str, Any]
    where: str  # "node 5" or "node 5 in subgraph 'Name'", for messages


@dataclass(frozen=True)
class SubgraphSlot:
    name: str
    type: str
    link_ids: tuple[str, ...]


@dataclass
class UiGraph:
    nodes: dict[str, UiNode]
    links: dict[str, UiLink]
    where: str  # "workflow" or "subgraph 'Name' (id)"


@dataclass
class SubgraphDefinition(UiGraph):
    id: str = ""
    name: str = ""
    inputs: tuple[SubgraphSlot, ...] = field(default=())
    outputs: tuple[SubgraphSlot, ...] = field(default=())


def _read_input(raw: Any, where: str, index: int) -> UiInput:
    if not isinstance(raw, Mapping):
        raise fail(where, f"inputs[{index}] must be an object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str):  # a Reroute's one input is named ""
        raise fail(where, f"inputs[{index}] has no name")
    link = raw.get("link")
    widget = raw.get("widget")
    widget_name = widget.get("name") if isinstance(widget, Mapping) else None
    return UiInput(
        name=name,
        type=read_slot_type(raw.get("type")),
        link=None if link is None else read_id(link, f"{where}, input {name!r}", "link"),
        widget=widget_name if isinstance(widget_name, str) else None,
    )


def _read_output(raw: Any, where: str, index: int) -> UiOutput:
    if not isinstance(raw, Mapping):
        raise fail(where, f"outputs[{index}] must be an object, got {type(raw).__name__}")
    name = raw.get("name")
    return UiOutput(name=name if isinstance(name, str) else "", type=read_slot_type(raw.get("type")))


def _read_node(raw: Any, graph_where: str, index: int) -> UiNode:
    if not isinstance(raw, Mapping):
        raise fail(graph_where, f"nodes[{index}] must be an object, got {type(raw).__name__}")
    node_id = read_id(raw.get("id"), f"{graph_where}, nodes[{index}]", "'id'")
    where = f"node {node_id}" if graph_where == "workflow" else f"node {node_id} in {graph_where}"
    node_type = raw.get("type")
    if not isinstance(node_type, str) or not node_type:
        raise fail(where, "'type' is missing or not a non-empty string")
    where = f"{where} ({node_type})"
    mode = raw.get("mode", 0)
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise fail(where, f"'mode' must be an integer, got {mode!r}")
    inputs, outputs = raw.get("inputs") or [], raw.get("outputs") or []
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise fail(where, "'inputs' and 'outputs' must be lists")
    values = raw.get("widgets_values")
    if values is not None and not isinstance(values, list | dict):
        raise fail(where, f"'widgets_values' must be a list or an object, got {type(values).__name__}")
    title = raw.get("title")
    properties = raw.get("properties")
    return UiNode(
        id=node_id,
        type=node_type,
        mode=mode,
        title=title if isinstance(title, str) else None,
        inputs=tuple(_read_input(entry, where, i) for i, entry in enumerate(inputs)),
        outputs=tuple(_read_output(entry, where, i) for i, entry in enumerate(outputs)),
        widgets_values=values,
        properties=properties if isinstance(properties, Mapping) else {},
        where=where,
    )


def _read_nodes(raw: Any, where: str) -> dict[str, UiNode]:
    if not isinstance(raw, list):
        raise fail(where, f"'nodes' must be a list, got {type(raw).__name__}")
    nodes: dict[str, UiNode] = {}
    for index, entry in enumerate(raw):
        node = _read_node(entry, where, index)
        if node.id in nodes:
            raise fail(where, f"node id {node.id} is used twice")
        nodes[node.id] = node
    return nodes


def _read_slots(raw: Any, where: str, what: str) -> tuple[SubgraphSlot, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise fail(where, f"'{what}' must be a list")
    slots = []
    for index, entry in enumerate(raw):
        at = f"{where}, {what}[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise fail(at, "must be an object with a 'name'")
        link_ids = entry.get("linkIds") or []
        if not isinstance(link_ids, list):
            raise fail(at, "'linkIds' must be a list")
        slots.append(SubgraphSlot(
            name=entry["name"],
            type=read_slot_type(entry.get("type")),
            link_ids=tuple(read_id(link_id, at, "link id") for link_id in link_ids),
        ))
    return tuple(slots)


def _read_subgraph(raw: Any, index: int) -> SubgraphDefinition:
    if not isinstance(raw, Mapping):
        raise WorkflowFormatError(f"definitions.subgraphs[{index}] must be an object")
    subgraph_id = read_id(raw.get("id"), f"definitions.subgraphs[{index}]", "'id'")
    name = raw.get("name") if isinstance(raw.get("name"), str) else subgraph_id
    where = f"subgraph {name!r} ({subgraph_id})"
    return SubgraphDefinition(
        nodes=_read_nodes(raw.get("nodes", []), where),
        links=read_links(raw.get("links"), where),
        where=where,
        id=subgraph_id,
        name=name,
        inputs=_read_slots(raw.get("inputs"), where, "inputs"),
        outputs=_read_slots(raw.get("outputs"), where, "outputs"),
    )


def read_document(document: Mapping[str, Any]) -> tuple[UiGraph, dict[str, SubgraphDefinition]]:
    """The root graph and the subgraph definitions by id. WorkflowFormatError says what is malformed."""
    root = UiGraph(
        nodes=_read_nodes(document.get("nodes"), "workflow"),
        links=read_links(document.get("links"), "workflow"),
        where="workflow",
    )
    definitions = document.get("definitions") or {}
    if not isinstance(definitions, Mapping):
        raise WorkflowFormatError("'definitions' must be an object")
    raw_subgraphs = definitions.get("subgraphs") or []
    if not isinstance(raw_subgraphs, list):
        raise WorkflowFormatError("definitions.subgraphs must be a list")
    subgraphs: dict[str, SubgraphDefinition] = {}
    for index, raw in enumerate(raw_subgraphs):
        subgraph = _read_subgraph(raw, index)
        subgraphs[subgraph.id] = subgraph
    return root, subgraphs
