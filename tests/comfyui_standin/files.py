"""The stand-in's folders and file rules: output naming, GET /view and POST /upload/{image,mask}.

Naming follows what ComfyUI 0.3.64 was recorded doing (07, 08 in the protocol recordings): output files are
``<prefix>_<5 digits>_.<ext>`` with one counter per prefix and folder whatever the extension, a ``/`` in the
prefix is a subfolder, previews go to temp/ under ``ComfyUI_temp_<5 letters>``; an upload of a name that exists
keeps the name when the bytes are the same and otherwise becomes ``name (1).ext``, ``name (2).ext``, ...
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import os
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from PIL import Image

__all__ = ["Folders", "SaveTarget", "content_type", "save_target", "temp_prefix", "upload", "view"]

# ComfyUI's answers for the types its output nodes write; anything else falls back to Python's table.
CONTENT_TYPES = {
    ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".webm": "video/webm", ".mp4": "video/mp4", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".opus": "audio/ogg",
    ".wav": "audio/wav", ".glb": "model/gltf-binary", ".latent": "application/octet-stream",
}
# Served as downloads, never rendered (ComfyUI does the same for these).
UNSAFE_TYPES = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}
TEMP_LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Folders:
    """A ComfyUI install's folders, all absolute."""

    base: Path
    input: Path
    output: Path
    temp: Path
    models: Path

    @classmethod
    def create(cls, base: Path, input: Path | None = None, output: Path | None = None,  # noqa: A002
               temp: Path | None = None) -> Folders:
        base = base.absolute()
        folders = cls(base, (input or base / "input").absolute(), (output or base / "output").absolute(),
                      (temp or base / "temp").absolute(), base / "models")
        for path in (folders.input, folders.output, folders.temp, folders.models):
            path.mkdir(parents=True, exist_ok=True)
        return folders

    def by_type(self, kind: str | None) -> Path | None:
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind or "")


@dataclass(frozen=True)
class SaveTarget:
    """Where an output node writes its next files: ``folder / f"{stem}_{counter:05}_.{ext}"``."""

    folder: Path
    stem: str
    counter: int
    subfolder: str

    def name(self, offset: int, extension: str) -> str:
        return f"{self.stem}_{self.counter + offset:05}_.{extension}"

    def record(self, offset: int, extension: str, kind: str) -> dict[str, str]:
        """Write nothing; the ui record ``{filename, subfolder, type}`` of file number ``offset``."""
        return {"filename": self.name(offset, extension), "subfolder": self.subfolder, "type": kind}


def save_target(root: Path, prefix: str) -> SaveTarget:
    """The next free counter for ``prefix`` under ``root``; ValueError for a prefix that leaves ``root``."""
    normalized = os.path.normpath(prefix)
    subfolder, stem = os.path.split(normalized)
    folder = (root / subfolder).resolve()
    if not folder.is_relative_to(root.resolve()) or Path(normalized).is_absolute():
        raise ValueError("Saving image outside the output folder is not allowed.")
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(stem) + r"_(\d+)_")
    numbers = [int(m.group(1)) for entry in os.listdir(folder) if (m := pattern.match(entry))]
    return SaveTarget(folder, stem, max(numbers, default=0) + 1, subfolder.replace(os.sep, "/"))


def temp_prefix() -> str:
    """A preview node's file prefix: a fresh random one per run, so previews never overwrite each other."""
    return "ComfyUI_temp_" + "".join(random.choice(TEMP_LETTERS) for _ in range(5))


def content_type(filename: str) -> str:
    known = CONTENT_TYPES.get(Path(filename).suffix.lower())
    if known is None:
        known = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return "application/octet-stream" if known in UNSAFE_TYPES else known


def _annotated(name: str) -> tuple[str, str | None]:
    """``"x.png [output]"`` -> ("x.png", "output"): ComfyUI's way to name a file's folder inside the name."""
    for kind in ("input", "output", "temp"):
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return name, None


