"""Where model files live: ComfyUI's folder kinds under a models dir, plus an optional ``extra_model_paths.yaml``.

Loader nodes list these files in their COMBO inputs every time node schemas are built, so listing is cached per
folder and revalidated by directory mtimes (one ``stat`` per directory, no rescan while nothing changed; a
folder changed in the last two seconds is read again, since mtimes tick too coarsely to see a second add).
``signature()`` gives the registry a cheap value that changes when a file is added or removed.

The yaml has ComfyUI's format (``utils/extra_config.py``)::

    a1111:                        # any section name
        base_path: ~/sd-webui/    # optional; ~ and $VARS expanded; relative -> relative to the yaml's folder
        is_default: true          # optional; these folders are searched before the models dir
        checkpoints: models/Stable-diffusion
        loras: |                  # several folders, one per line
            models/Lora
            models/LyCORIS

Folder paths are relative to ``base_path`` (or the yaml's folder when there is none). The legacy kinds ``unet``
and ``clip`` mean ``diffusion_models`` and ``text_encoders``, as in ComfyUI. Unlike ComfyUI, a YAML list of paths
is accepted too, and ``~``/``$VARS`` are expanded in folder paths as well as in ``base_path``.

No torch import here: this module is imported when node schemas are built.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from comfygate.comfy_runtime.diffusion.errors import ModelFileNotFound
from comfygate.comfy_runtime.paths import unsafe_name_reason

__all__ = [
    "DEFAULT_FOLDERS",
    "LEGACY_KINDS",
    "MODEL_EXTENSIONS",
    "ExtraPath",
    "ModelPaths",
    "read_extra_model_paths",
]

# ComfyUI's supported_pt_extensions (".pt2" is left out: torch.export archives are not state dicts).
MODEL_EXTENSIONS: frozenset[str] = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".pkl"})

# Kinds whose files are not weights.
_KIND_EXTENSIONS: dict[str, frozenset[str]] = {"configs": frozenset({".yaml"})}

LEGACY_KINDS: dict[str, str] = {"unet": "diffusion_models", "clip": "text_encoders"}

# kind -> folder names under the models dir, in search order (ComfyUI's folder_paths defaults).
DEFAULT_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "configs": ("configs",),
    "loras": ("loras",),
    "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("unet", "diffusion_models"),
    "clip_vision": ("clip_vision",),
    "style_models": ("style_models",),
    "embeddings": ("embeddings",),
    "vae_approx": ("vae_approx",),
    "controlnet": ("controlnet", "t2i_adapter"),
    "gligen": ("gligen",),
    "upscale_models": ("upscale_models",),
    "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",),
    "model_patches": ("model_patches",),
}

_SKIPPED_DIRS = frozenset({".git"})


@dataclass(frozen=True)
class ExtraPath:
    """One folder from an extra_model_paths.yaml: ``kind`` already mapped from its legacy name."""

    kind: str
    path: Path
    is_default: bool
    section: str


def _normalize_kind(kind: str) -> str:
    return LEGACY_KINDS.get(kind, kind)


def _expand(text: str) -> str:
    return os.path.expandvars(os.path.expanduser(text))


def read_extra_model_paths(config_file: Path) -> list[ExtraPath]:
    """Parse an extra_model_paths.yaml into folders, in file order; ValueError naming the file and key when bad."""
    config_file = Path(config_file)
    where = str(config_file)
    try:
        text = config_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"extra model paths file {where} cannot be read: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"extra model paths file {where} is not valid YAML: {exc}") from exc
    if document is None:
        return []
    if not isinstance(document, Mapping):
        raise ValueError(
            f"extra model paths file {where} must be a mapping of sections (e.g. 'comfyui: {{base_path: ...}}'), "
            f"got {type(document).__name__}"
        )
    yaml_dir = config_file.resolve().parent
    found: list[ExtraPath] = []
    for section, conf in document.items():
        if conf is None:
            continue
        if not isinstance(conf, Mapping):
            raise ValueError(
                f"extra model paths file {where}: section {section!r} must be a mapping of folder kinds to paths, "
                f"got {type(conf).__name__}"
            )
        base_path: Path | None = None
        if "base_path" in conf:
            raw = conf["base_path"]
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError(f"extra model paths file {where}: {section}.base_path must be a non-empty path")
            base_path = Path(_expand(raw.strip()))
            if not base_path.is_absolute():
                base_path = yaml_dir / base_path
        is_default = conf.get("is_default", False)
        if not isinstance(is_default, bool):
            raise ValueError(f"extra model paths file {where}: {section}.is_default must be true or false")
        for kind, value in conf.items():
            if kind in ("base_path", "is_default"):
                continue
            if not isinstance(kind, str) or not kind:
                raise ValueError(f"extra model paths file {where}: section {section!r} has a non-text key {kind!r}")
            for entry in _entries(value, f"{where}: {section}.{kind}"):
                path = Path(_expand(entry))
                if not path.is_absolute():
                    path = (base_path or yaml_dir) / path
                found.append(ExtraPath(_normalize_kind(kind), Path(os.path.normpath(path)), is_default, str(section)))
    return found


def _entries(value: Any, where: str) -> list[str]:
    """Folder paths of one key: a path, a multi-line string of paths, or (beyond ComfyUI) a list of paths."""
    if isinstance(value, str):
        lines = value.split("\n")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        lines = value
    else:
        raise ValueError(
            f"extra model paths file {where} must be a path or a multi-line string of paths, "
            f"got {type(value).__name__}"
        )
    return [line.strip() for line in lines if line.strip()]


@dataclass
class _Listing:
    """The model files of one folder tree and the mtimes (ns) of every directory it was read from."""

    existed: bool
    dir_mtimes: dict[str, int]
    files: tuple[str, ...]  # relative, forward slashes, all extensions (filtered per kind on use)
    # False when a directory changed just before the scan: file mtimes tick coarsely (a jiffy or more), so a
    # file added in the same tick would leave the mtime unchanged. Such a listing is read again next time.
    stable: bool = True


class ModelPaths:
    """The model folders of each kind, their files, and resolution of a COMBO value to a file path.

    Thread-safe. Folders are searched in order; when two folders hold the same relative name the first wins.
    """

    def __init__(self, models_dir: Path | None, extra_config: Path | None = None) -> None:
        """``models_dir`` None: no default folders (only those of ``extra_config``, if any)."""
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.extra_config = Path(extra_config) if extra_config is not None else None
        self._folders: dict[str, list[Path]] = {
            kind: [self.models_dir / name for name in names] if self.models_dir is not None else []
            for kind, names in DEFAULT_FOLDERS.items()
        }
        self._cache: dict[Path, _Listing] = {}
        self._lock = threading.Lock()
        if self.extra_config is not None:
            for extra in read_extra_model_paths(self.extra_config):
                self.add_folder(extra.kind, extra.path, is_default=extra.is_default)

    # -- folders ---------------------------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        """Every folder kind known (ComfyUI's defaults plus kinds an extra yaml added)."""
        return sorted(self._folders)

    def add_folder(self, kind: str, path: Path, is_default: bool = False) -> None:
        """Add a folder to ``kind`` (ComfyUI's add_model_folder_path): first when ``is_default``, else last."""
        kind = _normalize_kind(kind)
        path = Path(os.path.normpath(Path(path)))
        with self._lock:
            folders = self._folders.setdefault(kind, [])
            if path in folders:
                if is_default and folders[0] != path:
                    folders.remove(path)
                    folders.insert(0, path)
            elif is_default:
                folders.insert(0, path)
            else:
                folders.append(path)

    def folders(self, kind: str) -> list[Path]:
        """The folders searched for ``kind`` (legacy names ``unet``/``clip`` accepted), in search order."""
        kind = self._known_kind(kind)
        with self._lock:
            return list(self._folders[kind])

    def extensions(self, kind: str) -> frozenset[str]:
        return _KIND_EXTENSIONS.get(_normalize_kind(kind), MODEL_EXTENSIONS)

    def _known_kind(self, kind: str) -> str:
        normalized = _normalize_kind(kind)
        if normalized not in self._folders:
            raise ValueError(f"unknown model folder kind {kind!r}; known kinds: {', '.join(self.kinds())}")
        return normalized

    # -- listing ---------------------------------------------------------------------------------------------

    def list_files(self, kind: str) -> list[str]:
        """Sorted relative names (forward slashes, subfolders included) of the model files of ``kind``."""
        kind = self._known_kind(kind)
        allowed = self.extensions(kind)
        names: set[str] = set()
        for folder in self.folders(kind):
            names.update(name for name in self._listing(folder).files if _suffix(name) in allowed)
        return sorted(names)

    def signature(self, kinds: Iterable[str] | None = None) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """A hashable value that differs whenever a file of the given kinds (default: all) is added or removed."""
        chosen = self.kinds() if kinds is None else sorted({self._known_kind(kind) for kind in kinds})
        return tuple((kind, tuple(self.list_files(kind))) for kind in chosen)

    def _listing(self, folder: Path) -> _Listing:
        with self._lock:
            cached = self._cache.get(folder)
        if cached is not None and _still_valid(folder, cached):
            return cached
        listing = _scan(folder)
        with self._lock:
            self._cache[folder] = listing
        return listing

    # -- resolution ------------------------------------------------------------------------------------------

    def resolve(self, kind: str, name: str) -> Path:
        """The file a COMBO value names; ValueError for an unsafe name, ModelFileNotFound when absent.

        Backslashes (workflows saved on Windows) are read as folder separators. A symlink inside a model folder
        may point anywhere: the folders are the administrator's, the name is the user's.
        """
        kind = self._known_kind(kind)
        if not isinstance(name, str):
            raise ValueError(f"{kind} model name must be text, got {type(name).__name__}")
        clean = name.replace("\\", "/")
        reason = unsafe_name_reason(clean)
        if reason is not None:
            raise ValueError(f"{kind} model name {name!r} is not allowed: {reason}")
        allowed = self.extensions(kind)
        if _suffix(clean) not in allowed:
            raise ValueError(
                f"{kind} model name {name!r} is not allowed: its extension is not one of {', '.join(sorted(allowed))}"
            )
        folders = self.folders(kind)
        for folder in folders:
            candidate = folder / clean
            if candidate.is_file():
                return candidate
        looked = ", ".join(str(folder) for folder in folders) or "(no folders)"
        raise ModelFileNotFound(f"{kind} model {name!r} not found; looked in: {looked}")


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


# Directory changes younger than this at scan time make the listing unstable (see _Listing.stable).
_MTIME_SLACK_NS = 2_000_000_000


def _still_valid(folder: Path, listing: _Listing) -> bool:
    if not listing.stable:
        return False
    if not listing.existed:
        return not folder.is_dir()
    for directory, mtime in listing.dir_mtimes.items():
        try:
            if os.stat(directory).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def _scan(folder: Path) -> _Listing:
    """Walk ``folder`` (following symlinks, each real directory once) recording files and directory mtimes."""
    root = str(folder)
    scanned_at = time.time_ns()
    try:
        root_stat = os.stat(root)
    except OSError:
        return _Listing(existed=False, dir_mtimes={}, files=())
    if not stat.S_ISDIR(root_stat.st_mode):
        return _Listing(existed=False, dir_mtimes={}, files=())
    dir_mtimes: dict[str, int] = {}
    files: list[str] = []
    seen: set[tuple[int, int]] = set()
    pending: list[tuple[str, str]] = [(root, "")]  # (absolute dir, relative prefix)
    while pending:
        directory, prefix = pending.pop()
        try:
            info = os.stat(directory)
        except OSError:
            continue
        identity = (info.st_dev, info.st_ino)
        if identity in seen:  # a symlink loop or a folder linked twice
            continue
        seen.add(identity)
        dir_mtimes[directory] = info.st_mtime_ns
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=True):
                    if entry.name not in _SKIPPED_DIRS:
                        pending.append((entry.path, relative + "/"))
                elif entry.is_file(follow_symlinks=True):
                    files.append(relative)
            except OSError:
                continue
    stable = all(mtime < scanned_at - _MTIME_SLACK_NS for mtime in dir_mtimes.values())
    return _Listing(existed=True, dir_mtimes=dir_mtimes, files=tuple(sorted(files)), stable=stable)
