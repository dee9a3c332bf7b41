"""One image's bytes to the network's input: decode, zoom, crop, normalise, pad.

    decoding.decode_image -> transforms.zoom_crop_pad          (any format)
    region.preprocess_jpeg_region                               (a JPEG: only the crop's pixels are decoded)

Both paths give the same tensor and crop box. Training imports :mod:`classifier.transforms` so the model is trained
on exactly the tensors it is served; every function is pure (same inputs and seed, same output).
"""

from __future__ import annotations

import random
import time

import torch

from classifier.decoding import decode_image, decode_opened, open_image
from classifier.region import preprocess_jpeg_region, region_decodable
from classifier.transforms import CropBox, CropMode, PreprocessConfig, zoom_crop_pad


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
        if region_decodable(img, data):
            return preprocess_jpeg_region(img, data, config, mode, rng, timings, started)
        img = decode_opened(img, config.background)  # the header is already read and the size already checked
    else:
        img = decode_image(data, config.max_image_pixels, config.background)
    if timings is not None:
        timings["decode"] = time.perf_counter() - started
    return zoom_crop_pad(img, config, mode, rng)
