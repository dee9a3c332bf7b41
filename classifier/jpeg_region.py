"""Decode one window of a JPEG without decoding the rest of it.

A 12 MP phone photo needs ~70 ms for a full decode on one core, yet the network sees a window of about 67x67
source pixels. ``native/jpegregion.c`` asks libjpeg-turbo to skip the rows above
the window (``jpeg_skip_scanlines``: entropy-decoded but neither IDCT'd nor upsampled nor colour converted), to
decode only the iMCU columns around it (``jpeg_crop_scanline``), and to stop after its last row. The pixels are
identical to Pillow's full decode (tests/unit/test_jpeg_region.py checks that on many windows).

The library is built by ``make native`` into ``classifier/_jpegregion.so`` and travels inside the model archive.
It is not linked to a libjpeg: :func:`libjpeg_candidates` chooses one at run time, the libjpeg-turbo inside
Pillow's wheel first. Where none works, or the library is missing, :func:`decode_region` returns None and callers
fall back to Pillow; the reason is logged once.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

LIBRARY_PATH = Path(__file__).with_name("_jpegregion.so")
BUILD_HINT = "build it with `make native` (needs gcc and libjpeg62-turbo-dev: apt-get install -y gcc libjpeg62-turbo-dev)"
LIBJPEG_HINT = "install Pillow's wheel (it bundles libjpeg-turbo) or Debian's: apt-get install -y libjpeg62-turbo"
_OK, _ERROR, _UNSUPPORTED = 0, 1, 2
_MESSAGE_BYTES = 256

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_load_error: str | None = None
_libjpeg: str | None = None
_loaded = False


class JpegRegionError(ValueError):
    """libjpeg refused the data (corrupt or truncated inside the decoded rows)."""


def libjpeg_candidates() -> list[str]:
    """libjpeg-turbo builds with the 6.2 ABI of Debian's jpeglib.h, which the library is compiled against; best first.

    First the one inside Pillow's wheel (``pillow.libs/libjpeg-<hash>.so.62.*``): the very decoder Pillow's full
    decode runs, so both paths run the same code, and it is there wherever Pillow is pip-installed, the CUDA image
    on Ubuntu included (whose own libjpeg is the 8.0 ABI). Then the system's ``libjpeg.so.62`` (Debian's
    libjpeg62-turbo), for a Pillow built from source.
    """
    import PIL

    bundled = sorted((Path(PIL.__file__).resolve().parent.parent / "pillow.libs").glob("libjpeg-*.so.62*"))
    return [*(str(path) for path in bundled), "libjpeg.so.62"]


def _load() -> ctypes.CDLL | None:
    global _library, _load_error, _libjpeg, _loaded
    with _lock:
        if _loaded:
            return _library
        _loaded = True
        try:
            lib = ctypes.CDLL(str(LIBRARY_PATH))
        except OSError as exc:  # not built (or built for another C library)
            return _off(f"{LIBRARY_PATH.name} cannot be loaded ({exc}); {BUILD_HINT}")
        lib.jr_init.restype = ctypes.c_int
        lib.jr_init.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        failures = []
        for candidate in libjpeg_candidates():
            message = ctypes.create_string_buffer(_MESSAGE_BYTES)
            if lib.jr_init(candidate.encode(), message, _MESSAGE_BYTES) == _OK:
                _libjpeg = candidate
                logger.info("JPEG region decoding runs %s", candidate)
                break
            failures.append(message.value.decode(errors="replace"))
        else:
            return _off(f"no usable libjpeg-turbo ({'; '.join(failures)}); {LIBJPEG_HINT}")
        lib.jr_decode_region.restype = ctypes.c_int
        lib.jr_decode_region.argtypes = [
            ctypes.c_void_p,
            ctypes.c_ulong,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        _library = lib
        return lib


def _off(reason: str) -> ctypes.CDLL | None:
    """Record why the region decoder is off, log it once, and give _load's answer: no library."""
    global _load_error
    _load_error = reason
    logger.warning("JPEG region decoding is off, every JPEG is decoded in full by Pillow: %s", reason)
    return None


def libjpeg_in_use() -> str | None:
    """The libjpeg the region decoder runs (a path or soname), None while it is unavailable."""
    _load()
    return _libjpeg


def unavailable_reason() -> str | None:
    """None when region decoding works here, else why not (with the command that fixes it)."""
    _load()
    return _load_error


def decode_region(data: bytes | bytearray, left: int, top: int, width: int, height: int) -> np.ndarray | None:
    """Stored (pre-EXIF-orientation) pixels ``[left, left+width) x [top, top+height)`` as a ``(height, width, 3)`` uint8 array.

    Returns None when the library is unavailable or the JPEG's colour space is one Pillow converts itself
    (CMYK, YCCK): the caller decodes with Pillow instead.

    Raises:
        JpegRegionError: libjpeg could not decode the rows the window needs.
    """
    lib = _load()
    if lib is None:
        return None
    out = np.empty((height, width, 3), dtype=np.uint8)
    message = ctypes.create_string_buffer(_MESSAGE_BYTES)
    # bytes are passed by address without a copy; a bytearray is shared through the buffer protocol.
    source = ctypes.cast(data, ctypes.c_void_p) if isinstance(data, bytes) else (ctypes.c_char * len(data)).from_buffer(data)  # type: ignore[arg-type]
    # ctypes releases the GIL for the call, so the handler's thread pool decodes a batch on every core.
    status = lib.jr_decode_region(source, len(data), left, top, width, height, out.ctypes.data, message, _MESSAGE_BYTES)
    if status == _UNSUPPORTED:
        return None
    if status != _OK:
        raise JpegRegionError(message.value.decode(errors="replace") or f"libjpeg failed with status {status}")
    return out
