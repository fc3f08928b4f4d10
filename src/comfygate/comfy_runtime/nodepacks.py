"""Node packs in ComfyUI's custom-node format: finding them in folders, importing them, reading their nodes.

A pack folder is laid out like ComfyUI's ``custom_nodes/``: each ``*.py`` file and each sub-folder (a package
with ``__init__.py``) is one pack. What ComfyUI skips is skipped here too (``__pycache__``, files that are not
``.py``, names ending in ``.disabled``), and so are hidden entries such as ``.git``.

A pack module offers its nodes in one of two ways:

* ``NODE_CLASS_MAPPINGS`` (class_type -> node class), with ``NODE_DISPLAY_NAME_MAPPINGS`` optionally;
* ``comfy_entrypoint()`` (sync or async) returning an extension whose ``get_node_list()`` (sync or async)
  lists node classes; its ``on_load()`` runs first when it has one. Classes with the classic interface
  (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``) register under their class name. ComfyUI's schema-based
  nodes (``comfy_api``'s ``io.ComfyNode``) need ComfyUI itself, so a pack offering them is reported.

Each pack is imported as its own module, under a name unique to its path, without touching ``sys.path``:
two packs with the same file name do not clash, and a pack named like a standard module shadows nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import NodePackError

__all__ = ["PackNodes", "PackReport", "find_packs", "forget_pack", "import_pack", "pack_name", "read_pack"]

# Top-level modules of ComfyUI itself: a pack importing one of them cannot run outside ComfyUI.
COMFYUI_MODULES = frozenset({
    "comfy", "comfy_api", "comfy_api_nodes", "comfy_config", "comfy_execution", "comfy_extras", "execution",
    "folder_paths", "latent_preview", "node_helpers", "nodes", "server",
})
MODULE_PREFIX = "comfygate_nodepack_"


@dataclass(frozen=True)
class PackReport:
    """What became of one pack: loaded with its node types, or skipped and why."""

    name: str  # file name without .py, or folder name
    path: str
    loaded: bool
    node_types: tuple[str, ...] = ()
    error: str = ""  # why it was skipped; empty when loaded

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "loaded": self.loaded,
                "node_types": list(self.node_types), "error": self.error or None}


@dataclass(frozen=True)
class PackNodes:
    """The node classes a pack module offers, by class_type, and their display names."""

    classes: dict[str, type]
    display_names: dict[str, str] = field(default_factory=dict)


def pack_name(path: Path) -> str:
    return path.stem if path.suffix == ".py" and not path.is_dir() else path.name


def find_packs(folder: Path) -> list[Path]:
    """The packs in one custom-nodes folder, sorted by name. NodePackError when ``folder`` is not a folder."""
    if not folder.is_dir():
        raise NodePackError(f"node pack folder {str(folder)!r} does not exist or is not a folder")
    packs = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name == "__pycache__" or entry.name.endswith(".disabled"):
            continue
        if entry.is_dir() or (entry.suffix == ".py" and entry.is_file()):
            packs.append(entry)
    return packs


def _module_name(path: Path) -> str:
    # Unique per location, so same-named packs in two folders are two modules; readable in tracebacks.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    readable = re.sub(r"\W", "_", pack_name(path))
    return f"{MODULE_PREFIX}{readable}_{digest}"


def _forget(module_name: str) -> None:
    for name in [n for n in sys.modules if n == module_name or n.startswith(module_name + ".")]:
        del sys.modules[name]


def forget_pack(path: Path) -> None:
    """Drop a skipped pack's modules from sys.modules, so nothing of it stays imported."""
    _forget(_module_name(path))


def _describe(exc: BaseException, path: Path | None = None) -> str:
    """``Type: message``, where in the pack it was raised, and a hint when ComfyUI's own modules are missing."""
    text = f"{type(exc).__name__}: {exc}"
    if path is not None and not isinstance(exc, SyntaxError):  # a SyntaxError names its file and line already
        root = str(path.resolve())
        frames = traceback.extract_tb(exc.__traceback__)
        inside = [f for f in frames if str(Path(f.filename).resolve()).startswith(root)]
        if inside:
            text += f" (at {inside[-1].filename}:{inside[-1].lineno})"
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing and missing.split(".")[0] in COMFYUI_MODULES:
        text += (f"; the pack needs ComfyUI's own module {missing.split('.')[0]!r}, which comfygate does not "
                 "provide (only packs with classic nodes that need no ComfyUI internals can load)")
    return text


