"""Prompts the tests send to the stand-in (and through comfygate to it)."""

from __future__ import annotations

from typing import Any

__all__ = ["every_output"]


def every_output(images: list[Any], prefix: str = "cg") -> dict[str, dict[str, Any]]:
    """One node of every kind that saves or reports something in recording 07 (stills, a preview, animated WEBP
    and PNG, mp4 with audio, WebM, FLAC/MP3/Opus and an audio preview, text, a latent, a GLB mesh), all fed by
    the IMAGE at ``images`` (a link such as ``["1", 0]``). Node ids "101" to "118"."""
    audio = ["106", 0]
    return {
        "102": {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": f"{prefix}/save"}},
        "103": {"class_type": "PreviewImage", "inputs": {"images": images}},
        "104": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": images, "filename_prefix": f"{prefix}/anim",
                                                             "fps": 6.0, "lossless": True, "quality": 80,
                                                             "method": "default"}},
        "105": {"class_type": "SaveAnimatedPNG", "inputs": {"images": images, "filename_prefix": f"{prefix}/apng",
                                                            "fps": 6.0, "compress_level": 4}},
        "106": {"class_type": "EmptyAudio", "inputs": {"duration": 0.5, "sample_rate": 44100, "channels": 2}},
        "107": {"class_type": "CreateVideo", "inputs": {"images": images, "fps": 6.0, "audio": audio}},
        "108": {"class_type": "SaveVideo", "inputs": {"video": ["107", 0], "filename_prefix": f"{prefix}/video",
                                                      "format": "auto", "codec": "auto"}},
        "109": {"class_type": "SaveWEBM", "inputs": {"images": images, "filename_prefix": f"{prefix}/webm",
                                                     "codec": "vp9", "fps": 6.0, "crf": 32.0}},
        "110": {"class_type": "SaveAudio", "inputs": {"audio": audio, "filename_prefix": f"{prefix}/audio"}},
        "111": {"class_type": "SaveAudioMP3", "inputs": {"audio": audio, "filename_prefix": f"{prefix}/audio",
                                                         "quality": "V0"}},
        "112": {"class_type": "SaveAudioOpus", "inputs": {"audio": audio, "filename_prefix": f"{prefix}/audio",
                                                          "quality": "128k"}},
        "113": {"class_type": "PreviewAudio", "inputs": {"audio": audio}},
        "114": {"class_type": "PreviewAny", "inputs": {"source": "hello from PreviewAny"}},
        "115": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "116": {"class_type": "SaveLatent", "inputs": {"samples": ["115", 0], "filename_prefix": f"{prefix}/latent"}},
        "117": {"class_type": "StandinCubeMesh", "inputs": {"size": 1.0}},
        "118": {"class_type": "SaveGLB", "inputs": {"mesh": ["117", 0], "filename_prefix": f"{prefix}/mesh"}},
    }
