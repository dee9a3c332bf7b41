"""The C++ program (cpp/) computes what the Python core computes, stage by stage.

- decoding: identical pixels for every JPEG and PNG mode the C++ side supports, orientation included;
- the seeded crop: the same box as ``random.Random(seed)`` for the same seed;
- the network input: the preprocessed tensor within 1e-5 (in practice it is bit-identical);
- the answer: the same top-2 classes, probabilities within 1e-5 and embedding statistics within 1e-6
  (relative) on the tests' tiny model, at batch 1 and in a batch.

The first test builds the program with ``make cpp``; a missing compiler or dev package makes it fail
with the apt-get command, never skip.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classifier.decoding import ImageDecodeError, decode_image
from classifier.preprocessing import preprocess_bytes
from classifier.transforms import CropBox, PreprocessConfig, normalize_and_pad, zoom_crop
from cpp.compare import PythonPipeline, photo_like, run_cpp
from tests.conftest import REPO, encode, random_image

pytestmark = pytest.mark.slow

PROBABILITY_TOLERANCE = 1e-5
STATS_RELATIVE_TOLERANCE = 1e-6
TENSOR_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def cpp_binary() -> Path:
    proc = subprocess.run(["make", "--no-print-directory", "cpp"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"`make cpp` failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return REPO / "build" / "cpp" / "classify"


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    """A model folder with only the metadata: enough for the C++ program with --no-network."""
    folder = tmp_path_factory.mktemp("cpp_config")
    (folder / "metadata.json").write_text(json.dumps({"preprocessing": PreprocessConfig().to_dict()}))
    (folder / "index_to_name.json").write_text(json.dumps({"0": "a", "1": "b"}))
    return folder


# --------------------------------------------------------------------------- test images


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def raw_png(rows: np.ndarray, width: int, height: int, depth: int, colour: int, before_idat: bytes = b"") -> bytes:
    """A PNG written by hand, for the modes Pillow cannot write (16-bit RGB(A), 2/4-bit, tRNS on grey and RGB)."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    data = b"".join(b"\x00" + row.tobytes() for row in rows)
    return b"\x89PNG\r\n\x1a\n" + header + before_idat + png_chunk(b"IDAT", zlib.compress(data)) + png_chunk(b"IEND", b"")