def import_pack(path: Path) -> ModuleType:
    """Import a pack (a ``.py`` file, or a package folder whose relative imports work) as a fresh module.
    Anything its code raises becomes a NodePackError saying what and where; nothing is left in sys.modules."""
    module_name = _module_name(path)
    if path.is_dir():
        init = path / "__init__.py"
        if not init.is_file():
            raise NodePackError("the folder has no __init__.py, so it is not a Python package")
        spec = importlib.util.spec_from_file_location(module_name, init, submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise NodePackError("Python cannot import it as a module")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its submodules' relative imports and its dataclasses look it up there.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # third-party code: any failure only skips this pack
        _forget(module_name)
        raise NodePackError(f"importing it raised {_describe(exc, path)}") from exc
    return module


def read_pack(module: ModuleType) -> PackNodes:
    """The nodes a pack module offers, through NODE_CLASS_MAPPINGS or comfy_entrypoint()."""
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is not None:
        if not isinstance(mappings, Mapping):
            raise NodePackError(f"NODE_CLASS_MAPPINGS must map class_type to node class, "
                                f"got {type(mappings).__name__}")
        display_names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
        if not isinstance(display_names, Mapping):
            raise NodePackError(f"NODE_DISPLAY_NAME_MAPPINGS must map class_type to a name, "
                                f"got {type(display_names).__name__}")
        # ComfyUI merges every pack's display names into one table; a pack only names its own nodes here.
        return PackNodes(dict(mappings), {k: str(v) for k, v in display_names.items() if k in mappings})
    entrypoint = getattr(module, "comfy_entrypoint", None)
    if entrypoint is not None:
        return _entrypoint_nodes(entrypoint)
    raise NodePackError("it exports neither NODE_CLASS_MAPPINGS nor comfy_entrypoint(), so it offers no nodes")


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _extension_node_list(entrypoint: Callable[[], Any]) -> list[Any]:
    extension = await _resolved(entrypoint())
    get_node_list = getattr(extension, "get_node_list", None)
    if not callable(get_node_list):
        raise NodePackError(f"comfy_entrypoint() returned a {type(extension).__name__}, "
                            "which has no get_node_list() method")
    on_load = getattr(extension, "on_load", None)
    if callable(on_load):
        await _resolved(on_load())
    node_list = await _resolved(get_node_list())
    if not isinstance(node_list, list | tuple):
        raise NodePackError(f"get_node_list() must return a list of node classes, got {type(node_list).__name__}")
    return list(node_list)


def _run_on_own_loop(entrypoint: Callable[[], Any]) -> list[Any]:
    # A fresh event loop on its own thread works whether or not the caller is inside a running loop
    # (registries are also built during the web server's startup), and keeps the extension's whole
    # lifecycle on one loop.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="comfygate-nodepack") as pool:
        return pool.submit(asyncio.run, _extension_node_list(entrypoint)).result()


def _is_schema_node(cls: type) -> bool:
    return hasattr(cls, "define_schema") or hasattr(cls, "GET_SCHEMA")


def _entrypoint_nodes(entrypoint: Any) -> PackNodes:
    if not callable(entrypoint):
        raise NodePackError(f"comfy_entrypoint must be a function, got {type(entrypoint).__name__}")
    try:
        node_list = _run_on_own_loop(entrypoint)
    except NodePackError:
        raise
    except (Exception, SystemExit) as exc:  # third-party code: any failure only skips this pack
        raise NodePackError(f"comfy_entrypoint() failed: {_describe(exc)}") from exc
    classes: dict[str, type] = {}
    problems = []
    for position, cls in enumerate(node_list):
        if not isinstance(cls, type):
            problems.append(f"get_node_list() item {position} is a {type(cls).__name__}, not a node class")
        elif _is_schema_node(cls):
            problems.append(
                f"node {cls.__name__!r} is a schema-based node (comfy_api io.ComfyNode): it needs ComfyUI's "
                "comfy_api, which comfygate does not provide; only classic nodes (INPUT_TYPES, RETURN_TYPES, "
                "FUNCTION) can load")
        elif cls.__name__ in classes:
            problems.append(f"node {cls.__name__!r} is listed twice by get_node_list()")
        else:
            classes[cls.__name__] = cls  # classic classes have no node id of their own: ComfyUI's convention
    if problems:
        raise NodePackError("; ".join(problems))
    return PackNodes(classes)
