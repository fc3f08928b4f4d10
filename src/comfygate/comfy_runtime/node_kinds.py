"""What the executor needs to know about a node class, read once per class per run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .registry import NodeRegistry
from .schemas import NodeSchema
from .specs import InputSpec

__all__ = ["NodeKind", "NodeKinds"]


@dataclass(frozen=True)
class NodeKind:
    class_type: str
    cls: type
    specs: dict[str, InputSpec]  # required then optional inputs
    hidden: dict[str, str]  # argument name -> hidden type ("PROMPT", "UNIQUE_ID", "INPUT_DIR", ...)
    lazy: frozenset[str]  # inputs declared {"lazy": True}: evaluated only when check_lazy_status asks
    output_node: bool
    input_is_list: bool  # the function gets whole lists instead of one call per list index
    output_is_list: tuple[bool, ...]  # per output slot: the function returns a list of items
    keyed_by_node_id: bool  # the node id is part of its cache key (UNIQUE_ID input or NOT_IDEMPOTENT)

    @property
    def has_lazy_check(self) -> bool:
        return callable(getattr(self.cls, "check_lazy_status", None))

    @classmethod
    def of(cls, class_type: str, node_class: type) -> NodeKind:
        # INPUT_TYPES is read once per class per run: a pack may compute it (e.g. list model files).
        schema = NodeSchema.from_object_info(class_type, {"input": node_class.INPUT_TYPES()})
        specs, hidden = schema.inputs, schema.hidden
        outputs = len(node_class.RETURN_TYPES)
        declared_lists = tuple(bool(b) for b in (getattr(node_class, "OUTPUT_IS_LIST", None) or ()))
        return cls(
            class_type=class_type,
            cls=node_class,
            specs=specs,
            hidden=hidden,
            lazy=frozenset(name for name, spec in specs.items() if spec.options.get("lazy")),
            output_node=bool(getattr(node_class, "OUTPUT_NODE", False)),
            input_is_list=bool(getattr(node_class, "INPUT_IS_LIST", False)),
            output_is_list=(declared_lists + (False,) * outputs)[:outputs],
            keyed_by_node_id=bool(getattr(node_class, "NOT_IDEMPOTENT", False)) or "UNIQUE_ID" in hidden.values(),
        )


class NodeKinds:
    """class_type -> NodeKind for one run (INPUT_TYPES may differ between runs, never within one)."""

    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry
        self._kinds: dict[str, NodeKind] = {}

    def get(self, class_type: Any) -> NodeKind:
        """LookupError naming the type when the registry does not have it."""
        kind = self._kinds.get(class_type)
        if kind is None:
            node_class = self._registry.get(class_type) if isinstance(class_type, str) else None
            if node_class is None:
                raise LookupError(f"node type {class_type!r} is not registered in this runtime")
            kind = self._kinds[class_type] = NodeKind.of(class_type, node_class)
        return kind
