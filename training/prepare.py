"""Split a flat folder of class subfolders into DST/train and DST/val, deterministically.

    python -m training.prepare SRC DST --val-fraction 0.2 --seed 0
    make prepare SRC=... DST=...

The same seed puts the same files in val whatever order the filesystem lists them
(the split is training.datasets.split_items, which train.py uses for --data
without val/). Files are hardlinked, or copied where DST is on another filesystem
or --copy is given. DST must not exist yet, or be empty.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from training.datasets import list_image_folder, split_items


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="folder of class subfolders holding images")
    p.add_argument("dst", help="new folder to write train/ and val/ into")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class put in val/ (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    p.add_argument("--copy", action="store_true", help="copy files instead of hardlinking them (default: hardlink)")
    return p


def place(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.link(src, dst)
            return
        except OSError:  # another filesystem, or links not supported: fall back to a copy
            pass
    shutil.copy2(src, dst)


def prepare(src: Path, dst: Path, val_fraction: float, seed: int, copy: bool = False) -> dict[str, int]:
    """Write dst/train/<class>/... and dst/val/<class>/...; returns the number of files in each split."""
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"error: {dst} already exists and is not empty; choose a new folder")
    if dst.resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"error: {dst} is inside {src}; it would be read as a class folder next time")
    classes, items = list_image_folder(src)
    train, val = split_items(items, val_fraction, seed)
    for split, chosen in (("train", train), ("val", val)):
        for path, label in chosen:
            place(path, dst / split / classes[label] / path.relative_to(src / classes[label]), copy)
    counts = {"train": len(train), "val": len(val)}
    (dst / "split.json").write_text(
        json.dumps({"source": str(src), "val_fraction": val_fraction, "seed": seed, "classes": classes, **counts}, indent=2)
    )
    return counts


def main(args: argparse.Namespace) -> None:
    counts = prepare(Path(args.src), Path(args.dst), args.val_fraction, args.seed, args.copy)
    print(f"wrote {args.dst}: {counts['train']} train and {counts['val']} val images")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
