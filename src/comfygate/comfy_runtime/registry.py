"""Node registry: the node classes a runtime may execute, registered pack by pack."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import NodePackError
from .specs import jsonable

__all__ = ["BUILTIN_PACK", "NodeRegistry", "create_registry"]

BUILTIN_PACK = "comfygate.comfy_runtime.nodes"


def _check_node_class(class_type: str, cls: object) -> None:
    """NodePackError unless ``cls`` follows ComfyUI's node-class interface well enough to run here."""
    where = f"node {class_type!r}"
    if not isinstance(class_type, str) or not class_type:
        raise NodePackError(f"class_type {class_type!r} must be a non-empty string")
    if not isinstance(cls, type):
        raise NodePackError(f"{where}: mapping value must be a class, got {type(cls).__name__}")
    if not callable(getattr(cls, "INPUT_TYPES", None)):
        raise NodePackError(f"{where}: INPUT_TYPES classmethod is missing")
    if not isinstance(getattr(cls, "RETURN_TYPES", None), tuple | list):
        raise NodePackError(f"{where}: RETURN_TYPES must be a tuple")
    function = getattr(cls, "FUNCTION", None)
    if not isinstance(function, str) or not callable(getattr(cls, function, None)):
        raise NodePackError(f"{where}: FUNCTION must name a method of the class")
    # List mode changes how inputs are batched; this executor runs one call per node and would be wrong.
    if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", ())):
        raise NodePackError(f"{where}: INPUT_IS_LIST / OUTPUT_IS_LIST nodes are not supported")


class NodeRegistry:
    """Maps class_type -> node class. Build one with :func:`create_registry`; nothing is shared globally."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}
        self._display_names: dict[str, str] = {}
        self._sources: dict[str, str] = {}

    def register_pack(
        self,
        mappings: Mapping[str, type],
        *,
        display_names: Mapping[str, str] | None = None,
        source: str = "builtin",
    ) -> None:
        """Add every node of a pack, or none of them when one is malformed or already registered."""
        if not isinstance(mappings, Mapping):
            raise NodePackError(f"pack {source!r}: NODE_CLASS_MAPPINGS must be a mapping")
        for class_type, cls in mappings.items():
            _check_node_class(class_type, cls)
            if class_type in self._classes:
                raise NodePackError(
                    f"pack {source!r}: class_type {class_type!r} is already registered by "
                    f"{self._sources[class_type]!r}"
                )
        for class_type, cls in mappings.items():
            self._classes[class_type] = cls
            self._sources[class_type] = source
            self._display_names[class_type] = (display_names or {}).get(class_type, class_type)

    def load_pack_module(self, module_name: str, *, source: str | None = None) -> None:
        """Import ``module_name`` and register its NODE_CLASS_MAPPINGS (and NODE_DISPLAY_NAME_MAPPINGS)."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise NodePackError(f"node pack {module_name!r} cannot be imported: {exc}") from exc
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is None:
            raise NodePackError(f"node pack {module_name!r} has no NODE_CLASS_MAPPINGS")
        self.register_pack(
            mappings,
            display_names=getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None),
            source=source or module_name,
        )

    def get(self, class_type: str) -> type | None:
        return self._classes.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def object_info(self, class_type: str) -> dict[str, Any]:
        """One node's entry of ComfyUI's ``GET /object_info``; KeyError for an unknown class_type."""
        cls = self._classes[class_type]
        declared = cls.INPUT_TYPES()
        return_types = list(cls.RETURN_TYPES)
        return {
            "input": jsonable(declared),
            "input_order": {section: list(entries) for section, entries in declared.items()},
            "output": return_types,
            "output_is_list": [False] * len(return_types),
            "output_name": list(getattr(cls, "RETURN_NAMES", None) or return_types),
            "name": class_type,
            "display_name": self._display_names[class_type],
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": self._sources[class_type],
            "category": getattr(cls, "CATEGORY", ""),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }


def create_registry(node_packs: Sequence[str] = ()) -> NodeRegistry:
    """A fresh registry holding the built-in pack, then each named pack module in order."""
    registry = NodeRegistry()
    registry.load_pack_module(BUILTIN_PACK, source="builtin")
    for module_name in node_packs:
        registry.load_pack_module(module_name)
    return registry
