"""Image streams for the drift monitor: in-distribution, and shifted in the ways a deployed model meets.

    python -m monitoring.drift_streams --url http://127.0.0.1:8080 --shift blur --count 600   # to a server

Shifts (``SHIFTS``): ``none`` (fresh generated images), ``invert`` (colour inversion), ``blur`` (Gaussian,
radius 6), ``noise`` (Gaussian, sd 80 grey levels), ``photo_like`` (smooth colour fields with no texture,
like out-of-focus photos), ``rings`` (a texture the model never saw) and ``one_class`` (a single class only).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from training import synthetic

SHIFTS: tuple[str, ...] = ("none", "invert", "blur", "noise", "photo_like", "rings", "one_class")


def _photo_like(rng: np.random.Generator) -> Image.Image:
    """A low-frequency colour field: a few random colours bilinearly blown up, no edges or periodic texture."""
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    width, height = (int(v) for v in rng.integers(64, 321, size=2))
    return Image.fromarray(small, "RGB").resize((width, height), Image.BILINEAR)


def _rings(rng: np.random.Generator) -> Image.Image:
    width, height = (int(v) for v in rng.integers(64, 321, size=2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, period = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(8.0, 20.0)
    mask = np.floor(np.hypot(xx - cx, yy - cy) / period * 2) % 2 == 0
    fg, bg = rng.integers(0, 256, size=(2, 3))
    return Image.fromarray(np.where(mask[..., None], fg, bg).astype(np.uint8), "RGB")


def images(shift: str, count: int, seed: int) -> Iterator[Image.Image]:
    """``count`` images of a stream, deterministic for a seed."""
    if shift not in SHIFTS:
        raise ValueError(f"Invalid shift {shift!r}. Only {', '.join(SHIFTS)} are supported.")
    rng = np.random.default_rng(seed)
    for n in range(count):
        if shift == "photo_like":
            yield _photo_like(rng)
            continue
        if shift == "rings":
            yield _rings(rng)
            continue
        name = synthetic.CLASSES[0] if shift == "one_class" else synthetic.CLASSES[n % len(synthetic.CLASSES)]
        img = synthetic.render(name, rng)
        if shift == "invert":
            img = ImageOps.invert(img)
        elif shift == "blur":
            img = img.filter(ImageFilter.GaussianBlur(6))
        elif shift == "noise":
            noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 80, size=(img.height, img.width, 3))
            img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
        yield img


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    import requests

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="inference address (default: http://127.0.0.1:8080)")
    p.add_argument("--shift", default="none", choices=SHIFTS, help="which stream (default: none)")
    p.add_argument("--count", type=int, default=600, help="images to send (default: 600)")
    p.add_argument("--seed", type=int, default=0, help="stream seed (default: 0)")
    p.add_argument("--clients", type=int, default=4, help="concurrent requests (default: 4)")
    args = p.parse_args(argv)
    url = f"{args.url}/predictions/classifier"
    bodies = [png_bytes(img) for img in images(args.shift, args.count, args.seed)]
    with ThreadPoolExecutor(args.clients) as pool:
        codes = list(pool.map(lambda body: requests.put(url, data=body, timeout=60).status_code, bodies))
    print(f"sent {len(codes)} {args.shift} images: {codes.count(200)} answered 200")


if __name__ == "__main__":
    main()
