"""Write the load-test images: generated PNG and JPEG files of mixed sizes.

    python -m loadtests.images DIR [--per-class 6] [--large-per-class 1] [--seed 2026]

Most images are 64-320 px (the training distribution); a few are 800-1600 px,
so the decode and resize cost of larger uploads is part of every load test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training import synthetic

LARGE_SIZES = (800, 1600)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--per-class", type=int, default=6, help="64-320 px images per class (default: 6)")
    parser.add_argument("--large-per-class", type=int, default=1, help="800-1600 px images per class (default: 1)")
    parser.add_argument("--seed", type=int, default=2026, help="generator seed (default: 2026)")
    args = parser.parse_args(argv)
    paths = write_images(args.out, args.per_class, args.large_per_class, args.seed)
    print(f"wrote {len(paths)} images to {args.out}")


if __name__ == "__main__":
    main()
