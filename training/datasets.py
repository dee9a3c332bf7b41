"""Datasets for training: an ImageFolder tree, CIFAR-10 python batches, and the training-only augmentation.

Every image, whatever its source, goes through ``classifier.transforms.zoom_crop_pad``,
the transform the TorchServe handler runs. Augmentation happens around it: flip,
rotation and colour jitter on the PIL image before it, noise on the tensor after it.
Validation never augments.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from classifier.decoding import ImageDecodeError, decode_image
from classifier.transforms import PreprocessConfig, pad_offsets, zoom_crop_pad
from training import synthetic

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Training-only augmentation; every part is off at its zero value.

    Args:
        hflip: flip left-right with probability 0.5.
        rotate: rotate by a uniform angle in [-rotate, rotate] degrees (0 = off).
        color_jitter: brightness, contrast and saturation factors drawn from [1-s, 1+s], hue by up to s/4 (0 = off).
        noise: std of Gaussian pixel noise on the [0, 1] scale, added to the crop only, not the padding (0 = off).
    """

    hflip: bool = False
    rotate: float = 0.0
    color_jitter: float = 0.0
    noise: float = 0.0

    def before(self, img: Image.Image, rng: random.Random) -> Image.Image:
        """PIL-level augmentation, applied before the serving preprocessing."""
        if self.hflip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.rotate > 0:
            img = img.rotate(rng.uniform(-self.rotate, self.rotate), resample=Image.Resampling.BILINEAR)
        if self.color_jitter > 0:
            from torchvision.transforms import ColorJitter

            s = self.color_jitter
            img = ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(s / 4, 0.5))(img)
        return img

    def after(self, tensor: torch.Tensor, crop_hw: tuple[int, int], config: PreprocessConfig) -> torch.Tensor:
        """Tensor-level augmentation on the normalised, padded network input."""
        if self.noise > 0:
            h, w = crop_hw
            top, left = pad_offsets(h, w, config.input_size)
            std = torch.tensor(config.std).view(3, 1, 1)
            tensor[:, top : top + h, left : left + w] += torch.randn(3, h, w) * self.noise / std
        return tensor


class PreprocessedImages(Dataset):
    """Images (in memory or as files) run through the serving preprocessing.

    Training draws a fresh random crop each time; evaluation seeds the crop by
    index so validation accuracy is reproducible.
    """

    def __init__(
        self,
        items: list[tuple[Image.Image | Path, int]],
        config: PreprocessConfig,
        train: bool,
        augment: Augment | None = None,
        seed: int = 0,
    ):
        self.items, self.config, self.train, self.seed = items, config, train, seed
        self.augment = augment if train and augment is not None else Augment()
        # Training draws from one stream seeded by --seed; with the loader in this process (no workers) and a seeded
        # shuffle, the draws happen in the same order on every run, so a run is reproducible.
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        source, label = self.items[idx]
        img = source if isinstance(source, Image.Image) else load_image_file(source, self.config)
        rng = self.rng if self.train else random.Random(self.seed * 1_000_003 + idx)
        img = self.augment.before(img, rng)
        tensor, box = zoom_crop_pad(img, self.config, "random", rng)
        return self.augment.after(tensor, (box.height, box.width), self.config), label


# ----------------------------------------------------------------------------- ImageFolder


def load_image_file(path: Path, config: PreprocessConfig) -> Image.Image:
    try:
        return decode_image(path.read_bytes(), config.max_image_pixels, config.background)
    except (OSError, ImageDecodeError) as exc:
        raise SystemExit(f"error: cannot read training image {path}: {exc}") from None


def list_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted subfolder names) and (file, class index) pairs of an ImageFolder tree."""
    if not root.is_dir():
        raise SystemExit(f"error: dataset folder {root} does not exist or is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    items = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not items:
        raise SystemExit(
            f"error: {root} needs at least two class subfolders holding images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); found {len(classes)} classes, {len(items)} images"
        )
    return classes, items


def split_items(items: list[tuple[Path, int]], val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic per-class split: the same files land in val for the same seed, whatever the OS's listing order."""
    if not 0 <= val_fraction < 1:
        raise SystemExit(f"error: --val-fraction {val_fraction} must be in [0, 1)")
    train, val = [], []
    for label in sorted({lbl for _, lbl in items}):
        files = sorted(f for f, lbl in items if lbl == label)
        random.Random(f"{seed}:{label}").shuffle(files)
        n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 and val_fraction > 0 else 0
        val += [(f, label) for f in files[:n_val]]
        train += [(f, label) for f in files[n_val:]]
    return train, val


