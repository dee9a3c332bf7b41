"""Train a torchvision ResNet50 and export it for serving.

    python -m training.train                      # built-in generated dataset, offline
    python -m training.train --data DIR           # your ImageFolder tree
    python -m training.train --cifar cifar-10-batches-py --cifar-classes 4 --cifar-per-class 1000
    python -m training.train --config configs/example.yaml   # flags from YAML; CLI flags override it
    python -m training.train --resume runs/NAME/checkpoint_last.pt --epochs 10     # continue a run
    python -m training.train --weights resnet50.pth --epochs 0   # export ImageNet weights as-is

Inputs go through classifier.transforms, the same code the TorchServe handler
runs, so the model is trained on exactly what it will be served. The export
folder (default build/model) holds what `make archive` packs: model.pt2 (a
torch.export ExportedProgram returning logits and the 2048-d embedding),
index_to_name.json and metadata.json. The run folder (default runs/<timestamp>)
holds args.json, metrics.json, loss/accuracy/confusion PNGs and the last and best
checkpoints; the export is always the best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from classifier import drift
from classifier.backends import cpu_flags, has_bf16
from classifier.model import ARCHITECTURES, ResNetWithEmbedding, build_backbone
from classifier.transforms import PreprocessConfig
from training import report
from training.datasets import Augment, PreprocessedImages, training_items

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "step", "none")
# Defaults that depend on the optimizer: AdamW wants a small lr and large decoupled decay, SGD the opposite.
OPT_DEFAULTS = {"adamw": {"lr": 1e-3, "weight_decay": 0.05}, "sgd": {"lr": 0.05, "weight_decay": 1e-4}}


# ----------------------------------------------------------------------------- train / evaluate


def forward(model: nn.Module, images: torch.Tensor, amp: bool) -> torch.Tensor:
    """Logits in float32; with ``amp``, the network runs in bf16 autocast on channels-last input."""
    if amp:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits, _ = model(images)
    return logits.float()


def train_one_epoch(model, loader, optimizer, scheduler, amp: bool, epoch: int, limit: int | None) -> dict:
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", total=min(len(loader), limit or len(loader)), file=sys.stdout)
    for step, (images, labels) in enumerate(bar):
        if limit is not None and step >= limit:
            break
        logits = forward(model, images, amp)
        loss = nn.functional.cross_entropy(logits, labels)
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
def evaluate(model, loader, amp: bool, classes: list[str], topk: int, limit: int | None = None) -> dict:
    """Loss, top-1, top-k, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    model.eval()
    n = len(classes)
    k = min(topk, n)
    loss_sum, correct, correct_k, seen = 0.0, 0, 0, 0
    confusion = torch.zeros(n, n, dtype=torch.long)
    for step, (images, labels) in enumerate(tqdm(loader, desc="validate", unit="batch", leave=False, file=sys.stdout)):
        if limit is not None and step >= limit:
            break
        logits = forward(model, images, amp)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        predicted = logits.argmax(1)
        correct += (predicted == labels).sum().item()
        correct_k += (logits.topk(k, dim=1).indices == labels[:, None]).any(1).sum().item()
        confusion += torch.bincount(labels * n + predicted, minlength=n * n).view(n, n)
        seen += len(labels)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    return {
        "loss": loss_sum / max(seen, 1),
        "accuracy": correct / max(seen, 1),
        "k": k,
        "topk_accuracy": correct_k / max(seen, 1),
        "images": seen,
        "per_class_accuracy": dict(zip(classes, per_class, strict=True)),
        "confusion": confusion.tolist(),
    }


# ----------------------------------------------------------------------------- data


def load_data(args, config: PreprocessConfig) -> tuple[list[str], Dataset, Dataset, str]:
    """Classes, the train and val sets through the serving preprocessing, and what the data is."""
    classes, train_items, val_items, description = training_items(vars(args))
    if not val_items:
        raise SystemExit("error: the validation set is empty; raise --val-fraction or add images")
    augment = Augment(hflip=args.hflip, rotate=args.rotate, color_jitter=args.color_jitter, noise=args.noise)
    return (
        classes,
        PreprocessedImages(train_items, config, train=True, augment=augment, seed=args.seed),
        PreprocessedImages(val_items, config, train=False, seed=args.seed),
        description,
    )


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
                f"and pass the file: --weights /path/to/{ResNet50_Weights[spec].url.rsplit('/', 1)[-1]}"
            ) from None
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


