"""JPEG region decoding (classifier/jpeg_region.py + native/jpegregion.c) against Pillow's full decode.

The contract: inside the window, the pixels are identical to ``decode_image`` (Pillow, EXIF transpose, RGB),
for every JPEG flavour a phone or an encoder produces, and every crop the handler can draw.
"""

from __future__ import annotations

import ctypes
import io
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier import jpeg_region
from classifier.decoding import ImageDecodeError, decode_image, exif_transpose_method, open_image
from classifier.preprocessing import preprocess_bytes
from classifier.region import decode_upright_window
from classifier.transforms import PreprocessConfig

CFG = PreprocessConfig()


@pytest.fixture(scope="module", autouse=True)
def region_library():
    reason = jpeg_region.unavailable_reason()
    if reason is not None:
        pytest.fail(f"the JPEG region decoder is not available: {reason}")


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour blobs plus noise: chroma varies at every scale, so an upsampling slip shows."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height // 9 + 2, width // 9 + 2, 3), dtype=np.uint8))
    arr = np.asarray(base.resize((width, height), Image.Resampling.BILINEAR)).astype(np.int16)
    arr += rng.integers(-30, 31, arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=options.pop("quality", 90), **options)
    return buf.getvalue()


def random_windows(width: int, height: int, count: int, rng: random.Random) -> list[tuple[int, int, int, int]]:
    """Windows of 1-90 px anywhere, with the image's corners and edges always among them."""
    windows = [(0, 0, min(width, 70), min(height, 70)), (max(0, width - 70), max(0, height - 70), width, height)]
    windows += [(0, 0, width, height)]
    while len(windows) < count:
        w, h = rng.randint(1, min(width, 90)), rng.randint(1, min(height, 90))
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        windows.append((left, top, left + w, top + h))
    return windows


def assert_windows_identical(data: bytes, count: int, seed: int) -> None:
    full = np.asarray(decode_image(data))
    img = open_image(data)
    method = exif_transpose_method(img)
    height, width = full.shape[:2]
    for window in random_windows(width, height, count, random.Random(seed)):
        region = decode_upright_window(img, data, window, method)
        assert region is not None, "the region decoder declined a JPEG it should serve"
        left, top, right, bottom = window
        expected = full[top:bottom, left:right]
        if not np.array_equal(region, expected):
            diff = np.abs(region.astype(int) - expected.astype(int))
            raise AssertionError(f"window {window}: {int((diff > 0).sum())} values differ, max by {diff.max()}")


# Encoder options: subsampling 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0. Sizes are not multiples of the MCU.
FLAVOURS = {
    "baseline-420": {"subsampling": 2},
    "baseline-422": {"subsampling": 1},
    "baseline-444": {"subsampling": 0},
    "progressive-420": {"subsampling": 2, "progressive": True},
    "progressive-422": {"subsampling": 1, "progressive": True},
    "progressive-444": {"subsampling": 0, "progressive": True},
    "restart-blocks-420": {"subsampling": 2, "restart_marker_blocks": 5},
    "restart-rows-422": {"subsampling": 1, "restart_marker_rows": 1},
    "progressive-restart-420": {"subsampling": 2, "progressive": True, "restart_marker_blocks": 3},
    "optimized-huffman-420": {"subsampling": 2, "optimize": True},
    "quality-100-444": {"subsampling": 0, "quality": 100},
}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_region_equals_full_decode(flavour):
    data = jpeg(photo_like(333, 251, seed=len(flavour)), **FLAVOURS[flavour])
    assert_windows_identical(data, count=60, seed=1)


def test_region_equals_full_decode_on_a_larger_image():
    # Windows deep in the image exercise long skips (many iMCU rows) and wide column crops.
    assert_windows_identical(jpeg(photo_like(1200, 900, seed=3)), count=25, seed=2)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("subsampling", [2, 1])
def test_region_follows_the_exif_orientation(orientation, subsampling):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(photo_like(245, 170, seed=orientation), subsampling=subsampling, exif=exif.tobytes())
    assert_windows_identical(data, count=40, seed=orientation)


