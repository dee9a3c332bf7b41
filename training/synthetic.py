"""The built-in dataset: procedurally drawn textures, generated offline from a seed.

Each class is a periodic texture whose period (8-20 source pixels, 12-30 after the
1.5x zoom) is small enough that any 100x100 crop holds several periods, so the
class survives the serving preprocessing. Colours, period, phase, size and noise
are random per image, so colour and scale carry no class information.

Classes are not symmetric under rotation (horizontal vs vertical stripes), which
is why the default training turns rotation augmentation off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES: tuple[str, ...] = ("checkerboard", "dots", "horizontal_stripes", "vertical_stripes")


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours at least 80 grey levels apart in luminance, so the pattern stays visible."""
    weights = np.array([0.299, 0.587, 0.114])
    while True:
        a, b = rng.integers(0, 256, size=(2, 3))
        if abs(float(weights @ a) - float(weights @ b)) >= 80:
            return a.astype(np.float32), b.astype(np.float32)


def render(class_name: str, rng: np.random.Generator, size_range: tuple[int, int] = (64, 320)) -> Image.Image:
    """Draw one RGB image of ``class_name``; all randomness comes from ``rng``."""
    width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    period = float(rng.uniform(8.0, 20.0))
    phase_x, phase_y = rng.uniform(0.0, period, size=2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (xx + phase_x) / period, (yy + phase_y) / period
    if class_name == "horizontal_stripes":
        mask = np.floor(v * 2) % 2 == 0
    elif class_name == "vertical_stripes":
        mask = np.floor(u * 2) % 2 == 0
    elif class_name == "checkerboard":
        mask = (np.floor(u * 2) + np.floor(v * 2)) % 2 == 0
    elif class_name == "dots":
        radius = float(rng.uniform(0.2, 0.35))
        mask = (u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < radius**2
    else:
        raise ValueError(f"Invalid class {class_name!r}. Only {', '.join(CLASSES)} are supported.")
    fg, bg = _two_colours(rng)
    pixels = np.where(mask[..., None], fg, bg)
    pixels += rng.normal(0.0, float(rng.uniform(0.0, 12.0)), size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def generate(per_class: int, seed: int, size_range: tuple[int, int] = (64, 320)) -> list[tuple[Image.Image, int]]:
    """``per_class`` images of every class, interleaved by class, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    return [(render(name, rng, size_range), label) for _ in range(per_class) for label, name in enumerate(CLASSES)]


def write_folder(root: str | Path, per_class: int, seed: int, formats: tuple[str, ...] = ("png", "jpeg")) -> list[Path]:
    """Write generated images as files, cycling through ``formats``; returns the paths.

    Used for sample images, load tests and end-to-end tests: an ImageFolder
    layout (``root/<class>/<n>.<ext>``).
    """
    root = Path(root)
    paths = []
    for n, (img, label) in enumerate(generate(per_class, seed)):
        ext = formats[n % len(formats)]
        path = root / CLASSES[label] / f"{n:05d}.{'jpg' if ext == 'jpeg' else ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format=ext.upper(), **({"quality": 92} if ext == "jpeg" else {}))
        paths.append(path)
    return paths