# ----------------------------------------------------------------------------- optimisation


def build_optimizer(args, model: nn.Module) -> torch.optim.Optimizer:
    if args.opt == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.opt == "sgd":
        return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    raise SystemExit(f"error: invalid optimizer {args.opt!r}. Only {', '.join(OPTIMIZERS)} are supported.")


def build_scheduler(args, optimizer, steps_per_epoch: int):
    """Every schedule is stepped once per batch, so resuming is "replay N steps" whatever the schedule."""
    total = max(args.epochs * steps_per_epoch, 1)
    if args.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total, pct_start=0.15)
    if args.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if args.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(args.lr_step_size * steps_per_epoch, 1), gamma=args.lr_gamma
        )
    if args.lr_schedule == "none":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise SystemExit(f"error: invalid --lr-schedule {args.lr_schedule!r}. Only {', '.join(SCHEDULES)} are supported.")


# ----------------------------------------------------------------------------- runs and checkpoints


def default_run_dir() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path("runs") / stamp, 1
    while path.exists():  # two runs started in the same second
        path, n = Path("runs") / f"{stamp}-{n}", n + 1
    return path


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(
            f"error: checkpoint {path} does not exist (a run folder holds checkpoint_last.pt and checkpoint_best.pt)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
        raise SystemExit(f"error: {path} is not a checkpoint written by training.train")
    return ckpt


# ----------------------------------------------------------------------------- fit


def is_better(val: dict, best: dict) -> bool:
    """Best epoch by validation accuracy, lower loss breaking ties. A diverged epoch (loss inf or NaN) never beats a
    finite one, whatever its accuracy: a network that outputs NaN predicts class 0 for everything, not something."""
    if best["epoch"] is None:
        return True

    def key(accuracy: float, loss: float) -> tuple:
        return (math.isfinite(loss), accuracy, -loss if math.isfinite(loss) else 0.0)

    return key(val["accuracy"], val["loss"]) > key(best["val_accuracy"], best["val_loss"])


# ----------------------------------------------------------------------------- export


@torch.inference_mode()
def drift_reference(forward, dataset: Dataset, num_classes: int, batch_size: int) -> dict:
    """What a healthy stream looks like to the serving drift monitor (classifier/drift.py): the held-out
    images through the serving preprocessing and the model in fp32, as served.

    ``forward`` maps a batch to ``(logits, embedding)``: the model in eval mode, or a loaded serving backend.
    """
    probabilities, embeddings = [], []
    for images, _ in DataLoader(dataset, batch_size=batch_size):
        logits, embedding = forward(images.contiguous())
        probabilities.append(torch.softmax(logits.float(), dim=1))
        embeddings.append(embedding.float())
    signals, predicted = drift.signals_from_outputs(torch.cat(probabilities).numpy(), torch.cat(embeddings).numpy())
    return drift.build_reference(signals, predicted, num_classes).to_dict()


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
    amp = has_bf16(cpu_flags()) if args.amp is None else args.amp
    config = PreprocessConfig()
    resume = load_checkpoint(Path(args.resume)) if args.resume else None
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.resume).parent if args.resume else default_run_dir()

    weights = load_initial_weights(args.weights) if args.weights else None
    imagenet_export = args.epochs == 0 and weights is not None and weights.get("fc.weight", torch.empty(0)).shape[:1] == (1000,)
    if imagenet_export:
        from torchvision.models import ResNet50_Weights

        classes = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
        train_ds = val_ds = data_description = None  # weights only: no training data to record or calibrate on
    else:
        classes, train_ds, val_ds, data_description = load_data(args, config)
    model = build_model(args.arch, len(classes), weights)
    if imagenet_export:
        model.backbone.load_state_dict(weights)
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: a run that fails on its data leaves no folder behind
    (run_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
    print(
        f"{args.arch}: {len(classes)} classes ({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}); "
        f"bf16 autocast {'on' if amp else 'off'}; {torch.get_num_threads()} threads; run folder {run_dir}"
    )

    history, best, start_epoch, stale, stopped_early = [], {"epoch": None, "val_accuracy": None, "val_loss": None}, 1, 0, False
    best_path, last_path = run_dir / "checkpoint_best.pt", run_dir / "checkpoint_last.pt"
    if resume is not None:
        if resume["args"]["arch"] != args.arch or resume["classes"] != classes:
            raise SystemExit(
                f"error: {args.resume} is a {resume['args']['arch']} over classes {resume['classes']}; "
                f"this run is a {args.arch} over {classes}"
            )
        model.load_state_dict(resume["model"])
        resumed_best = Path(args.resume).parent / "checkpoint_best.pt"
        if resumed_best.is_file() and not best_path.exists():  # resuming into a new folder: bring the best along
            shutil.copy2(resumed_best, best_path)
        history, best, stale = resume["history"], resume["best"], resume["stale_epochs"]
        start_epoch = resume["epoch"] + 1
        print(f"resumed from {args.resume} after epoch {resume['epoch']}")
    if args.epochs >= start_epoch:
        print(f"train {len(train_ds)} images, validate {len(val_ds)} images")
        shuffle = torch.Generator().manual_seed(args.seed)
        train_loader = DataLoader(
            train_ds, batch_size=args.batch_size, shuffle=True, drop_last=len(train_ds) > args.batch_size, generator=shuffle
        )
        val_loader = DataLoader(val_ds, batch_size=args.batch_size * 2)
        if amp:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(args, model)
        steps_per_epoch = min(len(train_loader), args.limit_batches or len(train_loader))
        scheduler = build_scheduler(args, optimizer, steps_per_epoch)
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            if resume["args"]["epochs"] == args.epochs and resume["args"]["lr_schedule"] == args.lr_schedule:
                scheduler.load_state_dict(resume["scheduler"])
            else:  # a new horizon: the same schedule, built for the new epoch count, replayed to where the run stands
                with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended, nothing trains here
                    warnings.simplefilter("ignore", UserWarning)
                    for _ in range(resume["steps"]):
                        scheduler.step()
        for epoch in range(start_epoch, args.epochs + 1):
            shuffle.manual_seed(args.seed * 1_000 + epoch)  # a resumed epoch sees the order it would have seen
            train_stats = train_one_epoch(model, train_loader, optimizer, scheduler, amp, epoch, args.limit_batches)
            val_stats = evaluate(model, val_loader, amp, classes, args.topk, args.limit_batches)
            confusion = val_stats.pop("confusion")
            history.append({"epoch": epoch, "lr": scheduler.get_last_lr()[0], "train": train_stats, "val": val_stats})
            print(
                f"epoch {epoch}: train loss {train_stats['loss']:.4f} acc {train_stats['accuracy']:.3f} | "
                f"val loss {val_stats['loss']:.4f} top-1 {val_stats['accuracy']:.3f} "
                f"top-{val_stats['k']} {val_stats['topk_accuracy']:.3f}"
            )
            # Early stopping watches the validation loss; the kept model is the best by accuracy (is_better).
            best_loss = min((h["val"]["loss"] for h in history[:-1] if math.isfinite(h["val"]["loss"])), default=math.inf)
            stale = 0 if val_stats["loss"] < best_loss - args.min_delta else stale + 1
            checkpoint = {
                "epoch": epoch,
                "model": model.state_dict(),
                "classes": classes,
                "args": vars(args),
                "history": history,
                "stale_epochs": stale,
                "confusion": confusion,
            }
            if is_better(val_stats, best):
                best = {
                    "epoch": epoch,
                    "val_accuracy": val_stats["accuracy"],
                    "val_loss": val_stats["loss"],
                    "confusion": confusion,
                }
                torch.save({**checkpoint, "best": best}, best_path)
            torch.save(
                {
                    **checkpoint,
                    "best": best,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "steps": epoch * steps_per_epoch,
                },
                last_path,
            )
            if args.patience and stale >= args.patience:
                stopped_early = True
                print(f"early stop: validation loss has not dropped for {stale} epochs (--patience {args.patience})")
                break
    if best["epoch"] is not None:
        model.load_state_dict(load_checkpoint(best_path)["model"])  # export exactly the best checkpoint

    train_seconds = time.perf_counter() - started
    metrics = {
        "classes": classes,
        "best": best,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "history": history,
        "seconds": round(train_seconds, 1),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if history:
        report.plot_curves(history, run_dir)
        report.plot_confusion(
            best["confusion"],
            classes,
            run_dir / "confusion.png",
            f"validation, best epoch {best['epoch']}: top-1 {best['val_accuracy']:.1%}",
        )
    metadata = {
        "arch": args.arch,
        "num_classes": len(classes),
        "classes": classes,
        "input_size": config.input_size,
        "outputs": ["logits", "embedding"],
        "embedding_dim": model.backbone.fc.in_features,
        "preprocessing": config.to_dict(),
        "drift_reference": drift_reference(model.eval(), val_ds, len(classes), args.batch_size * 2)
        if val_ds is not None
        else None,
        "training": {
            "args": vars(args),
            "data": data_description,
            "bf16_autocast": amp,
            "run_dir": str(run_dir),
            "best": best,
            "stopped_early": stopped_early,
            "history": history,
            "seconds": round(train_seconds, 1),
            "torch": torch.__version__,
        },
    }
    export(model, Path(args.output_dir), classes, config, metadata)
    total = time.perf_counter() - started
    if best["val_accuracy"] is not None:
        print(f"validation accuracy {best['val_accuracy']:.4f} (best epoch {best['epoch']} of {len(history)} run)")
    print(f"exported to {args.output_dir} in {total:.0f} s total; metrics and plots in {run_dir}")
    return metadata


# ----------------------------------------------------------------------------- args


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        default=None,
        help="YAML file of flag values (keys: flag names, dashes or underscores); "
        "flags given on the command line override it (default: none)",
    )
    g = p.add_argument_group("data (default: the built-in generated dataset)")
    g.add_argument("--data", default=None, help="ImageFolder root (class subfolders, or train/ and val/ of them) (default: none)")
    g.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of each class held out when --data has no val/ (default: 0.2)"
    )
    g.add_argument("--cifar", default=None, help="an extracted cifar-10-batches-py folder; never downloaded (default: none)")
    g.add_argument("--cifar-classes", type=int, default=4, help="use the first N CIFAR-10 classes (default: 4)")
    g.add_argument(
        "--cifar-per-class",
        type=int,
        default=1000,
        help="training images per class, the first ones in file order (default: 1000)",
    )
    g.add_argument(
        "--cifar-train-batches", default="data_batch_1", help="comma-separated training batch files (default: data_batch_1)"
    )
    g.add_argument(
        "--cifar-val-per-class", type=int, default=0, help="validation images per class from test_batch; 0 = all (default: 0)"
    )
    g.add_argument("--synthetic-per-class", type=int, default=200, help="generated training images per class (default: 200)")
    g.add_argument("--synthetic-val-per-class", type=int, default=40, help="generated validation images per class (default: 40)")
    g = p.add_argument_group("augmentation (training only; validation and serving never augment)")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=True, help="random horizontal flips (default: on)")
    g.add_argument(
        "--rotate",
        type=float,
        default=0.0,
        help="random rotation up to +-DEG degrees; 0 = off. Off by default because "
        "the built-in dataset has horizontal and vertical stripes, which rotation turns into each other (default: 0)",
    )
    g.add_argument(
        "--color-jitter",
        type=float,
        default=0.0,
        help="brightness/contrast/saturation jitter strength S, hue S/4; 0 = off (default: 0)",
    )
    g.add_argument("--noise", type=float, default=0.0, help="Gaussian pixel noise std on the [0, 1] scale; 0 = off (default: 0)")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--arch", default="resnet50", choices=ARCHITECTURES, help="network; 'tiny' is for tests (default: resnet50)")
    g.add_argument(
        "--weights",
        default=None,
        help="initial weights: a local ResNet50 state-dict file, or a torchvision "
        "name such as IMAGENET1K_V2 (needs network); default: random",
    )
    g.add_argument(
        "--epochs",
        type=int,
        default=6,
        help="training epochs, counted from 1 also when resuming; 0 exports the initial weights (default: 6)",
    )
    g.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    g.add_argument("--opt", default="adamw", choices=OPTIMIZERS, help="optimizer; sgd uses momentum (default: adamw)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 1e-3 for adamw, 0.05 for sgd)")
    g.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: 0.05 for adamw, 1e-4 for sgd)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    g.add_argument(
        "--lr-schedule",
        default="onecycle",
        choices=SCHEDULES,
        help="learning-rate schedule, stepped every batch (default: onecycle)",
    )
    g.add_argument("--lr-step-size", type=int, default=2, help="step schedule: epochs between lr drops (default: 2)")
    g.add_argument("--lr-gamma", type=float, default=0.1, help="step schedule: lr factor at each drop (default: 0.1)")
    g.add_argument(
        "--patience", type=int, default=0, help="stop after N epochs without a lower validation loss; 0 = off (default: 0)"
    )
    g.add_argument(
        "--min-delta",
        type=float,
        default=0.0,
        help="a validation loss must drop by more than this to count as lower (default: 0)",
    )
    g.add_argument("--topk", type=int, default=2, help="k of the top-k validation accuracy (default: 2)")
    g.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast + channels_last; about 3x faster on CPUs with AVX512-BF16/AMX (default: on where supported)",
    )
    g.add_argument(
        "--limit-batches", type=int, default=None, help="stop each epoch after N batches, for smoke runs (default: no limit)"
    )
    g = p.add_argument_group("runs and output")
    g.add_argument(
        "--resume",
        default=None,
        help="continue from a checkpoint_last.pt: epoch count, weights, optimizer and scheduler state, history (default: none)",
    )
    g.add_argument(
        "--run-dir",
        default=None,
        help="folder for args, metrics, plots and checkpoints (default: runs/<timestamp>, "
        "or the checkpoint's folder with --resume)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed for data generation, splits, crops and init (default: 0)")
    g.add_argument("--output-dir", default="build/model", help="export folder that `make archive` packs (default: build/model)")
    g.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """CLI flags over an optional YAML config over the parser defaults."""
    parser = get_args_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**read_config(Path(known.config), parser))
    args = parser.parse_args(argv)
    check_choices(parser, args)
    for name, value in OPT_DEFAULTS[args.opt].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.data and args.cifar:
        raise SystemExit("error: pass either --data or --cifar, not both")
    if args.topk < 1:
        raise SystemExit(f"error: --topk {args.topk} must be at least 1")
    return args


def read_config(path: Path, parser: argparse.ArgumentParser) -> dict:
    """A --config YAML file as parser defaults: keys are flag names, with dashes or underscores."""
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"error: cannot read config {path}: {exc}") from None
    if not isinstance(values, dict):
        raise SystemExit(f"error: config {path} must be a mapping of flag names to values, not {type(values).__name__}")
    dests = {a.dest for a in parser._actions} - {"help", "config"}
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - dests)
    if unknown:
        raise SystemExit(f"error: config {path} has unknown keys {unknown}; valid keys: {', '.join(sorted(dests))}")
    return values


def check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    # argparse checks choices for command-line values only; check the YAML ones too.
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.choices is not None and value is not None and value not in action.choices:
            raise SystemExit(
                f"error: invalid {action.option_strings[0]} {value!r}. Only {', '.join(map(str, action.choices))} are supported."
            )


if __name__ == "__main__":
    main(parse_args())