def test_greyscale_jpeg_is_region_decoded_identically():
    grey = photo_like(190, 140, seed=9).convert("L")
    assert_windows_identical(jpeg(grey), count=40, seed=3)


def test_rgb_coded_jpeg_is_region_decoded_identically():
    # keep_rgb stores R, G, B without the YCbCr transform (Adobe transform 0), as some cameras and tools do.
    assert_windows_identical(jpeg(photo_like(170, 130, seed=4), keep_rgb=True, subsampling=0), count=40, seed=4)


@pytest.mark.parametrize("orientation", [1, 6, 3, 8, 5])
@pytest.mark.parametrize("mode", ["random", "center"])
def test_preprocess_bytes_is_unchanged_by_region_decoding(orientation, mode):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(photo_like(640, 480, seed=orientation), exif=exif.tobytes())
    for seed in range(8):
        region, box_region = preprocess_bytes(data, CFG, mode, seed=seed)
        full, box_full = preprocess_bytes(data, CFG, mode, seed=seed, region_decode=False)
        assert box_region == box_full
        assert region.equal(full)  # bit for bit: the network sees the same tensor


def test_small_jpeg_smaller_than_the_crop():
    data = jpeg(photo_like(50, 31, seed=5))
    region, box_region = preprocess_bytes(data, CFG, "random", seed=3)
    full, box_full = preprocess_bytes(data, CFG, "random", seed=3, region_decode=False)
    assert box_region == box_full and region.equal(full)


def test_cmyk_jpeg_falls_back_to_pillow():
    cmyk = photo_like(120, 90, seed=6).convert("CMYK")
    data = jpeg(cmyk)
    assert open_image(data).mode == "CMYK"
    region, box_region = preprocess_bytes(data, CFG, "random", seed=5)
    full, box_full = preprocess_bytes(data, CFG, "random", seed=5, region_decode=False)
    assert box_region == box_full and region.equal(full)


def test_cmyk_is_declined_by_the_native_decoder_too():
    # Pillow converts CMYK/YCCK itself (with the Adobe inversion), so the library must not guess.
    data = jpeg(photo_like(64, 64, seed=7).convert("CMYK"))
    assert jpeg_region.decode_region(data, 0, 0, 10, 10) is None


def test_truncated_jpeg_is_refused_even_when_the_crop_is_above_the_cut():
    # Pillow refuses a truncated JPEG wherever it is cut; the region decoder must not turn that into a 200.
    data = jpeg(photo_like(400, 1200, seed=8))
    cut = data[: int(len(data) * 0.9)]
    config = PreprocessConfig(zoom=1.0)
    with pytest.raises(ImageDecodeError, match="truncated|decoded"):
        preprocess_bytes(cut, config, "center", region_decode=False)
    with pytest.raises(ImageDecodeError, match="truncated|decoded"):
        preprocess_bytes(cut, config, "center")


def test_corrupt_window_rows_fall_back_to_pillow_and_its_answer():
    data = bytearray(jpeg(photo_like(200, 200, seed=9)))
    sos = data.index(b"\xff\xda")
    data[sos + 20 : sos + 400] = b"\xff\x00" * 190  # garbage entropy data; Pillow decodes it with warnings
    region, _ = preprocess_bytes(bytes(data), CFG, "random", seed=1)
    full, _ = preprocess_bytes(bytes(data), CFG, "random", seed=1, region_decode=False)
    assert region.equal(full)


def test_size_limit_is_checked_before_any_pixel_is_decoded():
    # Scan data replaced by garbage: had any pixel been decoded first, the error would be a decode error.
    data = bytearray(jpeg(photo_like(300, 200, seed=10)))
    sos = data.index(b"\xff\xda")
    data[sos + 20 : -2] = b"\x00" * (len(data) - sos - 22)
    with pytest.raises(ImageDecodeError, match="over the limit of 50000"):
        preprocess_bytes(bytes(data), PreprocessConfig(max_image_pixels=50_000), "random", seed=1)


