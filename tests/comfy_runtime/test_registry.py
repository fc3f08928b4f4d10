import subprocess
import sys

import pytest

from comfygate.comfy_runtime import NodePackError, NodeRegistry, create_registry
from comfygate.comfy_runtime.nodes import NODE_CLASS_MAPPINGS

BUILTINS = [
    "EmptyImage", "LoadImage", "SaveImage", "PreviewImage", "ImageScale", "ImageScaleBy", "ImageInvert",
    "ImageBlur", "ImageSharpen", "ImageCrop", "ImagePadForOutpaint", "ImageToMask", "MaskToImage",
    "SolidMask", "ImageCompositeMasked",
    # Diffusion nodes (nodes/diffusion/), loaders bound to the registry's model library.
    "CheckpointLoaderSimple", "VAELoader", "LoraLoader", "LoraLoaderModelOnly", "UNETLoader", "CLIPLoader",
    "UpscaleModelLoader", "CLIPSetLastLayer", "CLIPTextEncode", "ConditioningCombine", "ConditioningSetArea",
    "EmptyLatentImage", "LatentUpscale", "LatentUpscaleBy", "SetLatentNoiseMask", "KSampler", "KSamplerAdvanced",
    "VAEDecode", "VAEEncode", "VAEEncodeForInpaint", "ImageUpscaleWithModel",
]


def test_registries_are_independent():
    first, second = create_registry(), create_registry()
    first.register_pack({"Extra": NODE_CLASS_MAPPINGS["ImageInvert"]}, source="test")
    assert "Extra" in first and "Extra" not in second
    assert sorted(BUILTINS) == second.names()


def test_duplicate_class_type_is_rejected_and_nothing_is_added():
    registry = create_registry()
    with pytest.raises(NodePackError, match="EmptyImage.*builtin"):
        registry.register_pack({"New": NODE_CLASS_MAPPINGS["ImageInvert"],
                                "EmptyImage": NODE_CLASS_MAPPINGS["EmptyImage"]}, source="other")
    assert "New" not in registry


class NotANode:
    pass


@pytest.mark.parametrize("pack", [{"Bad": NotANode}, {"Bad": 3}, {"": NODE_CLASS_MAPPINGS["ImageInvert"]}])
def test_malformed_nodes_are_rejected(pack):
    with pytest.raises(NodePackError):
        NodeRegistry().register_pack(pack)


class BadInputTypes(NODE_CLASS_MAPPINGS["ImageInvert"]):
    @classmethod
    def INPUT_TYPES(cls):
        raise OSError("models folder is not mounted")


class TooManyListFlags(NODE_CLASS_MAPPINGS["ImageInvert"]):
    OUTPUT_IS_LIST = (True, False)


def test_every_problem_of_a_pack_is_named_and_nothing_is_added():
    registry = create_registry()
    with pytest.raises(NodePackError) as caught:
        registry.register_pack({"Fine": NODE_CLASS_MAPPINGS["ImageInvert"], "Broken": BadInputTypes,
                                "Lists": TooManyListFlags, "SaveImage": NODE_CLASS_MAPPINGS["SaveImage"]},
                               source="tests")
    message = str(caught.value)
    assert message.startswith("pack 'tests': ")
    assert "node 'Broken': INPUT_TYPES() raised OSError: models folder is not mounted" in message
    assert "node 'Lists': OUTPUT_IS_LIST must be" in message
    assert "'SaveImage' is already registered by 'builtin'" in message
    assert "Fine" not in registry


class ListIn(NODE_CLASS_MAPPINGS["ImageInvert"]):
    INPUT_IS_LIST = True


class ListOut(NODE_CLASS_MAPPINGS["ImageInvert"]):
    OUTPUT_IS_LIST = (True,)
    RETURN_NAMES = ("images",)


