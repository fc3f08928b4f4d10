"""The stand-in pack's audio, video and 3D nodes, writing real files with PyAV (and a hand-built .glb).

Input specs follow the recorded ``/object_info`` of ComfyUI 0.3.64; the comfy_api v3 nodes (SaveWEBM,
SaveVideo, CreateVideo) keep that API's spellings: ``["COMBO", {"options": [...]}]`` and hidden inputs as lists.
An AUDIO value is ComfyUI's ``{"waveform": [B, C, N] float tensor, "sample_rate": int}``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .files import save_target, temp_prefix
from .nodes import FILES_KEY, HIDDEN, HIDDEN_V3, PREFIX_TOOLTIP, StandinNode, StandinOutputNode, pictures

__all__ = ["MEDIA_DISPLAY_NAMES", "MEDIA_NODES", "StandinMesh", "StandinVideo"]

OPUS_RATE = 48000  # the only rates libopus takes are divisors of it; ComfyUI resamples to this one too


@dataclass(frozen=True)
class StandinVideo:
    """A VIDEO value: frames [T, H, W, C] in 0..1, their rate, and optional AUDIO."""

    images: torch.Tensor
    fps: float
    audio: dict | None = None


@dataclass(frozen=True)
class StandinMesh:
    """A MESH value as ComfyUI's 3D nodes pass it: vertices [B, V, 3] and triangle faces [B, F, 3]."""

    vertices: torch.Tensor
    faces: torch.Tensor


def _combo(options: list[str], **extra) -> tuple:
    return ("COMBO", {**extra, "multiselect": False, "options": options})


def write_audio(path: Path, waveform: torch.Tensor, sample_rate: int, container: str, codec: str,
                bit_rate: int | None = None, options: dict[str, str] | None = None) -> None:
    """One clip [C, N] into ``path``, converted to whatever sample format and rate the codec takes."""
    channels = int(waveform.shape[0])
    layout = "mono" if channels == 1 else "stereo"
    rate = OPUS_RATE if codec == "libopus" else sample_rate
    samples = np.ascontiguousarray(waveform.detach().cpu().float().numpy()[:2])
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        stream.options = options or {}
        _encode_audio(output, stream, samples, sample_rate, layout)


def _encode_audio(output, stream, samples: np.ndarray, sample_rate: int, layout: str) -> None:
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout,
                                  rate=stream.codec_context.sample_rate,
                                  frame_size=stream.codec_context.frame_size or None)
    for converted in [*resampler.resample(frame), *resampler.resample(None)]:
        for packet in stream.encode(converted):
            output.mux(packet)
    for packet in stream.encode(None):
        output.mux(packet)


def write_video(path: Path, frames: torch.Tensor, fps: float, container: str, codec: str,
                options: dict[str, str] | None = None, audio: dict | None = None) -> None:
    """Frames [T, H, W, C] as a yuv420p video (sizes cut to even numbers), with the audio's first clip if any."""
    images = pictures(frames)
    width, height = images[0].width // 2 * 2 or 2, images[0].height // 2 * 2 or 2
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options or {}
        sound = None
        if audio is not None:
            layout = "mono" if audio["waveform"].shape[1] == 1 else "stereo"
            sound = output.add_stream("aac", rate=int(audio["sample_rate"]), layout=layout)
        for picture in images:
            frame = av.VideoFrame.from_image(picture.convert("RGB").resize((width, height)))
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
        if sound is not None:
            samples = np.ascontiguousarray(audio["waveform"][0].detach().cpu().float().numpy()[:2])
            _encode_audio(output, sound, samples, int(audio["sample_rate"]), sound.layout.name)


class EmptyAudio(StandinNode):
    PYTHON_MODULE = "comfy_extras.nodes_audio"
    CATEGORY = "audio"
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "create"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {
            "duration": ("FLOAT", {"default": 60.0, "min": 0.0, "max": 18446744073709551615, "step": 0.01,
                                   "tooltip": "Duration of the empty audio clip in seconds"}),
            "sample_rate": ("INT", {"default": 44100, "tooltip": "Sample rate of the empty audio clip."}),
            "channels": ("INT", {"default": 2, "min": 1, "max": 2,
                                 "tooltip": "Number of audio channels (1 for mono, 2 for stereo)."})}}

    def create(self, duration: float, sample_rate: int, channels: int):
        length = max(1, int(round(duration * sample_rate)))
        return ({"waveform": torch.zeros((1, channels, length)), "sample_rate": sample_rate},)