def test_bytearray_bodies_are_decoded_in_place():
    data = jpeg(photo_like(300, 200, seed=11))
    a, _ = preprocess_bytes(bytearray(data), CFG, "random", seed=2)
    b, _ = preprocess_bytes(data, CFG, "random", seed=2, region_decode=False)
    assert a.equal(b)


def test_missing_library_falls_back_with_one_logged_reason(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(jpeg_region, "LIBRARY_PATH", tmp_path / "absent.so")
    monkeypatch.setattr(jpeg_region, "_loaded", False)
    monkeypatch.setattr(jpeg_region, "_library", None)
    monkeypatch.setattr(jpeg_region, "_load_error", None)
    data = jpeg(photo_like(300, 200, seed=12))
    with caplog.at_level(logging.WARNING, logger="classifier.jpeg_region"):
        first, _ = preprocess_bytes(data, CFG, "random", seed=4)
        second, _ = preprocess_bytes(data, CFG, "random", seed=4)
    full, _ = preprocess_bytes(data, CFG, "random", seed=4, region_decode=False)
    assert first.equal(full) and second.equal(full)
    warnings = [r for r in caplog.records if "region decoding is off" in r.getMessage()]
    assert len(warnings) == 1 and "make native" in warnings[0].getMessage()
    assert "make native" in (jpeg_region.unavailable_reason() or "")


@pytest.fixture
def fresh_loader(monkeypatch):
    """An unloaded jpeg_region; afterwards the next call loads again with the default choice of libjpeg."""

    def reset():
        jpeg_region._loaded, jpeg_region._library, jpeg_region._load_error, jpeg_region._libjpeg = False, None, None, None

    reset()
    yield monkeypatch
    monkeypatch.undo()
    reset()


def test_the_region_decoder_runs_pillows_own_libjpeg():
    """With Pillow from its wheel, both decodes run the same libjpeg-turbo: no system library is needed."""
    in_use = jpeg_region.libjpeg_in_use()
    assert in_use is not None and "pillow.libs" in in_use, in_use
    assert Path(in_use).exists()


def test_debians_libjpeg_gives_the_same_pixels(fresh_loader):
    # The fallback for a Pillow built from source: Debian's libjpeg-turbo 2.1.5 against Pillow's own (3.x).
    fresh_loader.setattr(jpeg_region, "libjpeg_candidates", lambda: ["libjpeg.so.62"])
    assert jpeg_region.libjpeg_in_use() == "libjpeg.so.62", jpeg_region.unavailable_reason()
    for name, options in FLAVOURS.items():
        assert_windows_identical(jpeg(photo_like(245, 170, seed=3), **options), count=12, seed=len(name))


def test_no_usable_libjpeg_falls_back_with_the_install_command(fresh_loader, caplog):
    fresh_loader.setattr(jpeg_region, "libjpeg_candidates", lambda: ["/nonexistent/libjpeg.so.62"])
    data = jpeg(photo_like(300, 200, seed=13))
    with caplog.at_level(logging.WARNING, logger="classifier.jpeg_region"):
        region, _ = preprocess_bytes(data, CFG, "random", seed=5)
    full, _ = preprocess_bytes(data, CFG, "random", seed=5, region_decode=False)
    assert region.equal(full)
    reason = jpeg_region.unavailable_reason() or ""
    assert "/nonexistent/libjpeg.so.62" in reason and "apt-get install -y libjpeg62-turbo" in reason
    assert any("region decoding is off" in r.getMessage() for r in caplog.records)


def test_a_library_without_libjpeg_leaves_the_bound_decoder_working():
    lib = jpeg_region._load()
    assert lib is not None, jpeg_region.unavailable_reason()
    message = ctypes.create_string_buffer(256)
    assert lib.jr_init(b"libc.so.6", message, 256) != 0  # opens, but has no jpeg_std_error
    assert b"libc.so.6 has no jpeg_std_error" in message.value
    assert_windows_identical(jpeg(photo_like(245, 170, seed=21)), count=12, seed=21)