def pack_bits(values: np.ndarray, depth: int) -> np.ndarray:
    """Pack (H, W) values of ``depth`` bits into PNG rows, most significant bits first."""
    per_byte = 8 // depth
    h, w = values.shape
    groups = values.reshape(h, w // per_byte, per_byte).astype(np.uint8)
    packed = np.zeros((h, w // per_byte), np.uint8)
    for i in range(per_byte):
        packed |= groups[:, :, i] << (8 - depth * (i + 1))
    return packed


def with_exif_orientation(img: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif.tobytes())


def image_cases() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    photo = photo_like(97, 61, seed=3)  # odd sizes exercise the chroma edges
    noise = random_image(64, 48, seed=1)
    cases = {
        "jpeg_420": encode(photo, "JPEG", quality=90),
        "jpeg_422": encode(photo, "JPEG", quality=85, subsampling=1),
        "jpeg_444": encode(photo, "JPEG", quality=95, subsampling=0),
        "jpeg_noise_q75": encode(noise, "JPEG", quality=75),
        "jpeg_progressive": encode(photo, "JPEG", quality=80, progressive=True),
        "jpeg_optimized": encode(photo, "JPEG", quality=70, optimize=True),
        "jpeg_grey": encode(photo.convert("L"), "JPEG", quality=90),
        "jpeg_cmyk": encode(photo.convert("CMYK"), "JPEG", quality=90),
        "jpeg_tiny_1x1": encode(Image.new("RGB", (1, 1), (200, 10, 30)), "JPEG"),
        "jpeg_large": encode(photo_like(1201, 803, seed=4), "JPEG", quality=92),
        "jpeg_xmp_orientation_6": encode(photo, "JPEG", xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'),
        "png_rgb": encode(photo, "PNG"),
        "png_rgba": encode(random_image(40, 30, seed=2, mode="RGBA"), "PNG"),
        "png_grey": encode(photo.convert("L"), "PNG"),
        "png_grey_alpha": encode(random_image(40, 30, seed=5, mode="RGBA").convert("LA"), "PNG"),
        "png_palette": encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=50), "PNG"),
        "png_palette_transparency": encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG", transparency=3),
        "png_1bit": encode(photo.convert("1"), "PNG"),
        "png_grey16": encode(Image.fromarray(rng.integers(0, 65536, (30, 44), dtype=np.uint16)), "PNG"),
        "png_rgb16": raw_png(rng.integers(0, 65536, (20, 24 * 3), dtype=np.uint16).astype(">u2"), 24, 20, 16, 2),
        "png_rgba16": raw_png(rng.integers(0, 65536, (20, 24 * 4), dtype=np.uint16).astype(">u2"), 24, 20, 16, 6),
        "png_grey_alpha16": raw_png(rng.integers(0, 65536, (20, 24 * 2), dtype=np.uint16).astype(">u2"), 24, 20, 16, 4),
        "png_grey2": raw_png(pack_bits(rng.integers(0, 4, (16, 24)), 2), 24, 16, 2, 0),
        "png_grey4_trns": raw_png(pack_bits(rng.integers(0, 16, (16, 24)), 4), 24, 16, 4, 0, png_chunk(b"tRNS", b"\x00\x05")),
        "png_rgb_trns": raw_png(
            rng.integers(0, 256, (16, 24 * 3), dtype=np.uint8), 24, 16, 8, 2, png_chunk(b"tRNS", b"\x00\x10\x00\x20\x00\x30")
        ),
        "png_palette4_trns": raw_png(
            pack_bits(rng.integers(0, 16, (16, 24)), 4),
            24,
            16,
            4,
            3,
            png_chunk(b"PLTE", rng.integers(0, 256, 48, dtype=np.uint8).tobytes())
            + png_chunk(b"tRNS", rng.integers(0, 256, 10, dtype=np.uint8).tobytes()),
        ),
    }
    for orientation in range(1, 9):
        cases[f"jpeg_exif_orientation_{orientation}"] = with_exif_orientation(photo, "JPEG", orientation)
    cases["png_exif_orientation_8"] = with_exif_orientation(photo, "PNG", 8)
    return cases


CASES = image_cases()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cpp_images")
    for name, data in CASES.items():
        (folder / name).write_bytes(data)
    return folder


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", sorted(CASES))
def test_decoded_pixels_are_identical(name, cpp_binary, config_dir, image_dir, tmp_path):
    [answer] = run_cpp(cpp_binary, [image_dir / name], config_dir, network=False, crop="center", dump_pixels=tmp_path)
    width, height = answer["size"]
    cpp = np.fromfile(tmp_path / f"{name}.rgb", dtype=np.uint8).reshape(height, width, 3)
    python = np.asarray(decode_image(CASES[name]))
    assert cpp.shape == python.shape
    differing = int((cpp != python).any(axis=2).sum())
    assert differing == 0, f"{differing} of {width * height} pixels differ"


def test_orientation_changes_the_pixels():
    """Guards the orientation cases above against testing nothing: each orientation gives other pixels."""
    decoded = {np.asarray(decode_image(CASES[f"jpeg_exif_orientation_{o}"])).tobytes() for o in range(1, 9)}
    assert len(decoded) == 8


@pytest.mark.parametrize("data", [b"", b"not an image", CASES["jpeg_420"][: len(CASES["jpeg_420"]) // 2], CASES["png_rgb"][:-40]])
def test_both_refuse_the_same_bad_input(data, cpp_binary, config_dir, tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(data)
    [answer] = run_cpp(cpp_binary, [path], config_dir, network=False, crop="center")
    assert answer["code"] == 400 and answer["message"]
    with pytest.raises(ImageDecodeError):
        decode_image(data)


# --------------------------------------------------------------------------- crop and tensor


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1, 2**32 - 1, 2**32, 123456789012345, 2**63 - 1])
@pytest.mark.parametrize("size", [(400, 300), (50, 40), (67, 800)])
def test_seeded_crop_is_pythons(seed, size, cpp_binary, config_dir, tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(encode(Image.new("RGB", size), "PNG"))
    [answer] = run_cpp(cpp_binary, [path], config_dir, network=False, seed=seed)
    _, box = preprocess_bytes(path.read_bytes(), PreprocessConfig(), "random", seed)
    assert answer["crop"] == {"mode": "random", "seed": seed, "box": box.as_list()}


@pytest.mark.parametrize("name", ["jpeg_420", "jpeg_large", "png_rgba", "png_grey16", "jpeg_exif_orientation_6", "jpeg_tiny_1x1"])
@pytest.mark.parametrize("crop", ["random", "center"])
def test_preprocessed_tensor_matches(name, crop, cpp_binary, config_dir, image_dir, tmp_path):
    seed = 1234
    [answer] = run_cpp(cpp_binary, [image_dir / name], config_dir, network=False, crop=crop, seed=seed, dump_tensor=tmp_path)
    cpp = np.fromfile(tmp_path / f"{name}.f32", dtype=np.float32).reshape(3, 224, 224)
    python, box = preprocess_bytes(CASES[name], PreprocessConfig(), crop, seed)
    assert answer["crop"]["box"] == box.as_list()
    assert np.abs(cpp - python.numpy()).max() <= TENSOR_TOLERANCE


def test_explicit_box_matches(cpp_binary, config_dir, image_dir, tmp_path):
    box = CropBox(left=17, top=5, width=60, height=80)
    config = PreprocessConfig()
    [answer] = run_cpp(cpp_binary, [image_dir / "jpeg_444"], config_dir, network=False, box=box, dump_tensor=tmp_path)
    cpp = np.fromfile(tmp_path / "jpeg_444.f32", dtype=np.float32).reshape(3, 224, 224)
    crop = zoom_crop(decode_image(CASES["jpeg_444"]), box, config.zoom)
    python = normalize_and_pad(crop, config.input_size, config.mean, config.std)
    assert answer["crop"]["box"] == box.as_list()
    assert np.abs(cpp - python.numpy()).max() <= TENSOR_TOLERANCE


# --------------------------------------------------------------------------- the answer


@pytest.mark.parametrize("batch", [1, 4])
def test_answers_match_on_the_tiny_model(batch, cpp_binary, tiny_model_dir, image_dir):
    names = ["jpeg_420", "jpeg_large", "png_rgb", "png_palette", "jpeg_cmyk", "jpeg_exif_orientation_3", "png_grey_alpha"]
    paths = [image_dir / n for n in names]
    seed = random.Random(batch).getrandbits(63)
    cpp = run_cpp(cpp_binary, paths, tiny_model_dir, seed=seed, batch=batch, threads=2)
    threads = torch.get_num_threads()
    try:
        python = PythonPipeline(tiny_model_dir, threads=2).run([CASES[n] for n in names], batch, seed)
    finally:
        torch.set_num_threads(threads)  # PythonPipeline sets the process-wide value; leave it as other tests expect
    for name, c, p in zip(names, cpp, python, strict=True):
        assert c["crop"] == p["crop"], name
        assert [x["index"] for x in c["predictions"]] == [x["index"] for x in p["predictions"]], name
        assert [x["label"] for x in c["predictions"]] == [x["label"] for x in p["predictions"]], name
        for x, y in zip(c["predictions"], p["predictions"], strict=True):
            assert abs(x["probability"] - y["probability"]) <= PROBABILITY_TOLERANCE, name
        assert c["embedding"]["dim"] == p["embedding"]["dim"] == 2048
        for key in ("mean", "variance"):
            assert c["embedding"][key] == pytest.approx(p["embedding"][key], rel=STATS_RELATIVE_TOLERANCE), (name, key)


def test_answer_has_the_server_contract(cpp_binary, tiny_model_dir, image_dir):
    [answer] = run_cpp(cpp_binary, [image_dir / "jpeg_420"], tiny_model_dir, seed=5)
    assert list(answer) == ["predictions", "embedding", "crop"]
    assert [list(p) for p in answer["predictions"]] == [["label", "index", "probability"]] * 2
    probabilities = [p["probability"] for p in answer["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert list(answer["embedding"]) == ["mean", "variance", "dim"]
    assert list(answer["crop"]) == ["mode", "seed", "box"]
