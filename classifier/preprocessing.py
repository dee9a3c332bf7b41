"""Image preprocessing shared by training and serving.

This module is the single source of truth for what the network sees:

    decode -> zoom by ``zoom`` (bilinear) -> ``crop_size`` crop -> normalise -> zero-pad to ``input_size``

Training imports it so the model is trained on exactly the tensors it will be
served.  Every function here is pure (given the same inputs and seed it returns
the same output) and depends only on Pillow, numpy and torch.
"""

from __future__ import annotations

import contextlib
import io
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

CropMode = Literal["random", "center"]


class ImageDecodeError(ValueError):
    """The request bytes are not an image we can serve. The message is shown to the client."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of the serving/training preprocessing. Saved into the model's metadata."""

    zoom: float = 1.5
    crop_size: int = 100
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Pillow's own default allows ~179 MP before refusing; a 30000x30000 PNG of a
    # few KB would otherwise allocate 2.7 GB in the worker.
    max_image_pixels: int = 40_000_000
    background: tuple[int, int, int] = field(default=(255, 255, 255))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std", "background"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass(frozen=True)
class CropBox:
    """A crop in the coordinates of the zoomed image: ``[left, top, left + width, top + height)``."""

    left: int
    top: int
    width: int
    height: int

    def as_list(self) -> list[int]:
        return [self.left, self.top, self.left + self.width, self.top + self.height]


# --------------------------------------------------------------------------- decode