def view(folders: Folders, query: dict[str, str]) -> web.StreamResponse:
    """GET /view: 404 without a filename or file, 400 for '..' or an unknown type, 403 for a subfolder outside."""
    name = query.get("filename")
    if not name:
        return web.Response(status=404)
    name, annotated = _annotated(name)
    if name.startswith("/") or ".." in name:
        return web.Response(status=400)
    root = folders.by_type(annotated or query.get("type", "output"))
    if root is None:
        return web.Response(status=400)
    folder = (root / query.get("subfolder", "")).resolve()
    if not folder.is_relative_to(root.resolve()):
        return web.Response(status=403)
    filename = os.path.basename(name)
    path = folder / filename
    if not path.is_file():
        return web.Response(status=404)
    disposition = {"Content-Disposition": f'filename="{filename}"'}
    if "preview" in query or query.get("channel", "rgba") != "rgba":
        return _converted(path, query, disposition)
    return web.FileResponse(path, headers={**disposition, "Content-Type": content_type(filename)})


def _converted(path: Path, query: dict[str, str], disposition: dict[str, str]) -> web.Response:
    """``preview=webp;50`` re-encodes the picture; ``channel=rgb`` or ``channel=a`` gives that part as a PNG."""
    with Image.open(path) as opened:
        picture = opened.convert("RGBA")
    buffer = io.BytesIO()
    if "preview" in query:
        kind, _, quality = query["preview"].partition(";")
        kind = kind if kind in ("webp", "jpeg") else "webp"
        picture.convert("RGB").save(buffer, format=kind, quality=int(quality) if quality.isdigit() else 90)
        return web.Response(body=buffer.getvalue(), headers={**disposition, "Content-Type": f"image/{kind}"})
    if query.get("channel") == "rgb":
        picture.convert("RGB").save(buffer, format="PNG")
    else:  # the alpha channel alone, as the alpha of an otherwise black picture
        alpha = Image.new("RGBA", picture.size)
        alpha.putalpha(picture.getchannel("A"))
        alpha.save(buffer, format="PNG")
    return web.Response(body=buffer.getvalue(), headers={**disposition, "Content-Type": "image/png"})


def _free_name(folder: Path, filename: str, data: bytes, overwrite: bool) -> tuple[str, bool]:
    """(name to use, whether a file with those very bytes is already there under that name)."""
    if overwrite:
        return filename, False
    stem, extension = os.path.splitext(filename)
    candidate, number = filename, 1
    digest = hashlib.sha256(data).digest()
    while (folder / candidate).exists():
        if hashlib.sha256((folder / candidate).read_bytes()).digest() == digest:
            return candidate, True
        candidate, number = f"{stem} ({number}){extension}", number + 1
    return candidate, False


async def upload(folders: Folders, request: web.Request, *, mask: bool) -> web.Response:
    """POST /upload/image (and /upload/mask: the original's RGB with the upload's alpha, as a PNG)."""
    post = await request.post()
    image = post.get("image")
    kind = post.get("type") or "input"
    root = folders.by_type(str(kind))
    if root is None:
        raise ValueError(f"unknown upload type {kind!r}")  # ComfyUI fails with a 500 here too
    if not isinstance(image, web.FileField) or not image.filename:
        return web.Response(status=400)
    subfolder = str(post.get("subfolder", ""))
    folder = (root / os.path.normpath(subfolder)).resolve()
    if not (folder / image.filename).resolve().is_relative_to(root.resolve()):
        return web.Response(status=400)
    data = image.file.read()
    if mask:
        data = _masked(folders, str(post.get("original_ref", "")), data)
        if data is None:
            return web.Response(status=404)
    folder.mkdir(parents=True, exist_ok=True)
    overwrite = str(post.get("overwrite", "")) in ("true", "1")
    name, duplicate = _free_name(folder, image.filename, data, overwrite)
    if not duplicate:
        (folder / name).write_bytes(data)
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


def _masked(folders: Folders, original_ref: str, mask_png: bytes) -> bytes | None:
    """PNG bytes of the referenced original with the mask's alpha; None when the original is not there."""
    try:
        ref = json.loads(original_ref)
        root = folders.by_type(ref.get("type", "input"))
        path = (root / ref.get("subfolder", "") / ref["filename"]).resolve() if root is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if path is None or root is None or not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    with Image.open(path) as original, Image.open(io.BytesIO(mask_png)) as upload_mask:
        combined = original.convert("RGBA")
        combined.putalpha(upload_mask.convert("RGBA").getchannel("A").resize(combined.size))
    buffer = io.BytesIO()
    combined.save(buffer, format="PNG")
    return buffer.getvalue()
