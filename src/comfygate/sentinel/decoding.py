"""The decode check's work: read a candidate fully as its declared type, and compare it with what was declared.

Still images and animations are read with Pillow, videos and audio with PyAV (av_decode.py), glTF binaries,
text and other files here. Every reader bounds memory: an animation or video keeps only the three frames the
checks look at, and refuses, unread, frames larger than ``max_pixels`` (the decompression-bomb guard).
"""

from __future__ import annotations

import io
import json
import struct

from PIL import Image, ImageSequence

from .candidate import Candidate
from .media import (
    AV_TYPES,
    IMAGE_SIGNATURES,
    Decoded,
    Frame,
    base_type,
    describe,
    kind_noun,
    media_kind,
    sample_frames,
    sniff,
)

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_VIDEO_FRAMES", "decode", "mislabelled"]

DEFAULT_MAX_PIXELS = 64_000_000
# Frames of a video decoded in full; past them packets are only read, and the middle and last frames found by
# seeking, so a long video costs its demuxing, not its decoding.
DEFAULT_MAX_VIDEO_FRAMES = 1000
# An animation's frames depend on the ones before them, so all are decoded: at most this many frames' worth
# of max_pixels in all.
ANIMATION_PIXEL_BUDGET = 16
# Errors Pillow raises on data it cannot decode: unknown format (UnidentifiedImageError is an OSError),
# truncated or corrupt data (OSError, SyntaxError from some plugins, ValueError on bad tile layouts; EOFError
# and IndexError from seeking the frames of a cut animation).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, Image.DecompressionBombError)
_GLB_JSON_CHUNK = 0x4E4F534A  # "JSON" as a little-endian uint32


def decode(candidate: Candidate, max_pixels: int = DEFAULT_MAX_PIXELS,
           max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES) -> Decoded:
    """Decode the file fully as its declared media type and compare it with what was declared."""
    kind = media_kind(candidate.content_type)
    declared = base_type(candidate.content_type)
    if kind == "image":
        return _decode_image(candidate, max_pixels)
    if kind == "unknown":
        return Decoded(kind).failed("wrong_type", f"content type {candidate.content_type!r} is not one the "
                                                  "sentinel can judge")
    if not candidate.data:
        return Decoded(kind).failed("empty", f"the {kind_noun(kind)} is empty (0 bytes)")
    if kind in ("video", "audio"):
        from . import av_decode  # PyAV loads ffmpeg's libraries: only when a video or audio needs it

        formats = AV_TYPES[declared][1]
        if kind == "video":
            return av_decode.decode_video(candidate, formats, max_pixels, max_video_frames)
        return av_decode.decode_audio(candidate, formats)
    if kind == "model":
        return _decode_glb(candidate)
    if kind == "text":
        return _decode_text(candidate)
    return Decoded(kind)  # other files: any non-empty bytes


def mislabelled(candidate: Candidate, kind: str, allowed: frozenset[str]) -> Decoded | None:
    """A wrong_type result when the data's signature names a format the declared type does not allow."""
    found = sniff(candidate.data)
    if found is None or found in allowed:
        return None
    return Decoded(kind).failed("wrong_type", f"content type is {candidate.content_type!r} but the data is "
                                              f"{describe(found)}")


# ---- still images and animations --------------------------------------------------------------------------

def _decode_image(candidate: Candidate, max_pixels: int) -> Decoded:
    kind = "image"
    try:
        image = Image.open(io.BytesIO(candidate.data))
        # Image.open reads only the header: refuse a decompression bomb before load() allocates it.
        width, height = image.size
        if width * height > max_pixels:
            return Decoded(kind).failed("undecodable", f"image is {width}x{height}, more than {max_pixels} pixels")
        if getattr(image, "is_animated", False):
            kind = "animation"
            decoded = _decode_animation(image, max_pixels)
        else:
            image.load()
            decoded = Decoded(kind, [Frame(image)])
    except _DECODE_ERRORS as exc:
        wrong = mislabelled(candidate, kind, IMAGE_SIGNATURES)
        return wrong or Decoded(kind).failed("undecodable", f"data does not decode as an {kind} ({exc})")
    if decoded.ok:
        _compare_with_declared(candidate, image, decoded)
    return decoded


