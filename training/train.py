"""Train a torchvision ResNet50 and export it for serving.

    python -m training.train                      # built-in generated dataset, offline
    python -m training.train --data DIR           # your ImageFolder tree
    python -m training.train --weights resnet50.pth --epochs 0   # export ImageNet weights as-is

Inputs go through handlers.preprocessing, the same code the TorchServe handler
runs, so the model is trained on exactly what it will be served. The export
folder (default build/model) holds what `make archive` packs: model.pt2 (a
torch.export ExportedProgram returning logits and the 2048-d embedding),
index_to_name.json and metadata.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from handlers.model import ARCHITECTURES, ResNetWithEmbedding, build_backbone
from handlers.preprocessing import ImageDecodeError, PreprocessConfig, decode_image, zoom_crop_pad
from training import synthetic

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="ImageFolder root (class subfolders, or train/ and val/ of them); "
                   "default: the built-in generated dataset")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out when --data has no val/ (default: 0.2)")
    p.add_argument("--synthetic-per-class", type=int, default=200, help="generated training images per class (default: 200)")
    p.add_argument("--synthetic-val-per-class", type=int, default=40, help="generated validation images per class (default: 40)")
    p.add_argument("--arch", default="resnet50", choices=ARCHITECTURES, help="network; 'tiny' is for tests (default: resnet50)")
    p.add_argument("--weights", default=None, help="initial weights: a local ResNet50 state-dict file, or a torchvision "
                   "name such as IMAGENET1K_V2 (needs network); default: random")
    p.add_argument("--epochs", type=int, default=6, help="training epochs; 0 exports the initial weights (default: 6)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: 0.05)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=True, help="random horizontal flips (default: on)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast + channels_last; about 3x faster on CPUs with AVX512-BF16/AMX (default: on where supported)")
    p.add_argument("--limit-batches", type=int, default=None, help="stop each epoch after N batches, for smoke runs (default: no limit)")
    p.add_argument("--seed", type=int, default=0, help="seed for data generation, splits, crops and init (default: 0)")
    p.add_argument("--output-dir", default="build/model", help="export folder that `make archive` packs (default: build/model)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    return p


# ----------------------------------------------------------------------------- data


class PreprocessedImages(Dataset):
    """Images (in memory or as files) run through the serving preprocessing.

    Training draws a fresh random crop each time; evaluation seeds the crop by
    index so validation accuracy is reproducible.
    """

    def __init__(self, items: list[tuple[Image.Image | Path, int]], config: PreprocessConfig,
                 train: bool, hflip: bool = False, seed: int = 0):
        self.items, self.config, self.train, self.hflip, self.seed = items, config, train, hflip, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        source, label = self.items[idx]
        img = source if isinstance(source, Image.Image) else load_image_file(source, self.config)
        rng = random.Random() if self.train else random.Random(self.seed * 1_000_003 + idx)
        if self.train and self.hflip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        tensor, _ = zoom_crop_pad(img, self.config, "random", rng)
        return tensor, label


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
    items = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not items:
        raise SystemExit(f"error: {root} needs at least two class subfolders holding images "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))}); found {len(classes)} classes, {len(items)} images")
    return classes, items


def split_items(items: list[tuple[Path, int]], val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic per-class split: the same files land in val for the same seed, whatever the OS's listing order."""
    train, val = [], []
    for label in sorted({lbl for _, lbl in items}):
        files = sorted(f for f, lbl in items if lbl == label)
        random.Random(f"{seed}:{label}").shuffle(files)
        n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 else 0
        val += [(f, label) for f in files[:n_val]]
        train += [(f, label) for f in files[n_val:]]
    return train, val


def load_data(args, config: PreprocessConfig) -> tuple[list[str], Dataset, Dataset]:
    if args.data is None:
        classes = list(synthetic.CLASSES)
        train_items = synthetic.generate(args.synthetic_per_class, seed=args.seed)
        val_items = synthetic.generate(args.synthetic_val_per_class, seed=args.seed + 1)
    else:
        root = Path(args.data)
        if (root / "train").is_dir() and (root / "val").is_dir():
            classes, train_items = list_image_folder(root / "train")
            val_classes, val_items = list_image_folder(root / "val")
            if val_classes != classes:
                raise SystemExit(f"error: {root}/train and {root}/val have different classes: {classes} vs {val_classes}")
        else:
            classes, items = list_image_folder(root)
            train_items, val_items = split_items(items, args.val_fraction, args.seed)
    return (classes,
            PreprocessedImages(train_items, config, train=True, hflip=args.hflip),
            PreprocessedImages(val_items, config, train=False, seed=args.seed))


# ----------------------------------------------------------------------------- model


def load_initial_weights(spec: str) -> dict[str, torch.Tensor]:
    """A ResNet50 state dict from a local file or, where the network allows, torchvision's named weights."""
    from torchvision.models import ResNet50_Weights

    path = Path(spec)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SystemExit(f"error: {path} is not a readable PyTorch state dict: {exc}") from None
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise SystemExit(f"error: {path} does not hold a state dict")
        return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    if spec in ResNet50_Weights.__members__:
        try:
            return ResNet50_Weights[spec].get_state_dict(progress=False)
        except Exception as exc:
            raise SystemExit(
                f"error: could not download torchvision's ResNet50 weights {spec} ({type(exc).__name__}: {exc}).\n"
                f"This machine is probably offline. Download {ResNet50_Weights[spec].url} elsewhere "
                f"and pass the file: --weights /path/to/{ResNet50_Weights[spec].url.rsplit('/', 1)[-1]}") from None
    names = ", ".join(ResNet50_Weights.__members__)
    raise SystemExit(f"error: --weights {spec!r} is neither an existing file nor a torchvision weights name ({names})")