def test_list_nodes_register_and_object_info_shows_output_is_list():
    registry = NodeRegistry()
    registry.register_pack({"ListIn": ListIn, "ListOut": ListOut}, display_names={"ListOut": "List out"},
                           source="tests")
    assert registry.object_info("ListIn")["output_is_list"] == [False]
    out = registry.object_info("ListOut")
    assert (out["output_is_list"], out["output_name"], out["display_name"]) == ([True], ["images"], "List out")
    assert registry.schemas()["ListOut"].output_is_list == (True,)


def test_the_builtin_pack_is_reported_like_any_other():
    (builtin,) = create_registry().pack_reports
    assert (builtin.name, builtin.loaded, builtin.error) == ("builtin", True, "")
    assert sorted(builtin.node_types) == sorted(BUILTINS)
    assert builtin.path.endswith("comfy_runtime/nodes")


def test_importing_the_runtime_does_not_import_torch():
    code = (
        "import sys; import comfygate.comfy_runtime as r; from comfygate.comfy_runtime import validation, "
        "executor, registry, inputs; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Inputs whose choices are the model files of an install: ours lists this machine's files (none here).
FILE_CHOICES = {("CheckpointLoaderSimple", "ckpt_name"), ("VAELoader", "vae_name"), ("LoraLoader", "lora_name"),
                ("LoraLoaderModelOnly", "lora_name"), ("UNETLoader", "unet_name"), ("CLIPLoader", "clip_name"),
                ("UpscaleModelLoader", "model_name")}
# Inputs where this runtime offers part of ComfyUI's choices; the others fail validation (value_not_in_list)
# instead of running differently. Why, per input:
NARROWED_CHOICES = {
    ("UNETLoader", "weight_dtype"): "fp8 weights need ComfyUI's fp8 kernels",
    ("CLIPLoader", "type"): "only the Stable Diffusion text encoders are built",
    ("LatentUpscale", "upscale_method"): "bislerp is not implemented",
    ("LatentUpscaleBy", "upscale_method"): "bislerp is not implemented",
    ("KSampler", "sampler_name"): "some newer samplers (cfg_pp, res_multistep, sa_solver, ...) are not implemented",
    ("KSamplerAdvanced", "sampler_name"): "as KSampler",
}


def _combo_choices(entry: list) -> list:
    """A COMBO's choices in either spelling: [choices, {...}] or ["COMBO", {"options": choices}]."""
    if entry[0] == "COMBO":
        return list(entry[1].get("options", []))
    return list(entry[0])


@pytest.mark.parametrize("class_type", BUILTINS)
def test_object_info_matches_comfyui(registry, reference, class_type):
    ours, theirs = registry.object_info(class_type), reference[class_type]
    for key in ("output", "output_name", "output_is_list", "name", "output_node"):
        assert ours[key] == theirs[key], key
    for section in ("required", "optional"):
        assert ours["input_order"].get(section) == theirs["input_order"].get(section), section
        for name, their_entry in theirs["input"].get(section, {}).items():
            our_entry = ours["input"][section][name]
            their_options = their_entry[1] if len(their_entry) > 1 else {}
            our_options = our_entry[1] if len(our_entry) > 1 else {}
            if isinstance(their_entry[0], list) or their_entry[0] == "COMBO":
                assert isinstance(our_entry[0], list), name
                ours_choices, their_choices = _combo_choices(our_entry), _combo_choices(their_entry)
                if their_options.get("image_upload"):  # choices are the files of the input folder
                    assert our_options.get("image_upload") is True
                elif (class_type, name) in FILE_CHOICES:
                    assert ours_choices == [], name  # no model files in this test's registry
                elif (class_type, name) in NARROWED_CHOICES:
                    assert ours_choices and set(ours_choices) < set(their_choices), name
                else:
                    assert ours_choices == their_choices, name
            else:
                assert our_entry[0] == their_entry[0], name
            for option in ("default", "min", "max", "step"):
                assert our_options.get(option) == their_options.get(option), (name, option)
