"""A Flux text-to-image workflow (API and UI format) and what a ComfyUI worker running it would report: the
recorded /object_info of ComfyUI 0.3.64, with its loaders listing the model files the workflow names."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from comfygate.platform.engines import Capabilities

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "comfyui-0.3.64-object_info.json"

UNET, T5, CLIP_L, VAE = "flux1-dev.safetensors", "t5xxl_fp16.safetensors", "clip_l.safetensors", "ae.safetensors"
MODELS = {"diffusion_models": [UNET], "text_encoders": [CLIP_L, T5], "vae": [VAE]}
FLUX_ONLY_NODES = ("DualCLIPLoader", "FluxGuidance", "EmptySD3LatentImage")  # not among comfygate's own nodes

FLUX_PROMPT: dict[str, dict[str, Any]] = {
    "10": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET, "weight_dtype": "default"}},
    "11": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": T5, "clip_name2": CLIP_L, "type": "flux",
                                                     "device": "default"}},
    "12": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["11", 0]}},
    "33": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["11", 0]}},
    "35": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0], "guidance": 3.5}},
    "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "31": {"class_type": "KSampler", "inputs": {
        "model": ["10", 0], "seed": 7, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["35", 0], "negative": ["33", 0], "latent_image": ["27", 0], "denoise": 1.0}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["31", 0], "vae": ["12", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "flux"}},
}


def flux_prompt() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(FLUX_PROMPT)


def reference_object_info(*, with_models: bool = True, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """ComfyUI 0.3.64's /object_info; ``with_models``: its loaders list the Flux files, as on a host that has
    them (the recording was made with empty model folders)."""
    info = json.loads(REFERENCE.read_text())
    for name in without:
        del info[name]
    if with_models:
        for node, inputs in (("UNETLoader", {"unet_name": [UNET]}),
                             ("DualCLIPLoader", {"clip_name1": [CLIP_L, T5], "clip_name2": [CLIP_L, T5]}),
                             ("VAELoader", {"vae_name": [VAE, "pixel_space"]})):
            if node in info:
                for name, files in inputs.items():
                    info[node]["input"]["required"][name][0] = files
    return info


def flux_capabilities(*, with_models: bool = True, without: tuple[str, ...] = ()) -> Capabilities:
    return Capabilities(object_info=reference_object_info(with_models=with_models, without=without),
                        models=MODELS if with_models else {})


def _ui_node(node_id: int, type_: str, widgets: list[Any], inputs: list[tuple[str, str, int]],
             outputs: list[tuple[str, list[int]]]) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": 0, "mode": 0,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": t, "type": t, "links": links} for t, links in outputs],
            "properties": {"Node name for S&R": type_}, "widgets_values": widgets}


def flux_ui_workflow() -> dict[str, Any]:
    """FLUX_PROMPT as ComfyUI's editor saves it: widget values by position (KSampler's seed followed by its
    control_after_generate widget), links as [id, from node, from slot, to node, to slot, type]."""
    links = [[1, 11, 0, 6, 0, "CLIP"], [2, 11, 0, 33, 0, "CLIP"], [3, 6, 0, 35, 0, "CONDITIONING"],
             [4, 10, 0, 31, 0, "MODEL"], [5, 35, 0, 31, 1, "CONDITIONING"], [6, 33, 0, 31, 2, "CONDITIONING"],
             [7, 27, 0, 31, 3, "LATENT"], [8, 31, 0, 8, 0, "LATENT"], [9, 12, 0, 8, 1, "VAE"],
             [10, 8, 0, 9, 0, "IMAGE"]]
    nodes = [
        _ui_node(10, "UNETLoader", [UNET, "default"], [], [("MODEL", [4])]),
        _ui_node(11, "DualCLIPLoader", [T5, CLIP_L, "flux", "default"], [], [("CLIP", [1, 2])]),
        _ui_node(12, "VAELoader", [VAE], [], [("VAE", [9])]),
        _ui_node(6, "CLIPTextEncode", ["a red fox in the snow"], [("clip", "CLIP", 1)], [("CONDITIONING", [3])]),
        _ui_node(33, "CLIPTextEncode", [""], [("clip", "CLIP", 2)], [("CONDITIONING", [6])]),
        _ui_node(35, "FluxGuidance", [3.5], [("conditioning", "CONDITIONING", 3)], [("CONDITIONING", [5])]),
        _ui_node(27, "EmptySD3LatentImage", [1024, 1024, 1], [], [("LATENT", [7])]),
        _ui_node(31, "KSampler", [7, "fixed", 20, 1.0, "euler", "simple", 1.0],
                 [("model", "MODEL", 4), ("positive", "CONDITIONING", 5), ("negative", "CONDITIONING", 6),
                  ("latent_image", "LATENT", 7)], [("LATENT", [8])]),
        _ui_node(8, "VAEDecode", [], [("samples", "LATENT", 8), ("vae", "VAE", 9)], [("IMAGE", [10])]),
        _ui_node(9, "SaveImage", ["flux"], [("images", "IMAGE", 10)], []),
    ]
    return {"id": "0b5f7c1e-1d2a-4e3b-9c4d-5e6f7a8b9c0d", "revision": 0, "last_node_id": 35, "last_link_id": 10,
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}
