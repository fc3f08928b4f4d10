"""Media types of output files, from their extension, as both engines and the API serve them."""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["content_type_for", "extension_for"]

_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
    ".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime",
    ".flac": "audio/flac", ".mp3": "audio/mpeg", ".opus": "audio/ogg",
    ".ogg": "audio/ogg", ".wav": "audio/wav", ".glb": "model/gltf-binary", ".txt": "text/plain",
}
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
               "video/mp4": ".mp4", "video/webm": ".webm", "audio/flac": ".flac", "audio/mpeg": ".mp3",
               "audio/ogg": ".opus", "audio/wav": ".wav", "model/gltf-binary": ".glb", "text/plain": ".txt"}


def content_type_for(filename: str) -> str:
    """The media type of a file name; application/octet-stream for what we do not know (.latent, ...).

    Only types the sentinel can judge are named: anything else gets the integrity check of a plain file
    rather than a refusal as a type it cannot read."""
    return _TYPES.get(PurePosixPath(filename).suffix.lower(), "application/octet-stream")


def extension_for(content_type: str, filename: str = "") -> str:
    """The extension to store a file of ``content_type`` under (the file's own when it has one)."""
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix and len(suffix) <= 8 and suffix[1:].isalnum():
        return suffix
    return _EXTENSIONS.get(content_type.split(";")[0].strip(), ".bin")
