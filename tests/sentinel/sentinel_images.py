"""Real test images, built with Pillow and numpy, and the candidates that wrap them.

Natural-looking images (``NATURAL``) must pass every pixel check at the default policy; each failure image
must be caught by the check named in its builder's docstring.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from comfygate.sentinel import Candidate

# ---- natural-looking images ---------------------------------------------------------------------------------


def scene(size: int = 64) -> Image.Image:
    """A smooth two-way colour gradient with a bright disc and a dark square on it."""
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    rgb = np.stack([
        np.broadcast_to(ramp, (size, size)),  # red grows to the right
        np.broadcast_to(ramp[:, None], (size, size)),  # green grows downwards
        np.full((size, size), 0.3, dtype=np.float32),
    ], axis=-1)
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 8, size // 8, size // 2, size // 2), fill=(250, 240, 30))
    draw.rectangle((size // 2, size // 2, 7 * size // 8, 7 * size // 8), fill=(10, 10, 120))
    return image


def _grain(image: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """Add sensor-like grain: every photo has some."""
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def landscape(size: int = 256, seed: int = 0) -> Image.Image:
    """A "photo": sky gradient, sun, two rows of hills, a textured meadow, a few trees."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    top, horizon = np.array([40, 90, 190], np.float32), np.array([190, 215, 240], np.float32)
    sky = np.broadcast_to(top + (horizon - top) * t, (size, size, 3))
    image = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    sun_x, sun_r = int(size * rng.uniform(0.2, 0.8)), size // 10
    draw.ellipse((sun_x - sun_r, size // 8, sun_x + sun_r, size // 8 + 2 * sun_r), fill=(255, 235, 150))
    for base, colour in ((0.55, (90, 120, 150)), (0.7, (60, 130, 60))):
        xs = np.linspace(0, size, 9)
        ys = size * (base + 0.08 * rng.standard_normal(9))
        draw.polygon([(0, size), *zip(xs.tolist(), ys.tolist(), strict=True), (size, size)], fill=colour)
    meadow = np.asarray(image, dtype=np.float32).copy()
    texture = rng.normal(0.0, 18.0, (size, size, 1)) * np.array([0.6, 1.0, 0.4])
    meadow[int(size * 0.8):] += texture[int(size * 0.8):]
    image = Image.fromarray(np.clip(meadow, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = int(rng.uniform(0, size)), int(size * rng.uniform(0.72, 0.9))
        draw.rectangle((x - size // 80, y, x + size // 80, y + size // 12), fill=(80, 50, 30))
        draw.ellipse((x - size // 18, y - size // 10, x + size // 18, y + size // 60), fill=(30, 90, 40))
    return _grain(image, rng, 3.0)


def portrait(size: int = 256, seed: int = 1) -> Image.Image:
    """A "photo" of a face: warm vignette background, head, eyes, mouth, hair."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    falloff = 1.0 - 0.8 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    background = np.stack([150 * falloff, 110 * falloff, 90 * falloff], axis=-1)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    s = size
    draw.ellipse((0.25 * s, 0.1 * s, 0.75 * s, 0.45 * s), fill=(60, 40, 25))  # hair
    draw.ellipse((0.3 * s, 0.2 * s, 0.7 * s, 0.75 * s), fill=(225, 180, 150))  # face
    for x in (0.4, 0.6):
        draw.ellipse(((x - 0.04) * s, 0.4 * s, (x + 0.04) * s, 0.45 * s), fill=(250, 250, 250))
        draw.ellipse(((x - 0.015) * s, 0.41 * s, (x + 0.015) * s, 0.44 * s), fill=(50, 80, 120))
    draw.arc((0.4 * s, 0.52 * s, 0.6 * s, 0.65 * s), 20, 160, fill=(160, 60, 60), width=max(1, s // 60))
    draw.rectangle((0.2 * s, 0.78 * s, 0.8 * s, s), fill=(40, 60, 110))  # shoulders
    return _grain(image.filter(ImageFilter.GaussianBlur(0.6)), rng, 2.5)


def city(size: int = 256, seed: int = 2) -> Image.Image:
    """A "photo" of a street at dusk: buildings of random heights with lit windows."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    dusk = np.broadcast_to(np.array([30, 20, 70], np.float32) * (1 - t) + np.array([230, 120, 80]) * t,
                           (size, size, 3))
    image = Image.fromarray(dusk.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    x = 0
    while x < size:
        width = int(rng.uniform(0.08, 0.2) * size)
        top = int(rng.uniform(0.2, 0.6) * size)
        shade = int(rng.uniform(25, 70))
        draw.rectangle((x, top, x + width, size), fill=(shade, shade, shade + 10))
        for wy in range(top + 4, size - 4, max(4, size // 24)):
            for wx in range(x + 3, x + width - 3, max(4, size // 32)):
                if rng.random() < 0.5:
                    draw.rectangle((wx, wy, wx + max(1, size // 90), wy + max(1, size // 70)), fill=(250, 210, 120))
        x += width + 1
    return _grain(image, rng, 2.0)


def abstract(size: int = 256, seed: int = 3) -> Image.Image:
    """Overlapping translucent shapes of random colours on a soft diagonal gradient."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    diagonal = (ramp[:, None] + ramp[None, :]) / 2
    base = np.stack([200 * diagonal + 30, 80 + 100 * (1 - diagonal), 160 * diagonal + 60], axis=-1)
    image = Image.fromarray(base.astype(np.uint8)).convert("RGBA")
    for _ in range(12):
        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        x0, y0 = rng.uniform(0, size, 2)
        r = rng.uniform(0.05, 0.3) * size
        colour = (*rng.integers(0, 256, 3).tolist(), 150)
        if rng.random() < 0.5:
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
        else:
            draw.rectangle((x0 - r, y0 - r / 2, x0 + r, y0 + r / 2), fill=colour)
        image = Image.alpha_composite(image, layer)
    return image.convert("RGB")


NATURAL = {"scene": scene, "landscape": landscape, "portrait": portrait, "city": city, "abstract": abstract}


# ---- failure images --------------------------------------------------------------------------------------------


def flat(size: int = 64, colour: tuple[int, int, int] = (90, 120, 200)) -> Image.Image:
    """blank: one uniform colour (black and white included)."""
    return Image.new("RGB", (size, size), colour)


def uniform_noise(size: int = 64, seed: int = 0) -> Image.Image:
    """noise: independent uniform RGB noise."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def gaussian_noise(size: int = 64, seed: int = 0) -> Image.Image:
    """noise: independent grey Gaussian noise."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.clip(rng.normal(128, 40, (size, size)), 0, 255).astype(np.uint8))


def blurred(image: Image.Image, radius: float = 8.0) -> Image.Image:
    """blur (soft flag): a heavily out-of-focus copy."""
    return image.filter(ImageFilter.GaussianBlur(radius))


def mostly_white(size: int = 128) -> Image.Image:
    """colour_entropy (soft flag): a white page with one small dark mark; not blank, but nearly one colour."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((size // 4, size // 4, size // 4 + size // 6, size // 4 + size // 6),
                                    fill=(20, 20, 20))
    return image


# Near-duplicates of a picture: what a pipeline returns when it repeats itself up to encoding.
def brightened(image: Image.Image, factor: float = 1.06) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def reencoded(image: Image.Image, quality: int = 80) -> Image.Image:
    return Image.open(io.BytesIO(encode(image, "JPEG", quality=quality))).convert("RGB")


def shifted(image: Image.Image, pixels: int = 1) -> Image.Image:
    """The picture moved ``pixels`` to the right, the left edge repeated."""
    array = np.asarray(image)
    return Image.fromarray(np.concatenate([array[:, :pixels], array[:, :-pixels]], axis=1))


# ---- encoding and candidates -----------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def truncated_png(image: Image.Image) -> bytes:
    """decode: a PNG cut in half, as a crashed writer leaves it."""
    data = encode(image)
    return data[: len(data) // 2]


def pixels_of(image: Image.Image) -> np.ndarray:
    """float32 [H, W, C] in 0..1, as a workflow would have produced before encoding."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def nan_pixels(image: Image.Image) -> np.ndarray:
    """finite: the raw values with a NaN patch, as a precision fault leaves them (PNG would hide it)."""
    pixels = pixels_of(image)
    pixels[: pixels.shape[0] // 4, : pixels.shape[1] // 4] = np.nan
    return pixels


def candidate(image: Image.Image, *, with_pixels: bool = True, declared: tuple[int, int] | None = None,
              prompt: str | None = None, request_key: str | None = None) -> Candidate:
    width, height = declared if declared is not None else image.size
    return Candidate(
        data=encode(image), content_type="image/png", expected_width=width, expected_height=height,
        pixels=pixels_of(image) if with_pixels else None, prompt=prompt, request_key=request_key,
    )
