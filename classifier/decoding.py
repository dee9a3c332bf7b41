"""Decoding: encoded bytes -> an upright 8-bit RGB Pillow image, or an :class:`ImageDecodeError` that names the problem.

EXIF orientation, first frames of animations, grey, 16-bit, palette, CMYK and alpha are all handled here, so that
every consumer sees the same pixels (tests/unit/test_preprocessing.py pins them to Pillow's).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from classifier.limits import MAX_IMAGE_PIXELS


class ImageDecodeError(ValueError):
    """The request bytes are not an image we can serve. The message is shown to the client."""


def open_image(data: bytes | bytearray, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
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
    max_pixels: int = MAX_IMAGE_PIXELS,
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


# --------------------------------------------------------------------------- EXIF orientation

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
