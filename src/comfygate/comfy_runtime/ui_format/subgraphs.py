"""Subgraphs: nested graphs whose instances are nodes of type ``<subgraph id>``.

An instance runs as its subgraph's nodes, with ids ``"<instance id>:<inner id>"`` (``"a:b:c"`` when nested).
Inside, links from the pseudo node -10 read the instance's inputs, and links into -20 feed its outputs.

An instance input that is not connected outside can still carry a value: when the subgraph input feeds a
widget inside, the editor shows that widget on the instance ("promoted"). Its value is the instance's own
``widgets_values`` entry (one per promoted input, in input order), or, when the instance saved none (newer
editors keep the value on the inner node and list it in ``properties.proxyWidgets``), the inner widget's
value. Every inner input fed by that subgraph input receives the same value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import WorkflowFormatError
from .document import SubgraphDefinition, UiGraph, UiInput, UiNode, UiOutput

__all__ = ["PromotedWidget", "Scope", "instance_input", "instance_inputs", "instance_outputs", "interior_target"]


@dataclass(frozen=True)
class Scope:
    """A graph as it runs: the root workflow, or a subgraph inside one instance (path = instance ids)."""

    graph: UiGraph
    path: tuple[str, ...] = ()
    instance: UiNode | None = None
    parent: Scope | None = None

    def exec_id(self, node_id: str) -> str:
        return ":".join((*self.path, node_id))

    def enter(self, instance: UiNode, definition: SubgraphDefinition) -> Scope:
        scope: Scope | None = self
        while scope is not None:
            if scope.graph is definition:
                raise WorkflowFormatError(f"{instance.where}: {definition.where} contains an instance of itself")
            scope = scope.parent
        return Scope(definition, (*self.path, instance.id), instance, self)


@dataclass(frozen=True)
class PromotedWidget:
    """The first inner input, fed by a subgraph input, that has a widget; its value stands for the input's."""

    node: UiNode
    input: UiInput


def instance_input(definition: SubgraphDefinition, instance: UiNode, index: int) -> UiInput:
    """The instance's input for subgraph input ``index``. The saved instance lists only some of its inputs
    (unconnected widget inputs are left out), so they are matched by name, preferring the same type."""
    slot = definition.inputs[index]
    named = [entry for entry in instance.inputs if entry.name == slot.name]
    chosen = next((entry for entry in named if entry.type == slot.type), named[0] if named else None)
    return UiInput(slot.name, slot.type, chosen.link if chosen else None, chosen.widget if chosen else None)


def instance_inputs(definition: SubgraphDefinition, instance: UiNode) -> tuple[UiInput, ...]:
    return tuple(instance_input(definition, instance, index) for index in range(len(definition.inputs)))


def instance_outputs(definition: SubgraphDefinition, instance: UiNode) -> tuple[UiOutput, ...]:
    return instance.outputs or tuple(UiOutput(slot.name, slot.type) for slot in definition.outputs)


def interior_target(definition: SubgraphDefinition, link_id: str) -> tuple[UiNode, UiInput] | None:
    """The inner node and input that link ``link_id`` (from a subgraph input) ends at, if it exists."""
    link = definition.links.get(link_id)
    node = definition.nodes.get(link.target_id) if link is not None else None
    if link is None or node is None:
        return None
    for entry in node.inputs:
        if entry.link == link_id:
            return node, entry
    if 0 <= link.target_slot < len(node.inputs):
        return node, node.inputs[link.target_slot]
    return None


def instance_widget_value(
    instance: UiNode, definition: SubgraphDefinition, index: int, promoted: list[int], controls: set[int]
) -> tuple[bool, Any]:
    """``(True, value)`` when the instance saved a value for promoted subgraph input ``index``.

    ``promoted`` lists the promoted input indexes in order; ``controls`` those whose inner widget has a
    ``control_after_generate`` companion, which older editors also saved on the instance.
    """
    values = instance.widgets_values
    if isinstance(values, dict):
        name = definition.inputs[index].name
        return (True, values[name]) if values.get(name) is not None else (False, None)
    if not values or index not in promoted:
        return False, None
    position = promoted.index(index)
    if len(values) > len(promoted):
        position += sum(1 for earlier in promoted[:position] if earlier in controls)
    if position >= len(values) or values[position] is None:  # the editor writes null for "no value"
        return False, None
    return True, values[position]
