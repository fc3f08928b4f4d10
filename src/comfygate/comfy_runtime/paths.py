"""Safety of user-given relative file names (LoadImage.image, SaveImage.filename_prefix)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

__all__ = ["resolve_inside", "unsafe_name_reason"]

_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_NAME_LENGTH = 255


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` cannot be used as a relative path under a base folder, or None when it is safe.

    Plain relative names with forward-slash subfolders ("portraits/run") are safe.
    """
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is longer than {MAX_NAME_LENGTH} characters"
    if "\x00" in name:
        return "it contains a NUL character"
    if any(ord(ch) < 32 for ch in name):
        return "it contains a control character"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "it is an absolute path"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return "it contains a '..' component"
    if name.endswith("/"):
        return "it ends with a path separator"
    return None


def resolve_inside(base: Path, name: str) -> Path:
    """Resolve ``name`` under ``base``; ValueError when unsafe or when a symlink leads outside ``base``."""
    reason = unsafe_name_reason(name)
    if reason is not None:
        raise ValueError(f"file name {name!r} is not allowed: {reason}")
    root = base.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"file name {name!r} is not allowed: it resolves outside the input folder")
    return path