def decode_image(
    data: bytes | bytearray,
    max_pixels: int = PreprocessConfig.max_image_pixels,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Decode encoded image bytes into an upright RGB image.

    Applies the EXIF orientation, keeps only the first frame of animations, and
    converts grayscale, 16-bit, palette, CMYK and alpha images to RGB (alpha is
    composited onto ``background``).

    Raises:
        ImageDecodeError: with a message naming the problem, for anything that is
            not a complete image of a sane size.
    """
    if not data:
        raise ImageDecodeError("empty body: send the image bytes as the request body")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageDecodeError(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
            img.load()  # decode now, so truncated files fail here rather than later
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("body is not an image that Pillow can identify (expected PNG, JPEG, WebP, GIF, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"image could not be decoded ({type(exc).__name__}: {exc}); is the file truncated?") from None
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    with contextlib.suppress(Exception):  # a corrupt EXIF block should not cost the user the prediction
        img = ImageOps.exif_transpose(img)
    return to_rgb(img, background)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    16-bit and 32-bit grey images are rescaled to 8 bits (Pillow's own conversion
    would clip them), and transparency is composited onto ``background``.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if img.mode.startswith("I;16"):
            peak = 65535.0
        elif img.mode == "F":
            peak = 1.0 if top <= 1.0 else 255.0  # float images are either [0, 1] or [0, 255]
        else:  # 32-bit integers: take the smallest usual range that holds the data
            peak = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        grey = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


# --------------------------------------------------------------------------- geometry


def zoomed_size(width: int, height: int, zoom: float) -> tuple[int, int]:
    """Size of the image after zooming, rounded half up and at least one pixel."""
    return max(1, int(width * zoom + 0.5)), max(1, int(height * zoom + 0.5))


def choose_crop(zoomed_w: int, zoomed_h: int, crop_size: int, mode: CropMode, rng: random.Random | None = None) -> CropBox:
    """Pick a ``crop_size`` square inside the zoomed image.

    Where the zoomed image is smaller than ``crop_size`` in a dimension, the crop
    takes all of that dimension (it is not an error: the rest is padding).
    Random positions are uniform over every valid integer offset.
    """
    width, height = min(crop_size, zoomed_w), min(crop_size, zoomed_h)
    if mode == "center":
        left, top = (zoomed_w - width) // 2, (zoomed_h - height) // 2
    elif mode == "random":
        rng = rng if rng is not None else random.Random()
        left, top = rng.randint(0, zoomed_w - width), rng.randint(0, zoomed_h - height)
    else:
        raise ValueError(f"Invalid crop mode {mode!r}. Only 'random' and 'center' are supported.")
    return CropBox(left, top, width, height)


def _source_taps(start: int, length: int, in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis for output pixels ``start .. start+length-1``.

    Uses the pixel-centre mapping of ``F.interpolate(..., align_corners=False)``,
    ``src = (dst + 0.5) * in/out - 0.5`` clamped at 0, so a window computed here
    equals that window of a full resize. Coordinates are float64: in float32 a
    coordinate near 500 is only good to ~3e-5, which would show in the weights.
    """
    scale = in_size / out_size
    dst = torch.arange(start, start + length, dtype=torch.float64)
    src = ((dst + 0.5) * scale - 0.5).clamp(min=0.0)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    return lo, hi, (src - lo).clamp(0.0, 1.0).float()


def zoom_crop(img: Image.Image, box: CropBox, zoom: float) -> torch.Tensor:
    """Zoom an RGB image and cut out ``box``, touching only the source pixels the box needs.

    Returns a float ``(3, box.height, box.width)`` tensor in [0, 1]. A 4000x3000
    photo would otherwise be resampled in full to 6000x4500 to keep 100x100 of it.
    Equal to :func:`zoom_crop_naive` within float32 rounding (tests use 1e-5).
    """
    zw, zh = zoomed_size(img.width, img.height, zoom)
    y0, y1, wy = _source_taps(box.top, box.height, img.height, zh)
    x0, x1, wx = _source_taps(box.left, box.width, img.width, zw)
    # Cut the source window out in Pillow so only it is copied and converted to float.
    top, bottom = int(y0.min()), int(y1.max()) + 1
    left, right = int(x0.min()), int(x1.max()) + 1
    window = pil_to_tensor(img.crop((left, top, right, bottom))).float().div_(255.0)
    y0, y1, x0, x1 = y0 - top, y1 - top, x0 - left, x1 - left
    rows = window[:, y0, :] * (1 - wy).view(1, -1, 1) + window[:, y1, :] * wy.view(1, -1, 1)
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx


def zoom_crop_naive(img: Image.Image, box: CropBox, zoom: float) -> torch.Tensor:
    """Reference implementation: resize the whole image (in float64), then crop. Used by tests."""
    zw, zh = zoomed_size(img.width, img.height, zoom)
    image = pil_to_tensor(img).double().div(255.0)
    zoomed = F.interpolate(image[None], size=(zh, zw), mode="bilinear", align_corners=False)[0]
    return zoomed[:, box.top : box.top + box.height, box.left : box.left + box.width].float()


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image to a ``(3, H, W)`` uint8 tensor."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


# --------------------------------------------------------------------------- tensor


def normalize_and_pad(
    crop: torch.Tensor, input_size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """Normalise a ``(3, h, w)`` crop in [0, 1] and centre it in a zero ``(3, input_size, input_size)`` tensor.

    The padding is exactly zero in the normalised space, i.e. what the network sees.
    """
    _, height, width = crop.shape
    if width > input_size or height > input_size:
        raise ValueError(f"crop {width}x{height} does not fit in input size {input_size}")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = torch.zeros(3, input_size, input_size)
    top, left = (input_size - height) // 2, (input_size - width) // 2
    out[:, top : top + height, left : left + width] = (crop - mean_t) / std_t
    return out


def zoom_crop_pad(
    img: Image.Image, config: PreprocessConfig, mode: CropMode = "random", rng: random.Random | None = None
) -> tuple[torch.Tensor, CropBox]:
    """The whole per-image pipeline after decoding: returns the network input and the crop used."""
    zw, zh = zoomed_size(img.width, img.height, config.zoom)
    box = choose_crop(zw, zh, config.crop_size, mode, rng)
    crop = zoom_crop(img, box, config.zoom)
    return normalize_and_pad(crop, config.input_size, config.mean, config.std), box


def preprocess_bytes(
    data: bytes | bytearray,
    config: PreprocessConfig,
    mode: CropMode = "random",
    seed: int | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[torch.Tensor, CropBox]:
    """Decode and preprocess one request body. ``seed`` makes a random crop reproducible.

    ``timings``, when given, receives ``decode`` seconds (the serving metrics split decoding from the rest).
    """
    started = time.perf_counter()
    img = decode_image(data, config.max_image_pixels, config.background)
    if timings is not None:
        timings["decode"] = time.perf_counter() - started
    rng = random.Random(seed) if seed is not None else None
    return zoom_crop_pad(img, config, mode, rng)
