"""Node registry: the node classes a runtime may execute, registered pack by pack.

The built-in pack and third-party packs (folders in ComfyUI's custom-node format, see :mod:`.nodepacks`)
register through the same path. A third-party pack that cannot be loaded is skipped and reported in
``NodeRegistry.pack_reports``; it never stops the registry from being built.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

from .errors import NodePackError, NodeSchemaError
from .nodepacks import PackReport, find_packs, forget_pack, import_pack, pack_name, read_pack
from .schemas import NodeSchema, NodeSchemas
from .specs import jsonable

if TYPE_CHECKING:
    from .diffusion.library import ModelLibrary

__all__ = ["BUILTIN_PACK", "NodeRegistry", "create_registry"]

log = logging.getLogger(__name__)

BUILTIN_PACK = "comfygate.comfy_runtime.nodes"
BUILTIN_DIR = Path(__file__).with_name("nodes")
# The model folders whose files the built-in loader nodes list.
MODEL_FOLDERS = ("checkpoints", "vae", "loras", "diffusion_models", "text_encoders", "upscale_models")


def _object_info(class_type: str, cls: Any, display_name: str, source: str) -> dict[str, Any]:
    declared = cls.INPUT_TYPES()
    return_types = list(cls.RETURN_TYPES)
    return {
        "input": jsonable(declared),
        "input_order": {section: list(entries) for section, entries in declared.items()},
        "output": return_types,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", None) or [False] * len(return_types)),
        "output_name": list(getattr(cls, "RETURN_NAMES", None) or return_types),
        "name": class_type,
        "display_name": display_name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": source,
        "category": getattr(cls, "CATEGORY", ""),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }


def _node_class_problem(class_type: object, cls: object) -> str | None:
    """Why ``cls`` cannot run here as ``class_type`` (ComfyUI's node-class interface), or None."""
    if not isinstance(class_type, str) or not class_type:
        return f"class_type {class_type!r} must be a non-empty string"
    where = f"node {class_type!r}"
    if not isinstance(cls, type):
        return f"{where}: mapping value must be a class, got {type(cls).__name__}"
    if not callable(getattr(cls, "INPUT_TYPES", None)):
        return f"{where}: INPUT_TYPES classmethod is missing"
    return_types = getattr(cls, "RETURN_TYPES", None)
    if not isinstance(return_types, tuple | list):
        return f"{where}: RETURN_TYPES must be a tuple"
    function = getattr(cls, "FUNCTION", None)
    if not isinstance(function, str) or not callable(getattr(cls, function, None)):
        return f"{where}: FUNCTION must name a method of the class"
    output_is_list = getattr(cls, "OUTPUT_IS_LIST", None)
    if output_is_list is not None and (not isinstance(output_is_list, tuple | list)
                                       or len(output_is_list) > len(return_types)):
        return f"{where}: OUTPUT_IS_LIST must be a tuple of booleans, one per RETURN_TYPES entry"
    try:  # the schema is what validation and /object_info read: it must be buildable now, not at first use
        NodeSchema.from_object_info(class_type, _object_info(class_type, cls, class_type, ""))
    except NodeSchemaError as exc:
        return str(exc)
    except Exception as exc:  # third-party INPUT_TYPES(): any failure makes the node unusable
        return f"{where}: INPUT_TYPES() raised {type(exc).__name__}: {exc}"
    return None


class NodeRegistry:
    """Maps class_type -> node class. Build one with :func:`create_registry`; nothing is shared globally."""

    def __init__(self, models: ModelLibrary | None = None) -> None:
        self.models = models  # the model files and pool the diffusion nodes use
        self._classes: dict[str, type] = {}
        self._display_names: dict[str, str] = {}
        self._sources: dict[str, str] = {}
        self._reports: list[PackReport] = []
        self._schemas: NodeSchemas | None = None  # built on first use, dropped when a pack is added
        self._schemas_files: object = None  # the model files the cached schemas' COMBO lists were built from

    def register_pack(
        self,
        mappings: Mapping[str, type],
        *,
        display_names: Mapping[str, str] | None = None,
        source: str = "builtin",
    ) -> None:
        """Add every node of a pack, or none of them when one is malformed or already registered
        (NodePackError lists every problem)."""
        problems = self._problems(mappings)
        if problems:
            raise NodePackError(f"pack {source!r}: " + "; ".join(problems))
        self._add_checked(mappings, display_names or {}, source)

    def _add_checked(self, mappings: Mapping[str, type], display_names: Mapping[str, str], source: str) -> None:
        for class_type, cls in mappings.items():
            self._classes[class_type] = cls
            self._sources[class_type] = source
            self._display_names[class_type] = display_names.get(class_type, class_type)
        self._schemas = None

    def _problems(self, mappings: Mapping[str, type]) -> list[str]:
        """Every reason the pack cannot be added as a whole: malformed nodes, class_types already taken."""
        if not isinstance(mappings, Mapping):
            return ["NODE_CLASS_MAPPINGS must be a mapping"]
        problems = [p for class_type, cls in mappings.items() if (p := _node_class_problem(class_type, cls))]
        return problems + [f"class_type {class_type!r} is already registered by {self._sources[class_type]!r}"
                           for class_type in mappings if class_type in self._classes]

    def load_pack(self, path: Path) -> PackReport:
        """Import one custom-node pack (a ``.py`` file or a package folder) and register its nodes.

        A pack that fails to import, offers malformed nodes or clashes with a registered class_type is
        skipped: the report says why, a warning is logged, nothing is raised."""
        name = pack_name(path)
        report = self._add_pack(name, path, f"custom_nodes.{name}", lambda: import_pack(path))
        if not report.loaded:
            forget_pack(path)
        return report

    def _add_pack(self, name: str, path: Path, source: str, load: Callable[[], ModuleType]) -> PackReport:
        try:
            nodes = read_pack(load())
            problems = self._problems(nodes.classes)
            if problems:  # the report names the pack already
                raise NodePackError("; ".join(problems))
            self._add_checked(nodes.classes, nodes.display_names, source)
        except NodePackError as exc:
            report = PackReport(name, str(path), loaded=False, error=str(exc))
            log.warning("node pack %r (%s) skipped: %s", name, path, exc)
        else:
            report = PackReport(name, str(path), loaded=True, node_types=tuple(nodes.classes))
        self._reports.append(report)
        return report

    @property
    def pack_reports(self) -> tuple[PackReport, ...]:
        """One report per pack, built-in first, in load order."""
        return tuple(self._reports)

    def get(self, class_type: str) -> type | None:
        return self._classes.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def object_info(self, class_type: str) -> dict[str, Any]:
        """One node's entry of ComfyUI's ``GET /object_info``; KeyError for an unknown class_type."""
        return _object_info(class_type, self._classes[class_type], self._display_names[class_type],
                            self._sources[class_type])

    def schemas(self) -> NodeSchemas:
        """Every registered node's schema, as validation and UI-format conversion read them.

        Built once and again only when a pack is added or a model file appears or goes (loader nodes list
        the files present in their COMBO inputs)."""
        files = self.models.paths.signature(MODEL_FOLDERS) if self.models is not None else None
        if self._schemas is None or files != self._schemas_files:
            self._schemas = NodeSchemas.from_object_info(
                {name: self.object_info(name) for name in self._classes}, source="this runtime")
            self._schemas_files = files
        return self._schemas


def _builtin_pack(models: ModelLibrary) -> SimpleNamespace:
    """The built-in nodes: the image nodes, and the diffusion nodes with their loaders bound to ``models``."""
    from .nodes.diffusion import DISPLAY_NAMES, diffusion_nodes

    images = importlib.import_module(BUILTIN_PACK)
    return SimpleNamespace(
        NODE_CLASS_MAPPINGS={**images.NODE_CLASS_MAPPINGS, **diffusion_nodes(models)},
        NODE_DISPLAY_NAME_MAPPINGS={**images.NODE_DISPLAY_NAME_MAPPINGS, **DISPLAY_NAMES})


def create_registry(node_pack_dirs: Sequence[str | os.PathLike[str]] = (),
                    models: ModelLibrary | None = None) -> NodeRegistry:
    """A fresh registry: the built-in packs, then every pack in each folder (laid out like ComfyUI's
    ``custom_nodes/``) in order. Failing packs are skipped and reported in ``pack_reports``; a folder that
    does not exist is a configuration error (NodePackError) found before any pack is imported.

    The diffusion nodes load model files through ``models``; without one they see no model files."""
    if isinstance(node_pack_dirs, str | os.PathLike):
        raise TypeError("node_pack_dirs must be a sequence of folders, not one path")
    packs = [path for folder in node_pack_dirs for path in find_packs(Path(folder).absolute())]
    if models is None:
        from .diffusion.library import ModelLibrary

        models = ModelLibrary.without_files()
    registry = NodeRegistry(models)
    builtin = registry._add_pack("builtin", BUILTIN_DIR, "builtin", lambda: _builtin_pack(models))
    if not builtin.loaded:
        raise NodePackError(f"the built-in node pack cannot be registered: {builtin.error}")
    for path in packs:
        registry.load_pack(path)
    return registry
