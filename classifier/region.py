"""JPEG region decoding: decode only the source window a crop needs, with the same pixels as a full decode.

:mod:`classifier.jpeg_region` binds libjpeg; this module maps the crop to stored JPEG coordinates (EXIF orientation
included), decodes that window and finishes the crop from it. Anything it cannot serve exactly is decoded in full.
"""

from __future__ import annotations

import logging
import random
import time

import numpy as np
import torch
from PIL import Image

from classifier import jpeg_region
from classifier.decoding import decode_image, exif_transpose_method, upright_size
from classifier.transforms import (
    CropBox,
    CropMode,
    PreprocessConfig,
    choose_crop,
    normalize_and_pad,
    source_window,
    zoom_crop_window,
    zoomed_size,
)

logger = logging.getLogger(__name__)


def region_decodable(img: Image.Image, data: bytes | bytearray) -> bool:
    """Whether the region decoder gives exactly what decode_image would: a JPEG (or the first frame of an MPO,
    which is one) in a colour space libjpeg converts as Pillow does, and complete. Pillow refuses a truncated
    JPEG even when the cut is below the crop; a file ending in its EOI marker cannot be cut inside the scan."""
    return (
        img.format in ("JPEG", "MPO")
        and img.mode in ("RGB", "L")
        and bytes(data[-2:]) == b"\xff\xd9"
        and jpeg_region.unavailable_reason() is None
    )


def stored_window(
    window: tuple[int, int, int, int], method: Image.Transpose | None, width: int, height: int
) -> tuple[int, int, int, int]:
    """Map ``(left, top, right, bottom)`` in upright coordinates to the stored image (``width`` x ``height``)."""
    left, top, right, bottom = window
    corners = [_stored_pixel(u, v, method, width, height) for u, v in ((left, top), (right - 1, bottom - 1))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def _stored_pixel(u: int, v: int, method: Image.Transpose | None, width: int, height: int) -> tuple[int, int]:
    """The stored pixel that lands at upright ``(u, v)`` after ``method``."""
    if method is None:
        return u, v
    return {
        Image.Transpose.FLIP_LEFT_RIGHT: (width - 1 - u, v),
        Image.Transpose.ROTATE_180: (width - 1 - u, height - 1 - v),
        Image.Transpose.FLIP_TOP_BOTTOM: (u, height - 1 - v),
        Image.Transpose.TRANSPOSE: (v, u),
        Image.Transpose.ROTATE_270: (v, height - 1 - u),
        Image.Transpose.TRANSVERSE: (width - 1 - v, height - 1 - u),
        Image.Transpose.ROTATE_90: (width - 1 - v, u),
    }[method]


def preprocess_jpeg_region(
    img: Image.Image,
    data: bytes | bytearray,
    config: PreprocessConfig,
    mode: CropMode,
    rng: random.Random | None,
    timings: dict[str, float] | None = None,
    started: float = 0.0,
) -> tuple[torch.Tensor, CropBox]:
    """preprocess_bytes for a JPEG, decoding only the crop's source window (plus libjpeg's margins)."""
    method = exif_transpose_method(img)
    width, height = upright_size(img.width, img.height, method)
    box = choose_crop(*zoomed_size(width, height, config.zoom), config.crop_size, mode, rng)
    window = source_window(box, config.zoom, width, height)
    try:
        pixels = decode_upright_window(img, data, window, method)
    except jpeg_region.JpegRegionError as exc:
        # libjpeg refused the rows the crop needs; Pillow decides (and names the problem) as it always did.
        logger.debug("region decode failed (%s); decoding in full with Pillow", exc)
        pixels = None
    if pixels is None:
        pixels = np.asarray(decode_image(data, config.max_image_pixels, config.background).crop(window))
    if timings is not None:
        timings["decode"] = time.perf_counter() - started
    tensor = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)
    crop = zoom_crop_window(tensor, window[:2], (width, height), box, config.zoom)
    return normalize_and_pad(crop, config.input_size, config.mean, config.std), box


def decode_upright_window(
    img: Image.Image, data: bytes | bytearray, window: tuple[int, int, int, int], method: Image.Transpose | None
) -> np.ndarray | None:
    """Pixels ``(left, top, right, bottom)`` of the upright JPEG as ``(h, w, 3)`` uint8, decoding only around them.

    Equal to ``np.asarray(decode_image(data).crop(window))``. None where the region decoder cannot serve this
    image (see :func:`classifier.jpeg_region.decode_region`).
    """
    left, top, right, bottom = stored_window(window, method, img.width, img.height)
    pixels = jpeg_region.decode_region(data, left, top, right - left, bottom - top)
    if pixels is None or method is None:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(method))