class CreateVideo(StandinNode):
    PYTHON_MODULE = "comfy_extras.nodes_video"
    CATEGORY = "image/video"
    DESCRIPTION = "Create a video from images."
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "create"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"images": ("IMAGE", {"tooltip": "The images to create a video from."}),
                             "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0})},
                "optional": {"audio": ("AUDIO", {"tooltip": "The audio to add to the video."})}}

    def create(self, images, fps: float, audio=None):
        return (StandinVideo(images, fps, audio),)


class SaveVideo(StandinOutputNode):
    PYTHON_MODULE = "comfy_extras.nodes_video"
    CATEGORY = "image/video"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {
            "video": ("VIDEO", {"tooltip": "The video to save."}),
            "filename_prefix": ("STRING", {"tooltip": PREFIX_TOOLTIP, "default": "video/ComfyUI", "multiline": False}),
            "format": _combo(["auto", "mp4"], tooltip="The format to save the video as.", default="auto"),
            "codec": _combo(["auto", "h264"], tooltip="The codec to use for the video.", default="auto")},
            "hidden": HIDDEN_V3}

    def save(self, video: StandinVideo, filename_prefix: str, format: str, codec: str,  # noqa: A002
             prompt=None, extra_pnginfo=None):
        target = save_target(self.state.folders.output, filename_prefix)
        write_video(target.folder / target.name(0, "mp4"), video.images, video.fps, "mp4", "libx264",
                    {"crf": "23"}, video.audio)
        return {"ui": {FILES_KEY: [target.record(0, "mp4", "output")], "animated": [True]}}


class SaveWEBM(StandinOutputNode):
    PYTHON_MODULE = "comfy_extras.nodes_video"
    CATEGORY = "image/video"
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {
            "images": ("IMAGE", {}),
            "filename_prefix": ("STRING", {"default": "ComfyUI", "multiline": False}),
            "codec": _combo(["vp9", "av1"]),
            "fps": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
            "crf": ("FLOAT", {"tooltip": "Higher crf means lower quality with a smaller file size, lower crf means "
                                         "higher quality higher filesize.",
                              "default": 32.0, "min": 0, "max": 63.0, "step": 1})},
            "hidden": HIDDEN_V3}

    def save(self, images, filename_prefix: str, codec: str, fps: float, crf: float, prompt=None,
             extra_pnginfo=None):
        # vp9 for both choices: this build's FFmpeg may lack an AV1 encoder, and clients only read the file.
        target = save_target(self.state.folders.output, filename_prefix)
        write_video(target.folder / target.name(0, "webm"), images, fps, "webm", "libvpx-vp9",
                    {"crf": str(int(crf)), "b": "0", "deadline": "realtime", "cpu-used": "8"})
        return {"ui": {FILES_KEY: [target.record(0, "webm", "output")], "animated": [True]}}


class SaveAudio(StandinOutputNode):
    """FLAC into output/ (PreviewAudio: into temp/); MP3 and Opus subclasses change the encoder."""

    PYTHON_MODULE = "comfy_extras.nodes_audio"
    CATEGORY = "audio"
    FUNCTION = "save_audio"
    extension, container, codec, kind = "flac", "flac", "flac", "output"
    QUALITIES: dict[str, tuple[int | None, dict[str, str]]] = {}  # choice -> (bit rate, encoder options)

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        required: dict = {"audio": ("AUDIO",), "filename_prefix": ("STRING", {"default": "audio/ComfyUI"})}
        if cls.QUALITIES:
            choices = list(cls.QUALITIES)
            required["quality"] = (choices, {"default": "V0" if "V0" in choices else "128k"})
        return {"required": required, "hidden": HIDDEN}

    def save_audio(self, audio, filename_prefix: str = "audio/ComfyUI", quality: str = "", prompt=None,
                   extra_pnginfo=None):
        root = self.state.folders.output if self.kind == "output" else self.state.folders.temp
        target = save_target(root, filename_prefix if self.kind == "output" else temp_prefix())
        bit_rate, options = self.QUALITIES.get(quality, (None, {}))
        records = []
        for offset, clip in enumerate(audio["waveform"]):
            write_audio(target.folder / target.name(offset, self.extension), clip, int(audio["sample_rate"]),
                        self.container, self.codec, bit_rate, options)
            records.append(target.record(offset, self.extension, self.kind))
        return {"ui": {"audio": records}}


