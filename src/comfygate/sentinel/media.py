"""What an output is: its kind (from the declared media type), the decoded result the checks read, and how
reasons name it.

Kinds: ``image`` (a still), ``animation`` (an image file with several frames: animated WEBP/PNG, GIF),
``video``, ``audio``, ``model`` (a glTF binary), ``text``, ``other`` (application/octet-stream) and
``unknown`` (a type the sentinel cannot judge). The pixel and model checks read the frames of images,
animations and videos; the silence check reads the level of audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from .check_specs import MEDIA_KINDS

__all__ = [
    "AV_TYPES",
    "Decoded",
    "Frame",
    "IMAGE_SIGNATURES",
    "MediaKind",
    "base_type",
    "describe",
    "kind_phrase",
    "kind_noun",
    "media_kind",
    "sample_frames",
    "sniff",
]

MediaKind = str  # one of check_specs.MEDIA_KINDS

# Declared types that PyAV decodes -> (kind, the containers the data may be, as keys of _AV_FORMAT_KEYS).
AV_TYPES: dict[str, tuple[str, frozenset[str]]] = {
    **{t: ("video", frozenset({"mp4"})) for t in ("video/mp4", "video/quicktime")},
    **{t: ("video", frozenset({"matroska"})) for t in ("video/webm", "video/x-matroska")},
    **{t: ("audio", frozenset({"flac"})) for t in ("audio/flac", "audio/x-flac")},
    **{t: ("audio", frozenset({"mp3"})) for t in ("audio/mpeg", "audio/mp3")},
    **{t: ("audio", frozenset({"ogg"})) for t in ("audio/ogg", "audio/opus")},
    **{t: ("audio", frozenset({"wav"})) for t in ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")},
    "audio/webm": ("audio", frozenset({"matroska"})),
    "audio/mp4": ("audio", frozenset({"mp4"})),
}
_OTHER_TYPES = {"model/gltf-binary": "model", "application/octet-stream": "other"}

# How reasons name each kind: "the <noun> did not decode", "does not apply to <phrase> (<type>)".
_NOUNS = {"image": "image", "animation": "animation", "video": "video", "audio": "audio", "model": "3D model",
          "text": "text", "other": "file", "unknown": "file"}
_PHRASES = {"image": "still images", "animation": "animations", "video": "video", "audio": "audio",
            "model": "3D models", "text": "text", "other": "other files", "unknown": "files of an unknown type"}
assert set(_NOUNS) == set(_PHRASES) == set(MEDIA_KINDS)

# File signatures (offset, bytes, key): what the data is, to tell a mislabelled file from a corrupt one.
_SIGNATURES = (
    (0, b"\x89PNG\r\n\x1a\n", "png"), (0, b"\xff\xd8\xff", "jpeg"), (0, b"GIF87a", "gif"), (0, b"GIF89a", "gif"),
    (0, b"glTF", "gltf"), (0, b"fLaC", "flac"), (0, b"OggS", "ogg"), (0, b"ID3", "mp3"),
    (0, b"\x1a\x45\xdf\xa3", "matroska"), (4, b"ftyp", "mp4"), (8, b"WEBP", "webp"), (8, b"WAVE", "wav"),
)
_DESCRIPTIONS = {
    "png": "a PNG image", "jpeg": "a JPEG image", "gif": "a GIF image", "webp": "a WEBP image",
    "gltf": "a glTF binary", "flac": "FLAC audio", "ogg": "an Ogg stream", "mp3": "MP3 audio",
    "matroska": "a WebM/Matroska file", "mp4": "an MP4/QuickTime file", "wav": "WAV audio",
}
IMAGE_SIGNATURES = frozenset({"png", "jpeg", "gif", "webp"})


def base_type(content_type: str) -> str:
    """``"Text/Plain; charset=utf-8"`` -> ``"text/plain"``."""
    return content_type.split(";", 1)[0].strip().lower()


def media_kind(content_type: str) -> MediaKind:
    """The kind of output a declared media type names. ``image/*`` is ``"image"`` here; the gate calls an
    image file with several frames an ``"animation"`` once it has read it."""
    declared = base_type(content_type)
    if declared in AV_TYPES:
        return AV_TYPES[declared][0]
    if declared in _OTHER_TYPES:
        return _OTHER_TYPES[declared]
    if declared.startswith("image/"):
        return "image"
    if declared.startswith("text/"):
        return "text"
    return "unknown"


def kind_noun(kind: MediaKind) -> str:
    return _NOUNS[kind]


def kind_phrase(kind: MediaKind) -> str:
    return _PHRASES[kind]


def sniff(data: bytes) -> str | None:
    """The format key of ``data`` read from its first bytes (``"png"``, ``"mp4"``, ...), or None."""
    for offset, signature, key in _SIGNATURES:
        if data[offset:offset + len(signature)] == signature and (offset != 8 or data[:4] == b"RIFF"):
            return key
    return None


def describe(key: str) -> str:
    return _DESCRIPTIONS.get(key, key)


@dataclass
class Frame:
    """A decoded picture the pixel and model checks read. ``label`` names it in reasons (``"the middle frame
    (frame 13 of 24)"``); None for a still image, whose reasons say "image" as they always have."""

    image: Image.Image
    label: str | None = None


@dataclass
class Decoded:
    """Outcome of decoding a candidate: what the checks read, and the first problem found, if any.

    ``frames``: the still image, or the first, middle and last frames of an animation or video (fewer when
    they coincide). ``hash_index``: the frame that identifies the output for the duplicate check (the middle
    one). ``level_dbfs``: the RMS level of audio. ``code``/``problems`` describe a decode-check failure; what
    was read is kept when only the declared type, size or mode is wrong, so hashing can still see it.
    """

    kind: MediaKind
    frames: list[Frame] = field(default_factory=list)
    hash_index: int = 0
    level_dbfs: float | None = None
    code: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def readable(self) -> bool:
        """Whether there is something for the checks past decode to read."""
        return bool(self.frames) or self.level_dbfs is not None

    def failed(self, code: str, *problems: str) -> Decoded:
        """This result with a decode failure (the first code names it)."""
        self.code = self.code or code
        self.problems = (*self.problems, *problems)
        return self


def sample_frames(total: int) -> tuple[list[tuple[int, str]], int]:
    """The first, middle and last frame indices of ``total`` frames with their labels, in order, and the
    position of the middle one in that list."""
    names: dict[int, list[str]] = {}
    for name, index in (("first", 0), ("middle", total // 2), ("last", total - 1)):
        names.setdefault(index, []).append(name)
    sampled = []
    for index, parts in names.items():
        joined = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        sampled.append((index, f"the {joined} frame (frame {index + 1} of {total})"))
    return sampled, list(names).index(total // 2)
