"""Following a link back to what really feeds an input, through the nodes the server never sees.

A link may start at a real node (the input takes ``[node id, slot]``), or pass through:

- a Reroute: it forwards its one input, in chains too;
- a PrimitiveNode: the editor copies its value into each widget it is linked to directly;
- a bypassed node (mode 4): it forwards the input chosen by type (see :mod:`.bypass`);
- a subgraph instance or a subgraph's input/output pseudo nodes (see :mod:`.subgraphs`).

A link from a muted node (mode 2) is dropped: the input is left out, as the editor leaves it out. A link that
leads nowhere (an unconnected reroute, a note) leaves the input's own widget value, if it has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import WorkflowFormatError
from ..schemas import NodeSchemas
from .bypass import bypass_input_index
from .document import SUBGRAPH_INPUT_NODE, SubgraphDefinition, UiGraph, UiInput, UiNode
from .links import UiLink
from .subgraphs import (
    PromotedWidget,
    Scope,
    instance_input,
    instance_inputs,
    instance_outputs,
    instance_widget_value,
    interior_target,
)
from .widgets import has_value_control, is_widget, map_widget_values

__all__ = [
    "DROPPED",
    "MODE_BYPASSED",
    "MODE_MUTED",
    "NOTE_TYPES",
    "UNLINKED",
    "VIRTUAL_NODE_TYPES",
    "Constant",
    "FromOutput",
    "LinkResolver",
    "Resolution",
]

MODE_MUTED = 2
MODE_BYPASSED = 4
PRIMITIVE_TYPE = "PrimitiveNode"
REROUTE_TYPE = "Reroute"
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
VIRTUAL_NODE_TYPES = NOTE_TYPES | {PRIMITIVE_TYPE, REROUTE_TYPE}


@dataclass(frozen=True)
class FromOutput:
    node_id: str
    slot: int


@dataclass(frozen=True)
class Constant:
    value: Any


@dataclass(frozen=True)
class _Marker:
    name: str


UNLINKED = _Marker("unlinked")  # nothing real feeds the input: it keeps its widget value, if any
DROPPED = _Marker("dropped")  # fed by a muted node: the input is left out
Resolution = FromOutput | Constant | _Marker
_Visited = frozenset[tuple[tuple[str, ...], str, int]]


class LinkResolver:
    def __init__(self, schemas: NodeSchemas, subgraphs: dict[str, SubgraphDefinition]) -> None:
        self.schemas = schemas
        self.subgraphs = subgraphs
        self._widget_values: dict[tuple[int, str], dict[str, Any]] = {}
        self._promoted: dict[str, dict[int, PromotedWidget]] = {}

    # -- widget values -------------------------------------------------------------------------------

    def widget_values(self, graph: UiGraph, node: UiNode) -> dict[str, Any]:
        """The node's widget values by input name (schema defaults filled in); {} without a schema."""
        key = (id(graph), node.id)
        if key not in self._widget_values:
            schema = self.schemas.get(node.type)
            self._widget_values[key] = map_widget_values(schema, node.widgets_values) if schema else {}
        return self._widget_values[key]

    def _input_has_widget(self, node: UiNode, entry: UiInput) -> bool:
        if entry.widget is not None:
            return True
        schema = self.schemas.get(node.type)
        spec = schema.inputs.get(entry.name) if schema else None
        return spec is not None and is_widget(spec)

    def promoted_widgets(self, definition: SubgraphDefinition) -> dict[int, PromotedWidget]:
        """Subgraph input index -> the inner widget it promotes, for inputs that feed a widget."""
        if definition.id not in self._promoted:
            self._promoted[definition.id] = {}  # a definition nested in itself finds nothing promoted
            found: dict[int, PromotedWidget] = {}
            for index, slot in enumerate(definition.inputs):
                for link_id in slot.link_ids:
                    target = interior_target(definition, link_id)
                    if target is None:
                        continue
                    node, entry = target
                    nested = self.subgraphs.get(node.type)
                    if nested is not None:
                        nested_index = _slot_index(nested, entry.name)
                        if nested_index is None or nested_index not in self.promoted_widgets(nested):
                            continue
                    elif not self._input_has_widget(node, entry):
                        continue
                    found[index] = PromotedWidget(node, entry)
                    break
            self._promoted[definition.id] = found
        return self._promoted[definition.id]

    def promoted_value(self, scope: Scope, index: int) -> Resolution:
        """The value of subgraph input ``index`` when the instance has nothing connected to it."""
        definition, instance = scope.graph, scope.instance
        assert isinstance(definition, SubgraphDefinition) and instance is not None
        promoted = self.promoted_widgets(definition)
        if index not in promoted:
            return UNLINKED
        controls = {i for i, widget in promoted.items() if self._has_control(widget)}
        found, value = instance_widget_value(instance, definition, index, sorted(promoted), controls)
        if found:
            return Constant(value)
        target = promoted[index]
        nested = self.subgraphs.get(target.node.type)
        if nested is not None:
            nested_index = _slot_index(nested, target.input.name)
            assert nested_index is not None  # promoted_widgets checked it
            return self.promoted_value(scope.enter(target.node, nested), nested_index)
        values = self.widget_values(definition, target.node)
        name = target.input.widget or target.input.name
        return Constant(values[name]) if name in values else UNLINKED

    def _has_control(self, widget: PromotedWidget) -> bool:
        schema = self.schemas.get(widget.node.type)
        spec = schema.inputs.get(widget.input.widget or widget.input.name) if schema else None
        return spec is not None and has_value_control(spec)

    # -- links ----------------------------------------------------------------------------------------

    def resolve_input(
        self, scope: Scope, node: UiNode, entry: UiInput, wanted: str, visited: _Visited = frozenset(),
        *, direct: bool = True,
    ) -> Resolution:
        """What feeds ``entry`` of ``node``. ``wanted`` is the consumer's type, which picks bypass inputs;
        ``direct`` is False past a reroute or bypass, where a PrimitiveNode's value no longer reaches."""
        if entry.link is None:
            return UNLINKED
        link = scope.graph.links.get(entry.link)
        if link is None:
            raise WorkflowFormatError(
                f"{node.where}: input {entry.name!r} uses link {entry.link}, which {scope.graph.where} lacks")
        return self._resolve_link(scope, link, wanted, visited, direct)

    def _resolve_link(self, scope: Scope, link: UiLink, wanted: str, visited: _Visited, direct: bool) -> Resolution:
        if link.origin_id == SUBGRAPH_INPUT_NODE and scope.instance is not None:
            return self._from_instance_input(scope, link, wanted, visited)
        origin = scope.graph.nodes.get(link.origin_id)
        if origin is None:
            raise WorkflowFormatError(
                f"{scope.graph.where}: link {link.id} starts at node {link.origin_id}, which does not exist")
        return self._resolve_output(scope, origin, link.origin_slot, wanted, visited, direct)

    def _from_instance_input(self, scope: Scope, link: UiLink, wanted: str, visited: _Visited) -> Resolution:
        definition, instance, parent = scope.graph, scope.instance, scope.parent
        assert isinstance(definition, SubgraphDefinition) and instance is not None and parent is not None
        if not 0 <= link.origin_slot < len(definition.inputs):
            raise WorkflowFormatError(
                f"{definition.where}: link {link.id} reads subgraph input {link.origin_slot}, which does not exist")
        outer = instance_input(definition, instance, link.origin_slot)
        if outer.link is not None:
            return self.resolve_input(parent, instance, outer, wanted, visited)
        return self.promoted_value(scope, link.origin_slot)

    def _resolve_output(
        self, scope: Scope, node: UiNode, slot: int, wanted: str, visited: _Visited, direct: bool
    ) -> Resolution:
        key = (scope.path, node.id, slot)
        if key in visited:
            raise WorkflowFormatError(f"{node.where}: its links loop back to it through reroutes or bypassed nodes")
        visited = visited | {key}
        if node.type == PRIMITIVE_TYPE:  # its value is copied into the widgets it is linked to, whatever its mode
            return _primitive_value(node) if direct else UNLINKED
        definition = self.subgraphs.get(node.type)
        if node.mode == MODE_BYPASSED:
            inputs = instance_inputs(definition, node) if definition else node.inputs
            outputs = instance_outputs(definition, node) if definition else node.outputs
            index = bypass_input_index(inputs, outputs, slot, wanted)
            if index is None:
                return UNLINKED
            return self.resolve_input(scope, node, inputs[index], wanted, visited, direct=False)
        if node.type == REROUTE_TYPE:
            if not node.inputs:
                return UNLINKED
            return self.resolve_input(scope, node, node.inputs[0], wanted, visited, direct=False)
        if node.type in NOTE_TYPES:
            return UNLINKED
        if node.mode == MODE_MUTED:
            return DROPPED
        if definition is not None:
            return self._from_instance_output(scope, node, definition, slot, wanted, visited)
        return FromOutput(scope.exec_id(node.id), slot)

    def _from_instance_output(
        self, scope: Scope, node: UiNode, definition: SubgraphDefinition, slot: int, wanted: str, visited: _Visited
    ) -> Resolution:
        if not 0 <= slot < len(definition.outputs):
            raise WorkflowFormatError(f"{node.where}: output {slot} does not exist in {definition.where}")
        link_ids = definition.outputs[slot].link_ids
        if not link_ids:
            return UNLINKED
        link = definition.links.get(link_ids[0])
        if link is None:
            raise WorkflowFormatError(f"{definition.where}: output {slot} uses link {link_ids[0]}, which it lacks")
        return self._resolve_link(scope.enter(node, definition), link, wanted, visited, direct=False)


def _primitive_value(node: UiNode) -> Resolution:
    values = node.widgets_values
    if isinstance(values, list) and values:
        return Constant(values[0])
    if isinstance(values, dict) and "value" in values:
        return Constant(values["value"])
    return UNLINKED


def _slot_index(definition: SubgraphDefinition, name: str) -> int | None:
    return next((i for i, slot in enumerate(definition.inputs) if slot.name == name), None)
