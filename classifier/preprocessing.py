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
import logging
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from classifier import jpeg_region

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

logger = logging.getLogger(__name__)

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


def open_image(data: bytes | bytearray, max_pixels: int = PreprocessConfig.max_image_pixels) -> Image.Image:
    """Identify the image and read its header, without decoding a pixel.

    The size limit is enforced here, so a decompression bomb is refused before any pixel is decoded.

    Raises:
        ImageDecodeError: for an empty body, an unidentifiable one, or an image over ``max_pixels``.
    """
    if not data:
        raise ImageDecodeError("empty body: send the image bytes as the request body")
    with _decode_errors():
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            raise ImageDecodeError(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    return img


@contextlib.contextmanager
def _decode_errors() -> Iterator[None]:
    """Turn Pillow's exceptions into an :class:`ImageDecodeError` whose message names the problem."""
    try:
        yield
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("body is not an image that Pillow can identify (expected PNG, JPEG, WebP, GIF, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"image could not be decoded ({type(exc).__name__}: {exc}); is the file truncated?") from None


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
    return decode_opened(open_image(data, max_pixels), background)


def decode_opened(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """:func:`decode_image` for an image :func:`open_image` has already identified and size-checked."""
    with _decode_errors(), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img.load()  # decode now, so truncated files fail here rather than later
    # ImageOps.exif_transpose's choice (a corrupt EXIF block keeps the image as stored, it does not cost the user the
    # prediction), without its full-size copy of every unrotated image (an unrotated 12 MP photo: 86 -> 64 CPU ms).
    method = exif_transpose_method(img)
    if method is not None:
        img = img.transpose(method)
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


def preprocess_bytes(
    data: bytes | bytearray,
    config: PreprocessConfig,
    mode: CropMode = "random",
    seed: int | None = None,
    region_decode: bool = True,
    timings: dict[str, float] | None = None,
) -> tuple[torch.Tensor, CropBox]:
    """Decode and preprocess one request body. ``seed`` makes a random crop reproducible.

    With ``region_decode`` a JPEG is decoded only where the crop needs it (:mod:`classifier.jpeg_region`);
    the tensor and the box are the same as with a full decode, which every other format gets.
    ``timings``, when given, receives ``decode`` seconds (the serving metrics split decoding from the rest).
    """
    started = time.perf_counter()
    rng = random.Random(seed) if seed is not None else None
    if region_decode:
        img = open_image(data, config.max_image_pixels)
        if _region_decodable(img, data):
            return _preprocess_jpeg_region(img, data, config, mode, rng, timings, started)
        img = decode_opened(img, config.background)  # the header is already read and the size already checked
    else:
        img = decode_image(data, config.max_image_pixels, config.background)
    if timings is not None:
        timings["decode"] = time.perf_counter() - started
    return zoom_crop_pad(img, config, mode, rng)


# --------------------------------------------------------------------------- JPEG region decoding

# The transpose that ImageOps.exif_transpose applies for each EXIF orientation.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90)


def _region_decodable(img: Image.Image, data: bytes | bytearray) -> bool:
    """Whether the region decoder gives exactly what decode_image would: a JPEG (or the first frame of an MPO,
    which is one) in a colour space libjpeg converts as Pillow does, and complete. Pillow refuses a truncated
    JPEG even when the cut is below the crop; a file ending in its EOI marker cannot be cut inside the scan."""
    return (
        img.format in ("JPEG", "MPO")
        and img.mode in ("RGB", "L")
        and bytes(data[-2:]) == b"\xff\xd9"
        and jpeg_region.unavailable_reason() is None
    )


def exif_transpose_method(img: Image.Image) -> Image.Transpose | None:
    """The transpose :func:`decode_image` applies for the image's EXIF orientation, read from the header alone.

    Mirrors ``ImageOps.exif_transpose`` including the suppressed failures: where rewriting the EXIF block would
    fail there, decode_image keeps the image as stored, and so does this.
    """
    try:
        exif = img.getexif()
        method = _ORIENTATION_TRANSPOSE.get(exif.get(_EXIF_ORIENTATION, 1))
        if method is not None:
            del exif[_EXIF_ORIENTATION]
            exif.tobytes()
        return method
    except Exception:
        return None


def upright_size(width: int, height: int, method: Image.Transpose | None) -> tuple[int, int]:
    """Size after the EXIF transpose of a ``width`` x ``height`` stored image."""
    return (height, width) if method in _SWAPS_AXES else (width, height)


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


def _preprocess_jpeg_region(
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
