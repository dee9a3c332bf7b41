"""Write the load-test images: generated PNG and JPEG files of mixed sizes, or phone-like photos.

    python -m loadtests.images DIR [--per-class 6] [--large-per-class 1] [--seed 2026]
    python -m loadtests.images DIR --kind photos [--photos 6]

Mixed: most images are 64-320 px (the training distribution); a few are 800-1600 px,
so the decode and resize cost of larger uploads is part of every load test.

Photos: 12 MP (4000x3000) JPEGs at quality 90, 4-6 MB each like a phone camera's, some with an EXIF
rotation. Detail at every scale plus sensor-like grain: a smooth synthetic JPEG is several times cheaper
to entropy-decode than a real photo, and entropy decoding is what a photo's decode time is made of.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from training import synthetic

LARGE_SIZES = (800, 1600)
PHOTO_SIZE = (4000, 3000)
# Portrait shots are stored landscape with orientation 6 (or 8); 3 is a phone held upside down.
PHOTO_ORIENTATIONS = (1, 6, 1, 8, 3, 1)


def write_images(root: Path, per_class: int = 6, large_per_class: int = 1, seed: int = 2026) -> list[Path]:
    """``per_class`` small and ``large_per_class`` large images of every class, alternating PNG and JPEG."""
    paths = synthetic.write_folder(root, per_class=per_class, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for n in range(large_per_class):
        for label, name in enumerate(synthetic.CLASSES):
            img = synthetic.render(name, rng, size_range=LARGE_SIZES)
            ext = ("png", "jpeg")[(n + label) % 2]
            path = root / name / f"large_{n:03d}.{'jpg' if ext == 'jpeg' else ext}"
            img.save(path, format=ext.upper(), **({"quality": 90} if ext == "jpeg" else {}))
            paths.append(path)
    return paths


def photo_like(rng: np.random.Generator, width: int = PHOTO_SIZE[0], height: int = PHOTO_SIZE[1]) -> Image.Image:
    """Colour structure at four scales (objects to fine texture) plus luminance and chroma grain."""
    acc = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((6, 0.5), (40, 0.25), (250, 0.15), (1000, 0.10)):
        small = rng.integers(0, 256, (max(2, cells * height // width), cells, 3), dtype=np.uint8)
        acc += weight * np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    acc += rng.normal(0, float(rng.uniform(7, 10)), (height, width, 1)).astype(np.float32)
    acc += rng.normal(0, 3, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))


def write_photos(root: Path, count: int = 6, seed: int = 2026) -> list[Path]:
    """``count`` photo-like 12 MP JPEGs (quality 90, 4:2:0 as phones write them), cycling PHOTO_ORIENTATIONS."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for n in range(count):
        orientation = PHOTO_ORIENTATIONS[n % len(PHOTO_ORIENTATIONS)]
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = root / f"photo_{n:02d}_orientation{orientation}.jpg"
        photo_like(rng).save(path, format="JPEG", quality=90, exif=exif.tobytes())
        paths.append(path)
    return paths


# A web-sized photo, 640x427: the size of the sample photo every image library ships (scikit-learn's china.jpg).
SAMPLE_SIZE = (640, 427)


def write_sample(root: Path, seed: int = 2026) -> Path:
    """One photo-like JPEG of SAMPLE_SIZE at quality 90: a single, typical web upload."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "sample_640x427.jpg"
    photo_like(np.random.default_rng(seed), *SAMPLE_SIZE).save(path, format="JPEG", quality=90)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--kind", choices=("mixed", "photos"), default="mixed", help="which image set (default: mixed)")
    parser.add_argument("--photos", type=int, default=6, help="photos to write with --kind photos (default: 6)")
    parser.add_argument("--per-class", type=int, default=6, help="64-320 px images per class (default: 6)")
    parser.add_argument("--large-per-class", type=int, default=1, help="800-1600 px images per class (default: 1)")
    parser.add_argument("--seed", type=int, default=2026, help="generator seed (default: 2026)")
    args = parser.parse_args(argv)
    if args.kind == "photos":
        paths = write_photos(args.out, args.photos, args.seed)
    else:
        paths = write_images(args.out, args.per_class, args.large_per_class, args.seed)
    print(f"wrote {len(paths)} images to {args.out}")


if __name__ == "__main__":
    main()
