"""A test node pack in ComfyUI's format: carries a caption next to an image, for the prompt-alignment gate."""


class CaptionedImage:
    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"image": ("IMAGE",), "text": ("STRING", {"default": "", "multiline": True})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "caption"
    CATEGORY = "tests"

    def caption(self, image, text):
        return (image,)


NODE_CLASS_MAPPINGS = {"CaptionedImage": CaptionedImage}