class SaveAudioMP3(SaveAudio):
    extension, container, codec = "mp3", "mp3", "libmp3lame"
    QUALITIES = {"V0": (None, {"q": "0"}), "128k": (128000, {}), "320k": (320000, {})}


class SaveAudioOpus(SaveAudio):
    extension, container, codec = "opus", "opus", "libopus"
    QUALITIES = {rate: (int(rate[:-1]) * 1000, {}) for rate in ("64k", "96k", "128k", "192k", "320k")}


class PreviewAudio(SaveAudio):
    kind = "temp"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"audio": ("AUDIO",)}, "hidden": HIDDEN}


class StandinCubeMesh(StandinNode):
    """A MESH to feed SaveGLB (ComfyUI makes meshes only from 3D models this stand-in does not have)."""

    CATEGORY = "testing"
    RETURN_TYPES = ("MESH",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"size": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 100.0, "step": 0.01})}}

    def build(self, size: float):
        corners = torch.tensor([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=torch.float32)
        faces = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                              [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
        return (StandinMesh((corners * size)[None], faces[None]),)


def glb_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """A minimal valid binary glTF 2.0: one mesh of triangles (float32 positions, uint32 indices)."""
    positions = np.ascontiguousarray(vertices, dtype=np.float32).tobytes()
    indices = np.ascontiguousarray(faces, dtype=np.uint32).tobytes()
    document = {
        "asset": {"version": "2.0", "generator": "comfyui_standin"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "buffers": [{"byteLength": len(positions) + len(indices)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(positions), "target": 34962},
                        {"buffer": 0, "byteOffset": len(positions), "byteLength": len(indices), "target": 34963}],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(vertices), "type": "VEC3",
             "min": vertices.min(axis=0).tolist(), "max": vertices.max(axis=0).tolist()},
            {"bufferView": 1, "componentType": 5125, "count": int(faces.size), "type": "SCALAR"}],
    }
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned: JSON pads with spaces, BIN with zeros
    binary = positions + indices
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(text), b"JSON") + text
            + struct.pack("<I4s", len(binary), b"BIN\0") + binary)


class SaveGLB(StandinOutputNode):
    PYTHON_MODULE = "comfy_extras.nodes_hunyuan3d"
    CATEGORY = "3d"
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"mesh": ("MESH",), "filename_prefix": ("STRING", {"default": "mesh/ComfyUI"})},
                "hidden": HIDDEN}

    def save(self, mesh: StandinMesh, filename_prefix: str, prompt=None, extra_pnginfo=None):
        target = save_target(self.state.folders.output, filename_prefix)
        records = []
        for offset, (vertices, faces) in enumerate(zip(mesh.vertices, mesh.faces, strict=True)):
            data = glb_bytes(vertices.detach().cpu().numpy(), faces.detach().cpu().numpy())
            (target.folder / target.name(offset, "glb")).write_bytes(data)
            records.append(target.record(offset, "glb", "output"))
        return {"ui": {"3d": records}}


MEDIA_NODES = (EmptyAudio, CreateVideo, SaveVideo, SaveWEBM, SaveAudio, SaveAudioMP3, SaveAudioOpus, PreviewAudio,
               StandinCubeMesh, SaveGLB)
MEDIA_DISPLAY_NAMES = {"EmptyAudio": "Empty Audio", "CreateVideo": "Create Video", "SaveVideo": "Save Video",
                       "SaveAudio": "Save Audio (FLAC)", "SaveAudioMP3": "Save Audio (MP3)",
                       "SaveAudioOpus": "Save Audio (Opus)", "PreviewAudio": "Preview Audio",
                       "StandinCubeMesh": "Cube Mesh (stand-in)"}
