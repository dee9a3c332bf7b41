"""Geometry and tensors: zoom, crop, normalise and pad an RGB image into the network's input.

    zoom by ``zoom`` (bilinear) -> ``crop_size`` crop -> normalise -> zero-pad to ``input_size``

Pure functions of their inputs (a seeded ``random.Random`` for a random crop), shared by training and serving, so
that the model is trained on exactly the tensors it is served.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from classifier.limits import MAX_IMAGE_PIXELS

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

CropMode = Literal["random", "center"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of the serving/training preprocessing. Saved into the model's metadata."""

    zoom: float = 1.5
    crop_size: int = 100
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_image_pixels: int = MAX_IMAGE_PIXELS
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


def source_window(box: CropBox, zoom: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The source pixels ``(left, top, right, bottom)`` that the bilinear zoom reads for ``box``.

    ``width`` x ``height`` is the (upright) source size. For a 100x100 crop at 1.5x this is about 68x68.
    """
    zw, zh = zoomed_size(width, height, zoom)
    y0, y1, _ = _source_taps(box.top, box.height, height, zh)
    x0, x1, _ = _source_taps(box.left, box.width, width, zw)
    return int(x0.min()), int(y0.min()), int(x1.max()) + 1, int(y1.max()) + 1


def zoom_crop_window(
    window: torch.Tensor, origin: tuple[int, int], size: tuple[int, int], box: CropBox, zoom: float
) -> torch.Tensor:
    """Zoom and crop from just the source pixels the box needs.

    Args:
        window: ``(3, h, w)`` uint8 pixels of the source, at least :func:`source_window` of ``box``.
        origin: ``(left, top)`` of ``window`` in the source.
        size: ``(width, height)`` of the whole source image.

    Returns:
        float ``(3, box.height, box.width)`` in [0, 1], equal to :func:`zoom_crop` of the whole image.
    """
    width, height = size
    zw, zh = zoomed_size(width, height, zoom)
    y0, y1, wy = _source_taps(box.top, box.height, height, zh)
    x0, x1, wx = _source_taps(box.left, box.width, width, zw)
    left, top = origin
    window = window.float().div_(255.0)
    y0, y1, x0, x1 = y0 - top, y1 - top, x0 - left, x1 - left
    rows = window[:, y0, :] * (1 - wy).view(1, -1, 1) + window[:, y1, :] * wy.view(1, -1, 1)
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx


def zoom_crop(img: Image.Image, box: CropBox, zoom: float) -> torch.Tensor:
    """Zoom an RGB image and cut out ``box``, touching only the source pixels the box needs.

    Returns a float ``(3, box.height, box.width)`` tensor in [0, 1]. A 4000x3000
    photo would otherwise be resampled in full to 6000x4500 to keep 100x100 of it.
    Equal to :func:`zoom_crop_naive` within float32 rounding (tests use 1e-6).
    """
    left, top, right, bottom = source_window(box, zoom, img.width, img.height)
    # Cut the source window out in Pillow so only it is copied and converted to float.
    window = pil_to_tensor(img.crop((left, top, right, bottom)))
    return zoom_crop_window(window, (left, top), img.size, box, zoom)


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


def pad_offsets(height: int, width: int, input_size: int) -> tuple[int, int]:
    """``(top, left)`` of an ``height x width`` crop centred in the ``input_size`` square (extra pixel bottom/right)."""
    return (input_size - height) // 2, (input_size - width) // 2


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
    top, left = pad_offsets(height, width, input_size)
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
