"""Video and audio, read with PyAV (ffmpeg): every packet is read and decoded as it comes, and only what the
checks need is kept (three frames of a video; running sums for the level of audio), so memory stays bounded
whatever the length.

A file is undecodable when ffmpeg reports an error, or when fewer frames or seconds decode than the file
declares (a cut file often decodes "cleanly" up to where it was cut). ffmpeg's decoders conceal some damage
inside a frame without a word; that is the pixel checks' to find.
"""

from __future__ import annotations

import io
import math
from typing import Any

import av
import numpy as np

from .candidate import Candidate
from .check_specs import SILENCE_FLOOR_DBFS
from .decoding import mislabelled
from .media import Decoded, Frame, describe, sample_frames

__all__ = ["decode_video", "decode_audio"]

# What PyAV raises on bad data: FFmpegError (InvalidDataError, EOFError, ...), plus the plain errors some
# container and metadata parsing gives.
_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError, UnicodeDecodeError)
# Demuxer names (container.format.name is a comma-separated list) -> the keys of media.AV_TYPES.
_FORMAT_KEYS = {"mov": "mp4", "mp4": "mp4", "matroska": "matroska", "webm": "matroska", "ogg": "ogg",
                "mp3": "mp3", "flac": "flac", "wav": "wav"}


def decode_video(candidate: Candidate, formats: frozenset[str], max_pixels: int, max_frames: int) -> Decoded:
    wrong = mislabelled(candidate, "video", formats)  # the signature tells, before ffmpeg guesses
    if wrong is not None:
        return wrong
    try:
        with av.open(io.BytesIO(candidate.data), mode="r") as container:
            return _read_video(container, candidate, formats, max_pixels, max_frames)
    except _AV_ERRORS as exc:
        return Decoded("video").failed("undecodable", f"data does not decode as video ({exc})")


def decode_audio(candidate: Candidate, formats: frozenset[str]) -> Decoded:
    wrong = mislabelled(candidate, "audio", formats)  # the signature tells, before ffmpeg guesses
    if wrong is not None:
        return wrong
    try:
        with av.open(io.BytesIO(candidate.data), mode="r") as container:
            return _read_audio(container, candidate, formats)
    except _AV_ERRORS as exc:
        return Decoded("audio").failed("undecodable", f"data does not decode as audio ({exc})")


def _wrong_container(container: Any, candidate: Candidate, kind: str, formats: frozenset[str]) -> Decoded | None:
    names = container.format.name.split(",")
    if any(_FORMAT_KEYS.get(name) in formats for name in names):
        return None
    found = next((_FORMAT_KEYS[name] for name in names if name in _FORMAT_KEYS), None)
    what = describe(found) if found else f"{container.format.long_name} ({container.format.name})"
    return Decoded(kind).failed("wrong_type", f"content type is {candidate.content_type!r} but the data is {what}")


def _first_stream(container: Any, candidate: Candidate, kind: str, formats: frozenset[str]
                  ) -> tuple[Any, Decoded | None]:
    """The container's first ``kind`` ("video" or "audio") stream, or the failed Decoded saying why there is
    none: another container format than the content type names, or no such stream in it."""
    wrong = _wrong_container(container, candidate, kind, formats)
    if wrong is not None:
        return None, wrong
    streams = getattr(container.streams, kind)
    if not streams:
        return None, Decoded(kind).failed("wrong_type", f"content type is {candidate.content_type!r} but the data "
                                                        f"has no {kind} stream")
    return streams[0], None


