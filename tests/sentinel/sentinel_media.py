"""Real media files for the gate, built with Pillow and PyAV: animations, videos, audio, glTF binaries.

``moving_frames`` is a "clip" that passes every picture check at the default policy: a landscape with a
yellow box sliding across it. The builders encode frames and samples exactly as a ComfyUI save node would.
"""

from __future__ import annotations

import io
import json
import struct

import av
import numpy as np
from PIL import Image, ImageDraw
from sentinel_images import landscape

# ---- pictures ---------------------------------------------------------------------------------------------------


def moving_frames(count: int = 12, size: int = 128) -> list[Image.Image]:
    """A landscape with a box that moves a few pixels each frame."""
    background = landscape(size)
    frames = []
    for index in range(count):
        frame = background.copy()
        x = 4 + index * (size - 40) // max(1, count - 1)
        ImageDraw.Draw(frame).rectangle((x, size // 3, x + 24, size // 3 + 24), fill=(240, 220, 30))
        frames.append(frame)
    return frames


def with_blank_middle(frames: list[Image.Image]) -> list[Image.Image]:
    """The same clip with its middle frame (index len // 2) replaced by a flat black one."""
    frames = list(frames)
    frames[len(frames) // 2] = Image.new("RGB", frames[0].size, (0, 0, 0))
    return frames


def animation(frames: list[Image.Image], fmt: str) -> bytes:
    """An animated WEBP (lossless), PNG (APNG) or GIF of ``frames``, 100 ms each."""
    options = {"lossless": True} if fmt == "WEBP" else {}
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    return buffer.getvalue()


VIDEO_CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}


def video(frames: list[Image.Image], fmt: str = "mp4", rate: int = 12) -> bytes:
    """``frames`` as an H.264 MP4 or a VP9 WebM at ``rate`` frames a second."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(VIDEO_CODECS[fmt], rate=rate)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        if fmt == "mp4":
            stream.options = {"crf": "12"}  # near-lossless: the picture checks see the frames as drawn
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode())  # flush the encoder
    return buffer.getvalue()


# ---- audio -------------------------------------------------------------------------------------------------------

AUDIO_FORMATS = {  # content type -> (container, codec)
    "audio/flac": ("flac", "flac"),
    "audio/mpeg": ("mp3", "libmp3lame"),
    "audio/ogg": ("ogg", "libopus"),
    "audio/wav": ("wav", "pcm_s16le"),
}


def tone(content_type: str, seconds: float = 1.0, amplitude: float = 0.3, rate: int = 48000) -> bytes:
    """A 440 Hz sine of ``amplitude`` (0 gives digital silence), mono, in the format of ``content_type``."""
    fmt, codec = AUDIO_FORMATS[content_type]
    count = int(seconds * rate)
    wave = (amplitude * np.sin(2 * np.pi * 440 * np.arange(count) / rate)).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        step = stream.codec_context.frame_size or 1024
        for start in range(0, count, step):
            frame = av.AudioFrame.from_ndarray(wave[None, start:start + step], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def without_id3(data: bytes) -> bytes:
    """An MP3 without its ID3v2 tag (10-byte header, then a 28-bit "syncsafe" size): bare MPEG audio frames."""
    assert data[:3] == b"ID3"
    size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
    return data[10 + size:]


# ---- 3D models --------------------------------------------------------------------------------------------------


def glb(document: dict | None = None) -> bytes:
    """A glTF 2.0 binary: header, a JSON chunk (padded with spaces), a BIN chunk holding one triangle."""
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32).tobytes()
    document = document if document is not None else {
        "asset": {"version": "2.0"},
        "buffers": [{"byteLength": len(positions)}],
        "bufferViews": [{"buffer": 0, "byteLength": len(positions)}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                       "min": [0, 0, 0], "max": [1, 1, 0]}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}], "scene": 0,
    }
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(positions), b"BIN\0") + positions
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks
