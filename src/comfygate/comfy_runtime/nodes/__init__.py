"""The built-in node pack. It registers like any third-party pack: through NODE_CLASS_MAPPINGS.

IMAGE is a float32 tensor [B, H, W, C] in 0..1; MASK is [B, H, W] (a bare [H, W] is accepted as input).
"""

from .files import LoadImage, PreviewImage, SaveImage
from .filters import ImageBlur, ImageSharpen
from .image import (
    EmptyImage,
    ImageCompositeMasked,
    ImageCrop,
    ImageInvert,
    ImagePadForOutpaint,
    ImageScale,
    ImageScaleBy,
)
from .mask import ImageToMask, MaskToImage, SolidMask

NODE_CLASS_MAPPINGS = {
    "EmptyImage": EmptyImage,
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "ImageInvert": ImageInvert,
    "ImageBlur": ImageBlur,
    "ImageSharpen": ImageSharpen,
    "ImageCrop": ImageCrop,
    "ImagePadForOutpaint": ImagePadForOutpaint,
    "ImageToMask": ImageToMask,
    "MaskToImage": MaskToImage,
    "SolidMask": SolidMask,
    "ImageCompositeMasked": ImageCompositeMasked,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImage": "Load Image",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImageInvert": "Invert Image",
    "ImageCrop": "Image Crop",
    "ImagePadForOutpaint": "Pad Image for Outpainting",
    "ImageToMask": "Convert Image to Mask",
    "MaskToImage": "Convert Mask to Image",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