def _decode_animation(image: Image.Image, max_pixels: int) -> Decoded:
    """Decode every frame (each one builds on the last), keeping the first, middle and last."""
    total = image.n_frames
    width, height = image.size
    if total * width * height > ANIMATION_PIXEL_BUDGET * max_pixels:
        return Decoded("animation").failed(
            "undecodable", f"animation is {total} frames of {width}x{height}, more than "
                           f"{ANIMATION_PIXEL_BUDGET * max_pixels} pixels in all")
    sampled, hash_index = sample_frames(total)
    labels = dict(sampled)
    kept: dict[int, Image.Image] = {}
    count = 0
    for index, frame in enumerate(ImageSequence.Iterator(image)):
        frame.load()
        if index in labels:
            kept[index] = frame.copy()  # the composited frame, as a viewer shows it
        count += 1
    if count != total:
        return Decoded("animation").failed("undecodable", f"only {count} of the {total} frames the file "
                                                          "declares decode")
    image.seek(0)  # the declared checks read the first frame's mode
    return Decoded("animation", [Frame(kept[index], label) for index, label in sampled], hash_index)


def _compare_with_declared(candidate: Candidate, image: Image.Image, decoded: Decoded) -> None:
    """Record every way the image differs from the declared media type, size and Pillow mode."""
    width, height = image.size
    declared_type = base_type(candidate.content_type)
    actual_type = Image.MIME.get(image.format or "", f"image/{(image.format or 'unknown').lower()}")
    if declared_type != actual_type and not (declared_type == "image/apng" and actual_type == "image/png"):
        decoded.failed("wrong_type", f"content type is {candidate.content_type!r} but the data is {image.format}")
    if candidate.expected_width is not None and candidate.expected_width != width:
        decoded.failed("wrong_size", f"width is {width}, expected {candidate.expected_width}")
    if candidate.expected_height is not None and candidate.expected_height != height:
        decoded.failed("wrong_size", f"height is {height}, expected {candidate.expected_height}")
    if candidate.expected_mode is not None and candidate.expected_mode != image.mode:
        decoded.failed("wrong_mode", f"mode is {image.mode}, expected {candidate.expected_mode}")


# ---- 3D models, text, other files ----------------------------------------------------------------------------

def _decode_glb(candidate: Candidate) -> Decoded:
    """A glTF 2.0 binary: the 12-byte header (magic, version, length), then a JSON chunk that parses."""
    data = candidate.data
    if data[:4] != b"glTF":
        wrong = mislabelled(candidate, "model", frozenset({"gltf"}))
        return wrong or Decoded("model").failed("undecodable", "data is not a glTF binary (no 'glTF' magic)")
    if len(data) < 20:
        return Decoded("model").failed("undecodable", f"the file is {len(data)} bytes, too short for a glTF "
                                                      "header and a chunk")
    _, version, length = struct.unpack_from("<4sII", data, 0)
    if version != 2:
        return Decoded("model").failed("undecodable", f"glTF version is {version}, expected 2")
    if length != len(data):
        return Decoded("model").failed("undecodable", f"the header declares {length} bytes but the file has "
                                                      f"{len(data)} (truncated or padded)")
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != _GLB_JSON_CHUNK:
        return Decoded("model").failed("undecodable", "the first chunk is not the JSON chunk")
    if 20 + chunk_length > len(data):
        return Decoded("model").failed("undecodable", f"the JSON chunk declares {chunk_length} bytes, past the "
                                                      "end of the file")
    try:
        document = json.loads(data[20:20 + chunk_length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return Decoded("model").failed("undecodable", f"the JSON chunk does not parse ({exc})")
    if not isinstance(document, dict) or "asset" not in document:
        return Decoded("model").failed("undecodable", "the JSON chunk is not a glTF document (no \"asset\")")
    return Decoded("model")


def _decode_text(candidate: Candidate) -> Decoded:
    try:
        text = candidate.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Signatures are looked at only now: text may well start with "GIF89a" or "glTF".
        wrong = mislabelled(candidate, "text", frozenset())
        return wrong or Decoded("text").failed("undecodable", f"data is not UTF-8 text ({exc.reason} at byte "
                                                              f"{exc.start})")
    if not text.strip():
        return Decoded("text").failed("empty", "the text is only whitespace")
    return Decoded("text")