def build_model(arch: str, num_classes: int, weights: dict[str, torch.Tensor] | None) -> ResNetWithEmbedding:
    backbone = build_backbone(arch, num_classes)
    if weights is not None:
        own = backbone.state_dict()
        # A classifier head of another size (1000 ImageNet classes vs ours) starts fresh.
        keep = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in keep and not k.startswith("fc.")]
        if missing:
            raise SystemExit(f"error: the weights do not fit a {arch} backbone; missing or mis-shaped: {missing[:5]}")
        backbone.load_state_dict(keep, strict=False)
    return ResNetWithEmbedding(backbone)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# ----------------------------------------------------------------------------- train / evaluate


def train_one_epoch(model, loader, optimizer, scheduler, amp: bool, epoch: int, limit: int | None) -> dict:
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", total=min(len(loader), limit or len(loader)), file=sys.stdout)
    for step, (images, labels) in enumerate(bar):
        if limit is not None and step >= limit:
            break
        if amp:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits, _ = model(images)
            loss = nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}


@torch.inference_mode()
def evaluate(model, loader, amp: bool, limit: int | None = None) -> dict:
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for step, (images, labels) in enumerate(tqdm(loader, desc="validate", unit="batch", leave=False, file=sys.stdout)):
        if limit is not None and step >= limit:
            break
        if amp:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits, _ = model(images)
        loss_sum += nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "images": seen}


# ----------------------------------------------------------------------------- export


def export(model: ResNetWithEmbedding, out_dir: Path, classes: list[str], config: PreprocessConfig, metadata: dict) -> None:
    """Write model.pt2 (batch dimension dynamic), index_to_name.json and metadata.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, config.input_size, config.input_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out_dir / "model.pt2")
    (out_dir / "index_to_name.json").write_text(json.dumps({str(i): c for i, c in enumerate(classes)}, indent=1))
    (out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))


# ----------------------------------------------------------------------------- main


def main(args) -> dict:
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = cpu_has_bf16() if args.amp is None else args.amp
    config = PreprocessConfig()

    weights = load_initial_weights(args.weights) if args.weights else None
    imagenet_export = args.epochs == 0 and weights is not None and weights.get("fc.weight", torch.empty(0)).shape[:1] == (1000,)
    if imagenet_export:
        from torchvision.models import ResNet50_Weights
        classes = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
        train_ds = val_ds = None
    else:
        classes, train_ds, val_ds = load_data(args, config)
    model = build_model(args.arch, len(classes), weights)
    if imagenet_export:
        model.backbone.load_state_dict(weights)
    print(f"{args.arch}: {len(classes)} classes ({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}); "
          f"bf16 autocast {'on' if amp else 'off'}; {torch.get_num_threads()} threads")

    history, best = [], {"epoch": None, "val_accuracy": None, "val_loss": None}
    best_state = copy.deepcopy(model.state_dict())
    if args.epochs > 0:
        print(f"train {len(train_ds)} images, validate {len(val_ds)} images")
        train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, drop_last=len(train_ds) > args.batch_size,
                                  generator=torch.Generator().manual_seed(args.seed))
        val_loader = DataLoader(val_ds, batch_size=args.batch_size * 2)
        if amp:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        steps = args.epochs * min(len(train_loader), args.limit_batches or len(train_loader))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=max(steps, 1), pct_start=0.15)
        for epoch in range(1, args.epochs + 1):
            train_stats = train_one_epoch(model, train_loader, optimizer, scheduler, amp, epoch, args.limit_batches)
            val_stats = evaluate(model, val_loader, amp, args.limit_batches)
            history.append({"epoch": epoch, "train": train_stats, "val": val_stats})
            print(f"epoch {epoch}: train loss {train_stats['loss']:.4f} acc {train_stats['accuracy']:.3f} | "
                  f"val loss {val_stats['loss']:.4f} acc {val_stats['accuracy']:.3f}")
            # Keep the best epoch, not the last: accuracy first, lower loss breaks ties.
            if best["epoch"] is None or (val_stats["accuracy"], -val_stats["loss"]) > (best["val_accuracy"], -best["val_loss"]):
                best = {"epoch": epoch, "val_accuracy": val_stats["accuracy"], "val_loss": val_stats["loss"]}
                best_state = copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)

    train_seconds = time.perf_counter() - started
    metadata = {
        "arch": args.arch,
        "num_classes": len(classes),
        "classes": classes,
        "input_size": config.input_size,
        "outputs": ["logits", "embedding"],
        "embedding_dim": model.backbone.fc.in_features,
        "preprocessing": config.to_dict(),
        "training": {"args": vars(args), "data": args.data or "built-in synthetic", "bf16_autocast": amp,
                     "best": best, "history": history, "seconds": round(train_seconds, 1),
                     "torch": torch.__version__},
    }
    export(model, Path(args.output_dir), classes, config, metadata)
    total = time.perf_counter() - started
    if best["val_accuracy"] is not None:
        print(f"validation accuracy {best['val_accuracy']:.4f} (best epoch {best['epoch']} of {args.epochs})")
    print(f"exported to {args.output_dir} in {total:.0f} s total")
    return metadata


if __name__ == "__main__":
    main(get_args_parser().parse_args())
