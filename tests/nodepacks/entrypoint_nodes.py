"""A test node pack in ComfyUI's newer entry-point form: ``comfy_entrypoint()`` returns an extension whose
async ``get_node_list()`` lists classic node classes (no ComfyUI internals needed)."""

from __future__ import annotations


class ImageBrightness:
    CATEGORY = "tests/image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05})}}

    def run(self, image, factor):
        return ((image * factor).clamp(0.0, 1.0),)


class TextLength:
    CATEGORY = "tests/text"
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("length",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    def run(self, text):
        return (len(text),)


class TestNodesExtension:
    """Duck-typed like comfy_api's ComfyExtension: on_load() runs before get_node_list()."""

    def __init__(self) -> None:
        self.loaded = False

    async def on_load(self) -> None:
        self.loaded = True

    async def get_node_list(self) -> list[type]:
        if not self.loaded:
            raise RuntimeError("get_node_list() was called before on_load()")
        return [ImageBrightness, TextLength]


async def comfy_entrypoint() -> TestNodesExtension:
    return TestNodesExtension()