def load_image_folder(root: Path, val_fraction: float, seed: int) -> tuple[list[str], list, list]:
    """Classes, train items and val items of ``root`` (class subfolders, or train/ and val/ of them)."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train_items = list_image_folder(root / "train")
        val_classes, val_items = list_image_folder(root / "val")
        if val_classes != classes:
            raise SystemExit(f"error: {root}/train and {root}/val have different classes: {classes} vs {val_classes}")
        return classes, train_items, val_items
    classes, items = list_image_folder(root)
    return classes, *split_items(items, val_fraction, seed)


# ----------------------------------------------------------------------------- CIFAR-10


def read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """One CIFAR-10 python batch: images as (N, 32, 32, 3) uint8 HWC, and labels."""
    if not path.is_file():
        raise SystemExit(f"error: CIFAR-10 batch {path} does not exist")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = [int(x) for x in batch[b"labels"]]
        # Rows are 3072 bytes, row-major: 1024 red, then 1024 green, then 1024 blue.
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as exc:
        raise SystemExit(f"error: {path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if len(images) != len(labels):
        raise SystemExit(f"error: {path} is corrupt: {len(images)} images but {len(labels)} labels")
    return images, labels


def balanced_subset(
    images: np.ndarray, labels: list[int], num_classes: int, per_class: int | None, source: str
) -> list[tuple[Image.Image, int]]:
    """The first ``per_class`` images of each of the first ``num_classes`` classes, in file order."""
    taken: dict[int, list[int]] = {c: [] for c in range(num_classes)}
    for i, label in enumerate(labels):
        if label < num_classes and (per_class is None or len(taken[label]) < per_class):
            taken[label].append(i)
    short = {c: len(ix) for c, ix in taken.items() if per_class is not None and len(ix) < per_class}
    if short:
        raise SystemExit(
            f"error: {source} holds fewer than {per_class} images for classes {short}; "
            f"lower --cifar-per-class or add --cifar-train-batches"
        )
    order = sorted(i for ix in taken.values() for i in ix)
    return [(Image.fromarray(images[i], "RGB"), labels[i]) for i in order]


def load_cifar(
    root: Path, num_classes: int, per_class: int | None, train_batches: list[str], val_per_class: int | None
) -> tuple[list[str], list, list]:
    """Classes, train items and val items (from test_batch) of an extracted ``cifar-10-batches-py`` folder."""
    if not root.is_dir():
        raise SystemExit(
            f"error: CIFAR-10 folder {root} does not exist. This script never downloads: get {CIFAR_URL}, "
            f"extract it (tar xzf cifar-10-python.tar.gz) and pass --cifar path/to/cifar-10-batches-py"
        )
    meta_path = root / "batches.meta"
    try:
        with meta_path.open("rb") as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in pickle.load(f, encoding="bytes")[b"label_names"]]
    except FileNotFoundError:
        raise SystemExit(f"error: {meta_path} does not exist; is {root} an extracted cifar-10-batches-py folder?") from None
    except Exception as exc:
        raise SystemExit(f"error: {meta_path} is not a CIFAR-10 batches.meta ({type(exc).__name__}: {exc})") from None
    if not 2 <= num_classes <= len(names):
        raise SystemExit(f"error: --cifar-classes {num_classes} must be between 2 and {len(names)}")
    train_images, train_labels = [], []
    for name in train_batches:
        images, labels = read_cifar_batch(root / name)
        train_images.append(images)
        train_labels += labels
    source = f"{root} ({', '.join(train_batches)})"
    train = balanced_subset(np.concatenate(train_images), train_labels, num_classes, per_class, source)
    test_images, test_labels = read_cifar_batch(root / "test_batch")
    if val_per_class:  # the first val_per_class of each class; the real test_batch has 1,000 of each
        val_per_class = min(val_per_class, *(test_labels.count(c) for c in range(num_classes)))
    val = balanced_subset(test_images, test_labels, num_classes, val_per_class or None, str(root / "test_batch"))
    return names[:num_classes], train, val


# ----------------------------------------------------------------------------- which data a run used


def training_items(args: Mapping[str, Any]) -> tuple[list[str], list, list, str]:
    """Classes, train items, val items and a description of the data that training ``args`` name.

    Training calls it with its parsed flags; the ONNX export calls it with the flags saved in
    ``metadata.json``, so int8 calibration sees the same images the model was trained on.
    """
    if args.get("cifar"):
        batches = [b.strip() for b in args["cifar_train_batches"].split(",") if b.strip()]
        classes, train, val = load_cifar(
            Path(args["cifar"]), args["cifar_classes"], args["cifar_per_class"], batches, args["cifar_val_per_class"]
        )
        return classes, train, val, f"CIFAR-10 {args['cifar']} ({', '.join(batches)})"
    if args.get("data"):
        classes, train, val = load_image_folder(Path(args["data"]), args["val_fraction"], args["seed"])
        return classes, train, val, f"image folder {args['data']}"
    train = synthetic.generate(args["synthetic_per_class"], seed=args["seed"])
    val = synthetic.generate(args["synthetic_val_per_class"], seed=args["seed"] + 1)
    return list(synthetic.CLASSES), train, val, f"built-in synthetic textures (seed {args['seed']})"
