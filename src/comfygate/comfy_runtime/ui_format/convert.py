"""UI-format document -> API-format prompt, the way the editor builds the prompt it queues.

Each node that runs becomes ``{"class_type", "inputs", "_meta": {"title"}}`` under its id as a string
(``"outer:inner"`` inside subgraphs). Its inputs are its widget values (see :mod:`.widgets`), overridden by
what its links resolve to (see :mod:`.resolve`). Notes, reroutes and primitives never appear; muted and
bypassed nodes neither, and a muted or bypassed subgraph instance leaves out everything inside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import UnknownNodeTypes, WorkflowFormatError
from ..requirements import missing_model_files
from ..schemas import NodeSchema, NodeSchemas
from .document import SubgraphDefinition, UiNode, read_document
from .resolve import (
    DROPPED,
    MODE_BYPASSED,
    MODE_MUTED,
    VIRTUAL_NODE_TYPES,
    Constant,
    FromOutput,
    LinkResolver,
)
from .subgraphs import Scope
from .widgets import EDITOR_CAPTURED_TYPES, wire_value

__all__ = ["convert_ui_workflow", "is_ui_workflow"]

GROUP_NODE_PREFIXES = ("workflow>", "workflow/")


def is_ui_workflow(document: object) -> bool:
    """A workflow as the editor saves it: ``nodes`` as a list, with ``links`` or subgraph definitions."""
    if not isinstance(document, Mapping) or not isinstance(document.get("nodes"), list):
        return False
    if "links" in document:
        return True
    definitions = document.get("definitions")
    return isinstance(definitions, Mapping) and bool(definitions.get("subgraphs"))


def _running_nodes(scope: Scope, subgraphs: dict[str, SubgraphDefinition]) -> Iterator[tuple[Scope, UiNode]]:
    """Every node that will run, in document order, with subgraph instances expanded in place."""
    for node in scope.graph.nodes.values():
        if node.mode in (MODE_MUTED, MODE_BYPASSED):
            continue
        definition = subgraphs.get(node.type)
        if definition is not None:
            yield from _running_nodes(scope.enter(node, definition), subgraphs)
        elif node.type not in VIRTUAL_NODE_TYPES:
            yield scope, node


def _refuse_group_nodes(document: Mapping[str, Any], running: list[tuple[Scope, UiNode]]) -> None:
    """Group nodes (an editor feature that subgraphs replaced) keep their inner graph in ``extra.groupNodes``."""
    extra = document.get("extra")
    groups = extra.get("groupNodes") if isinstance(extra, Mapping) else None
    if not isinstance(groups, Mapping) or not groups:
        return
    for scope, node in running:
        for prefix in GROUP_NODE_PREFIXES:
            if node.type.startswith(prefix) and node.type[len(prefix):] in groups:
                raise WorkflowFormatError(
                    f"node {scope.exec_id(node.id)} is a group node ({node.type!r}), which is not supported: "
                    "open the workflow in a current ComfyUI editor, which turns group nodes into subgraphs, and save")


def _refuse_editor_captured_inputs(scope: Scope, node: UiNode, schema: NodeSchema) -> None:
    for spec in schema.inputs.values():
        if spec.type in EDITOR_CAPTURED_TYPES:
            raise WorkflowFormatError(
                f"node {scope.exec_id(node.id)} ({node.type}): input {spec.name!r} ({spec.type}) is captured by the "
                "ComfyUI editor when it queues the workflow; a workflow file does not hold it, so it cannot run here")


def _prompt_node(scope: Scope, node: UiNode, schema: NodeSchema, resolver: LinkResolver) -> dict[str, Any]:
    _refuse_editor_captured_inputs(scope, node, schema)
    inputs = {name: wire_value(value) for name, value in resolver.widget_values(scope.graph, node).items()}
    for entry in node.inputs:
        if entry.link is None:
            continue
        fed = resolver.resolve_input(scope, node, entry, entry.type)
        if isinstance(fed, FromOutput):
            inputs[entry.name] = [fed.node_id, fed.slot]
        elif isinstance(fed, Constant):
            inputs[entry.name] = wire_value(fed.value)
        elif fed is DROPPED:
            inputs.pop(entry.name, None)
    title = node.title or schema.info.get("display_name") or node.type
    return {"class_type": node.type, "inputs": inputs, "_meta": {"title": title}}


def _known_nodes_models(running: list[tuple[Scope, UiNode]], schemas: NodeSchemas,
                        subgraphs: dict[str, SubgraphDefinition]) -> list[dict[str, str]]:
    """Missing model files among the widget values of the nodes ``schemas`` knows: the whole prompt cannot
    be built without the other nodes' schemas, but their widgets can be read."""
    resolver = LinkResolver(schemas, subgraphs)
    widgets: dict[str, dict[str, Any]] = {}
    for scope, node in running:
        if node.type in schemas:
            try:
                values = resolver.widget_values(scope.graph, node)
            except WorkflowFormatError:
                continue  # refused again, with its reason, once the missing node types are there
            widgets[scope.exec_id(node.id)] = {"class_type": node.type,
                                               "inputs": {k: wire_value(v) for k, v in values.items()}}
    return missing_model_files(widgets, schemas)


def convert_ui_workflow(document: Mapping[str, Any], schemas: NodeSchemas) -> dict[str, dict[str, Any]]:
    """The API-format prompt for a UI-format workflow, read with ``schemas`` (widget order, defaults).

    Raises WorkflowFormatError naming the node and field when the document is malformed, and
    UnknownNodeTypes listing every node type that would run but has no schema (and the model files that the
    other nodes' widgets name and the schemas lack).
    """
    if not isinstance(document, Mapping):
        raise WorkflowFormatError(f"a UI-format workflow must be a JSON object, got {type(document).__name__}")
    root, subgraphs = read_document(document)
    running = list(_running_nodes(Scope(root), subgraphs))
    _refuse_group_nodes(document, running)
    missing: dict[str, list[str]] = {}
    for scope, node in running:
        if node.type not in schemas:
            missing.setdefault(node.type, []).append(scope.exec_id(node.id))
    if missing:
        raise UnknownNodeTypes(missing, schemas.source, _known_nodes_models(running, schemas, subgraphs))
    if not running:
        raise WorkflowFormatError(
            "workflow has no node that runs: it holds only notes, reroutes, primitives or muted/bypassed nodes")
    resolver = LinkResolver(schemas, subgraphs)
    try:
        return {scope.exec_id(node.id): _prompt_node(scope, node, schemas[node.type], resolver)
                for scope, node in running}
    except RecursionError:  # links are followed recursively through reroutes, bypasses and subgraphs
        raise WorkflowFormatError(
            "workflow links pass through too many reroutes, bypassed nodes or subgraph levels in a row to "
            "follow (a few hundred); shorten the chains") from None
