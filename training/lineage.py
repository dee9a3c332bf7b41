"""Which data made a model: a fingerprint of the dataset a run trained and validated on.

The fingerprint is a SHA-256 over the ordered items of both splits, each item being its label and its content:
a file's bytes (ImageFolder trees: the name relative to the tree's root too, so a file moved to another class
changes it), or an in-memory image's mode, size and pixels (CIFAR-10 batches, the built-in generated set, whose
pixels follow from its seed and settings). Class counts come with it, so a reader sees at a glance what changed.

Training writes it into ``metadata.json`` (``data_fingerprint``), the MLflow run and the registry version; the int8
export recomputes it before it calibrates on the same data (training/export_onnx.py), and refuses data that changed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

Item = tuple[Any, int]  # (a Path or a PIL image, class index), as training.datasets.training_items returns them


def _item_bytes(item: Any, root: Path | None) -> list[bytes]:
    if isinstance(item, Path):
        name = str(item.relative_to(root)) if root is not None and item.is_relative_to(root) else item.name
        return [b"file", name.encode(), item.read_bytes()]
    if isinstance(item, Image.Image):
        return [b"image", item.mode.encode(), f"{item.width}x{item.height}".encode(), item.tobytes()]
    raise TypeError(f"cannot fingerprint a dataset item of type {type(item).__name__}")


def fingerprint(classes: Sequence[str], train: Sequence[Item], val: Sequence[Item], data: str | None = None) -> dict:
    """``{"sha256", "items", "class_counts": {"train": {...}, "val": {...}}}`` of the two splits, in their order.

    ``data`` is training's --data flag: file names are hashed relative to that folder.
    """
    root = Path(data) if data else None
    digest = hashlib.sha256()
    digest.update("\0".join(classes).encode())
    for split, items in (("train", train), ("val", val)):
        digest.update(f"\0split:{split}:{len(items)}".encode())
        for content, label in items:
            digest.update(f"\0{label}".encode())
            for part in _item_bytes(content, root):
                # Length-prefixed, so that no two different item sequences hash the same bytes.
                digest.update(len(part).to_bytes(8, "big"))
                digest.update(part)

    def counts(items: Sequence[Item]) -> dict[str, int]:
        per_label = Counter(label for _, label in items)
        return {name: per_label.get(i, 0) for i, name in enumerate(classes)}

    return {
        "sha256": digest.hexdigest(),
        "items": len(train) + len(val),
        "class_counts": {"train": counts(train), "val": counts(val)},
    }


def check_unchanged(recorded: dict | None, current: dict, what: str) -> None:
    """Stop with a message naming both hashes when ``current`` differs from the ``recorded`` fingerprint."""
    if recorded is None or recorded.get("sha256") == current["sha256"]:
        return
    raise SystemExit(
        f"error: the data {what} changed since the model was trained: fingerprint {current['sha256'][:12]} "
        f"({current['items']} items) against {recorded['sha256'][:12]} ({recorded.get('items')} items) in metadata.json. "
        "Retrain on the new data (make train, or dvc repro), or restore the data the model was trained on."
    )


def check_within(root: Path, paths: dict[str, Path | str | None], config: Path) -> None:
    """Stop when a data path lies outside ``root``: DVC reruns training only for changes under the folders it hashes."""
    base = root.resolve()
    for flag, path in paths.items():
        if path is not None and not Path(path).resolve().is_relative_to(base):
            raise SystemExit(
                f"error: {config} sets {flag}: {path}, outside {root}/, the folder dvc.yaml hashes, so DVC would not see "
                f"it change. Move or copy it under {root}/ and set {flag}: {root}/<name>."
            )


def main(argv: list[str] | None = None) -> dict:
    """The fingerprint of the data that a train --config file names, written to --output (dvc.yaml's data stage)."""
    import argparse
    import json

    from training import train
    from training.datasets import training_items

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", type=Path, required=True, help="train --config file naming the data")
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument(
        "--data-root", type=Path, default=None, help="refuse a --data or --cifar outside this folder (dvc.yaml's dependency)"
    )
    args = parser.parse_args(argv)
    flags = train.parse_args(["--config", str(args.config)])
    if args.data_root is not None:
        check_within(args.data_root, {"data": flags.data, "cifar": flags.cifar}, args.config)
    classes, items, val, description = training_items(vars(flags))
    result = {"data": description, **fingerprint(classes, items, val, flags.data)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{description}: {result['items']} items, sha256 {result['sha256'][:12]} -> {args.output}")
    return result


if __name__ == "__main__":
    main()
