import io
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from classifier.decoding import ImageDecodeError, decode_image
from classifier.preprocessing import preprocess_bytes
from classifier.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropBox,
    PreprocessConfig,
    choose_crop,
    normalize_and_pad,
    pil_to_tensor,
    zoom_crop,
    zoom_crop_naive,
    zoom_crop_pad,
    zoomed_size,
)
from tests.conftest import encode, random_image

CFG = PreprocessConfig()


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("size,expected", [((100, 80), (150, 120)), ((1, 1), (2, 2)), ((3, 5), (5, 8)), ((67, 66), (101, 99))])
def test_zoomed_size_rounds_half_up(size, expected):
    assert zoomed_size(*size, 1.5) == expected


def test_random_crop_is_inside_and_covers_every_offset():
    rng = random.Random(0)
    lefts, tops = set(), set()
    for _ in range(3000):
        box = choose_crop(105, 103, 100, "random", rng)
        assert (box.width, box.height) == (100, 100)
        assert 0 <= box.left <= 5 and 0 <= box.top <= 3
        lefts.add(box.left), tops.add(box.top)
    assert lefts == set(range(6)) and tops == set(range(4))  # uniform over all integer positions


def test_crop_smaller_than_100_takes_what_exists():
    box = choose_crop(40, 250, 100, "random", random.Random(1))
    assert box.width == 40 and box.left == 0 and box.height == 100 and 0 <= box.top <= 150


def test_center_crop_is_centred_and_deterministic():
    assert choose_crop(300, 151, 100, "center") == CropBox(100, 25, 100, 100)


def test_invalid_crop_mode_names_the_choices():
    with pytest.raises(ValueError, match="'random' and 'center'"):
        choose_crop(300, 300, 100, "corner")


# ----------------------------------------------------------------------------- fast path == naive path


@pytest.mark.parametrize("seed", range(40))
def test_fast_zoom_crop_equals_naive_resize_then_crop(seed):
    """The fast path resamples only the crop's source window; it must equal a full resize within 1e-6 ([0,1] scale)."""
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(1, 420, size=2))
    img = random_image(width, height, seed)
    for k in range(4):
        box = choose_crop(*zoomed_size(width, height, 1.5), 100, "random", random.Random(seed * 7 + k))
        fast, naive = zoom_crop(img, box, 1.5), zoom_crop_naive(img, box, 1.5)
        assert fast.shape == naive.shape == (3, box.height, box.width)
        assert torch.allclose(fast, naive, atol=1e-6, rtol=0)


def test_zoom_of_constant_image_is_constant():
    img = Image.new("RGB", (37, 53), (10, 128, 250))
    box = choose_crop(*zoomed_size(37, 53, 1.5), 100, "center")
    out = zoom_crop(img, box, 1.5)
    expected = torch.tensor([10, 128, 250]).view(3, 1, 1) / 255.0
    assert torch.allclose(out, expected.expand_as(out), atol=1e-6)


# ----------------------------------------------------------------------------- tensor values


def test_padding_is_zero_and_crop_is_normalised_in_the_centre():
    img = Image.new("RGB", (200, 200), (255, 0, 128))
    tensor, box = zoom_crop_pad(img, CFG, "random", random.Random(3))
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    inner = tensor[:, 62:162, 62:162]
    for c, value in enumerate((255, 0, 128)):
        assert torch.allclose(inner[c], torch.full((100, 100), (value / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]), atol=1e-5)
    mask = torch.ones(224, 224, dtype=torch.bool)
    mask[62:162, 62:162] = False
    assert (tensor[:, mask] == 0).all()


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (10, 300), (300, 10), (66, 67), (5000, 4)])
def test_small_and_odd_shaped_images(size):
    img = random_image(*size, seed=1)
    tensor, box = zoom_crop_pad(img, CFG, "random", random.Random(0))
    zw, zh = zoomed_size(*size, 1.5)
    assert (box.width, box.height) == (min(100, zw), min(100, zh))
    top, left = (224 - box.height) // 2, (224 - box.width) // 2
    region = tensor[:, top : top + box.height, left : left + box.width]
    expected = normalize_and_pad(zoom_crop_naive(img, box, 1.5), 224, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(tensor, expected, atol=1e-5)
    outside = torch.ones(224, 224, dtype=torch.bool)
    outside[top : top + box.height, left : left + box.width] = False
    assert (tensor[:, outside] == 0).all() and region.abs().sum() > 0


def test_same_seed_same_tensor_and_different_seeds_differ():
    data = encode(random_image(400, 300, seed=2), "PNG")
    a, box_a = preprocess_bytes(data, CFG, "random", seed=42)
    b, box_b = preprocess_bytes(data, CFG, "random", seed=42)
    c, box_c = preprocess_bytes(data, CFG, "random", seed=43)
    assert box_a == box_b and torch.equal(a, b)
    assert box_a != box_c and not torch.equal(a, c)


# ----------------------------------------------------------------------------- decoding


def test_png_and_jpeg_decode_to_rgb():
    img = random_image(64, 48, seed=3)
    assert decode_image(encode(img, "PNG")).tobytes() == img.tobytes()
    jpeg = decode_image(encode(img, "JPEG", quality=95))
    assert jpeg.mode == "RGB" and jpeg.size == (64, 48)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1", "I;16", "I"])
def test_every_mode_becomes_rgb(mode):
    base = random_image(32, 24, seed=4)
    img = base.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I" else "PNG")
    out = decode_image(encode(img, fmt))
    assert out.mode == "RGB" and out.size == (32, 24)


def test_16_bit_png_is_rescaled_not_clipped():
    arr = np.full((8, 8), 128 * 257, dtype=np.uint16)  # 8-bit 128 in 16 bits; clipping would give 255
    out = np.asarray(decode_image(encode(Image.fromarray(arr), "PNG")))
    assert out.min() == out.max() == 128


def test_transparency_is_composited_onto_white():
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(decode_image(encode(img, "PNG"))).min() == 255
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    assert np.asarray(decode_image(encode(palette, "PNG", transparency=0))).min() == 255


def test_exif_orientation_is_applied():
    img = random_image(40, 20, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW for display
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillows_exif_transpose(orientation, fmt):
    # decode_image transposes by exif_transpose_method instead of calling ImageOps.exif_transpose (which copies
    # every unrotated image): the pixels must stay Pillow's.
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(random_image(37, 23, seed=orientation), fmt, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(np.asarray(decode_image(data)), expected)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = np.asarray(decode_image(buf))[0, 0]
    assert r > 200 and b < 50


def test_webp_decodes():
    assert decode_image(encode(random_image(30, 30), "WEBP")).size == (30, 30)


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"", "empty body"),
        (b"hello, I am text", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not an image"),
    ],
)
def test_garbage_is_refused_with_a_reason(data, needle):
    with pytest.raises(ImageDecodeError, match=needle):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(fmt):
    data = encode(random_image(200, 200, seed=6), fmt)
    with pytest.raises(ImageDecodeError, match="truncated|decoded|identify"):
        decode_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    # A 30000x30000 one-bit PNG compresses to a few KB but would decode to 2.7 GB as RGB.
    bomb = encode(Image.new("1", (30000, 30000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(bomb)


def test_pil_to_tensor_layout():
    img = random_image(5, 4, seed=7)
    t = pil_to_tensor(img)
    assert t.shape == (3, 4, 5) and t.dtype == torch.uint8
    assert t[:, 2, 3].tolist() == list(img.getpixel((3, 2)))