def _declared_seconds(container: Any, stream: Any) -> float | None:
    """How long the file says the stream is: its own duration, else the container's when it is the only
    stream (another stream, an audio track, may be the longer one)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


# ---- video ---------------------------------------------------------------------------------------------------

def _read_video(container: Any, candidate: Candidate, formats: frozenset[str], max_pixels: int,
                max_frames: int) -> Decoded:
    stream, wrong = _first_stream(container, candidate, "video", formats)
    if wrong is not None:
        return wrong
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        return Decoded("video").failed("undecodable", f"video is {width}x{height}, more than {max_pixels} pixels")
    stream.thread_type = "AUTO"
    declared_frames, seconds = stream.frames, _declared_seconds(container, stream)
    rate = float(stream.average_rate) if stream.average_rate else None
    guess = declared_frames or (round(seconds * rate) if seconds and rate else 0)

    # One pass: decode up to max_frames (keeping the first frame and the guessed middle one), read the rest.
    kept: dict[int, Any] = {}
    timestamps: list[int] = []  # every packet's pts: sorted, the pts of frame i is the i-th
    decoded, last = 0, None
    for packet in container.demux(stream):
        if packet.size and packet.pts is not None:
            timestamps.append(packet.pts)
        if decoded >= max_frames:
            continue
        for frame in packet.decode():
            if decoded in (0, guess // 2):
                kept[decoded] = frame
            last, decoded = frame, decoded + 1
    complete = decoded < max_frames or len(timestamps) <= decoded
    total = decoded if complete else len(timestamps)

    if complete:
        short = _short_video(decoded, declared_frames, seconds, rate, last, stream)
        if short:
            return Decoded("video").failed("undecodable", short)
    if total == 0:
        return Decoded("video").failed("empty", "the video has no frames")
    sampled, hash_index = sample_frames(total)
    timestamps.sort()
    frames = []
    for index, label in sampled:
        frame = kept[index] if index in kept else last if complete and index == total - 1 else None
        if frame is None:  # past what was decoded, or the guess of the middle missed: seek to it
            frame = _frame_at(container, stream, timestamps[index]) if index < len(timestamps) else None
        if frame is None:
            return Decoded("video").failed("undecodable", f"frame {index + 1} of {total} cannot be read")
        frames.append(Frame(frame.to_image(), label))
    result = Decoded("video", frames, hash_index)
    first = frames[0].image
    if candidate.expected_width is not None and candidate.expected_width != first.width:
        result.failed("wrong_size", f"width is {first.width}, expected {candidate.expected_width}")
    if candidate.expected_height is not None and candidate.expected_height != first.height:
        result.failed("wrong_size", f"height is {first.height}, expected {candidate.expected_height}")
    return result


def _short_video(decoded: int, declared_frames: int, seconds: float | None, rate: float | None, last: Any,
                 stream: Any) -> str | None:
    """Why a fully decoded video is shorter than it says it is (cut or damaged), or None."""
    if declared_frames and decoded < declared_frames:
        return f"only {decoded} of the {declared_frames} frames the file declares decode (truncated or corrupt)"
    if not seconds:
        return None
    if last is None:
        return f"no frame decodes, though the file declares {seconds:.2f} s (truncated or corrupt)"
    if last.pts is None or not rate:
        return None
    start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    end = float(last.pts * last.time_base) - start + 1 / rate
    # Two frames and 1% of slack: muxers round durations, and some count the last frame's length, some not.
    if end < seconds - 2 / rate - 0.01 * seconds:
        return f"the frames end at {end:.2f} s of the {seconds:.2f} s the file declares (truncated or corrupt)"
    return None


def _frame_at(container: Any, stream: Any, pts: int) -> Any:
    """The frame shown at ``pts``: seek to the keyframe before it and decode forward."""
    container.seek(pts, stream=stream, backward=True, any_frame=False)
    found = None
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        found = frame
        if frame.pts >= pts:
            break
    return found


# ---- audio ---------------------------------------------------------------------------------------------------

def _read_audio(container: Any, candidate: Candidate, formats: frozenset[str]) -> Decoded:
    stream, wrong = _first_stream(container, candidate, "audio", formats)
    if wrong is not None:
        return wrong
    # Every sample as 32-bit float in -1..1 (channels interleaved), whatever the codec's own format.
    resampler = av.AudioResampler(format="flt")
    samples, values, squares = 0, 0, 0.0

    def add(chunks: list) -> None:
        nonlocal samples, values, squares
        for chunk in chunks:
            array = chunk.to_ndarray().ravel().astype(np.float64)
            samples, values = samples + chunk.samples, values + array.size
            squares += float(np.dot(array, array))

    for packet in container.demux(stream):
        for frame in packet.decode():
            add(resampler.resample(frame))
    add(resampler.resample(None))  # what the resampler still holds

    seconds_declared = _declared_seconds(container, stream)
    rate = stream.rate or stream.codec_context.sample_rate
    if samples and not rate:
        return Decoded("audio").failed("undecodable", "the audio declares no sample rate")
    if samples == 0:
        if seconds_declared:
            return Decoded("audio").failed("undecodable", f"no sample decodes, though the file declares "
                                                          f"{seconds_declared:.2f} s (truncated or corrupt)")
        return Decoded("audio").failed("empty", "the audio has no samples (duration 0 s)")
    seconds = samples / rate
    # 0.1 s and 2% of slack: encoder delay and padding, and durations estimated from the bitrate (mp3).
    if seconds_declared and seconds < seconds_declared - max(0.1, 0.02 * seconds_declared):
        return Decoded("audio").failed("undecodable", f"only {seconds:.2f} s of the {seconds_declared:.2f} s the "
                                                      "file declares decode (truncated or corrupt)")
    rms = math.sqrt(squares / values)
    level = 20 * math.log10(rms) if rms > 0 else SILENCE_FLOOR_DBFS
    return Decoded("audio", level_dbfs=max(level, SILENCE_FLOOR_DBFS))
