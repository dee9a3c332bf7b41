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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from classifier import drift
from classifier.backends import cpu_flags, has_bf16
from classifier.model import ARCHITECTURES, ResNetWithEmbedding, build_backbone
from classifier.transforms import PreprocessConfig
from training import lineage, report, tracking
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


class Data(NamedTuple):
    """What a run learns from. It unpacks as ``classes, train, val, description``."""

    classes: list[str]
    train: Dataset | None  # None only for a weights-only export (see load_data_and_model)
    val: Dataset | None
    description: str | None  # what the data is, as metadata.json records it
    fingerprint: dict | None = None  # which data exactly: training.lineage.fingerprint of both splits


def load_data(args, config: PreprocessConfig) -> Data:
    """Classes, the train and val sets through the serving preprocessing, what the data is and its fingerprint."""
    classes, train_items, val_items, description = training_items(vars(args))
    if not val_items:
        raise SystemExit("error: the validation set is empty; raise --val-fraction or add images")
    fingerprint = lineage.fingerprint(classes, train_items, val_items, args.data)
    augment = Augment(hflip=args.hflip, rotate=args.rotate, color_jitter=args.color_jitter, noise=args.noise)
    return Data(
        classes,
        PreprocessedImages(train_items, config, train=True, augment=augment, seed=args.seed),
        PreprocessedImages(val_items, config, train=False, seed=args.seed),
        description,
        fingerprint,
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


def load_data_and_model(args, config: PreprocessConfig) -> tuple[Data, ResNetWithEmbedding]:
    """The data, then a network for its classes, from --weights or random.

    ``--epochs 0`` with ImageNet weights is an export, not a run: the 1000-class classifier goes out unchanged with
    ImageNet's labels, and no data is loaded (there is none to record or to calibrate int8 on).
    """
    weights = load_initial_weights(args.weights) if args.weights else None
    if args.epochs == 0 and weights is not None and weights.get("fc.weight", torch.empty(0)).shape[:1] == (1000,):
        from torchvision.models import ResNet50_Weights

        classes = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
        model = build_model(args.arch, len(classes), weights)
        model.backbone.load_state_dict(weights)  # strict: every tensor, the ImageNet head included
        return Data(classes, None, None, None), model
    data = load_data(args, config)
    return data, build_model(args.arch, len(data.classes), weights)


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


BEST_CHECKPOINT, LAST_CHECKPOINT = "checkpoint_best.pt", "checkpoint_last.pt"


class Progress(NamedTuple):
    """Where a run stands after its latest epoch; checkpoint_last.pt carries it over to --resume."""

    history: list[dict]  # one record per epoch: epoch, lr, train and val metrics
    best: dict  # the best epoch so far: epoch, val_accuracy, val_loss and confusion (None before the first epoch)
    stale: int = 0  # epochs since the validation loss last dropped by more than --min-delta
    stopped_early: bool = False


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


def start_run(args, run_dir: Path, classes: list[str], amp: bool) -> None:
    """Create the run folder and save the args in it. Only now: a run that fails on its data leaves no folder behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
    print(
        f"{args.arch}: {len(classes)} classes ({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}); "
        f"bf16 autocast {'on' if amp else 'off'}; {torch.get_num_threads()} threads; run folder {run_dir}"
    )


def resume_run(args, resume: dict, model: nn.Module, classes: list[str], run_dir: Path) -> tuple[Progress, int]:
    """Load the checkpoint's weights into ``model``; return its progress and the first epoch still to run."""
    if resume["args"]["arch"] != args.arch or resume["classes"] != classes:
        raise SystemExit(
            f"error: {args.resume} is a {resume['args']['arch']} over classes {resume['classes']}; "
            f"this run is a {args.arch} over {classes}"
        )
    model.load_state_dict(resume["model"])
    resumed_best, best_path = Path(args.resume).parent / BEST_CHECKPOINT, run_dir / BEST_CHECKPOINT
    if resumed_best.is_file() and not best_path.exists():  # resuming into a new folder: bring the best along
        shutil.copy2(resumed_best, best_path)
    print(f"resumed from {args.resume} after epoch {resume['epoch']}")
    return Progress(resume["history"], resume["best"], resume["stale_epochs"]), resume["epoch"] + 1


def resume_optimisation(resume: dict, args, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """The optimizer state as it was, and the learning rate where the run left it."""
    optimizer.load_state_dict(resume["optimizer"])
    if resume["args"]["epochs"] == args.epochs and resume["args"]["lr_schedule"] == args.lr_schedule:
        scheduler.load_state_dict(resume["scheduler"])
        return
    # A new horizon: the same schedule, built for the new epoch count, replayed to where the run stands.
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended, nothing trains here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(resume["steps"]):
            scheduler.step()


def save_checkpoints(run_dir: Path, checkpoint: dict, resumable: dict) -> None:
    """checkpoint_best.pt when this epoch is the best so far; checkpoint_last.pt after every epoch, with the
    optimizer and scheduler state (``resumable``) that --resume needs."""
    if checkpoint["best"]["epoch"] == checkpoint["epoch"]:
        torch.save(checkpoint, run_dir / BEST_CHECKPOINT)
    torch.save({**checkpoint, **resumable}, run_dir / LAST_CHECKPOINT)


# ----------------------------------------------------------------------------- fit


def is_better(val: dict, best: dict) -> bool:
    """Best epoch by validation accuracy, lower loss breaking ties. A diverged epoch (loss inf or NaN) never beats a
    finite one, whatever its accuracy: a network that outputs NaN predicts class 0 for everything, not something."""
    if best["epoch"] is None:
        return True

    def key(accuracy: float, loss: float) -> tuple:
        return (math.isfinite(loss), accuracy, -loss if math.isfinite(loss) else 0.0)

    return key(val["accuracy"], val["loss"]) > key(best["val_accuracy"], best["val_loss"])


def next_progress(progress: Progress, record: dict, confusion: list, min_delta: float) -> Progress:
    """The progress after one more epoch, given its record and its validation confusion matrix."""
    val = record["val"]
    # Early stopping watches the validation loss; the kept model is the best by accuracy (is_better).
    best_loss = min((h["val"]["loss"] for h in progress.history if math.isfinite(h["val"]["loss"])), default=math.inf)
    stale = 0 if val["loss"] < best_loss - min_delta else progress.stale + 1
    best = progress.best
    if is_better(val, best):
        best = {"epoch": record["epoch"], "val_accuracy": val["accuracy"], "val_loss": val["loss"], "confusion": confusion}
    return Progress([*progress.history, record], best, stale)


def print_epoch(record: dict) -> None:
    train, val = record["train"], record["val"]
    print(
        f"epoch {record['epoch']}: train loss {train['loss']:.4f} acc {train['accuracy']:.3f} | "
        f"val loss {val['loss']:.4f} top-1 {val['accuracy']:.3f} top-{val['k']} {val['topk_accuracy']:.3f}"
    )


EpochHook = Callable[[dict], None]  # called with each epoch's record: tracking logs it, tuning may prune on it


def fit(
    args, model: ResNetWithEmbedding, data: Data, amp: bool, run_dir: Path, resume: dict | None, hooks: list[EpochHook]
) -> Progress:
    """Train from epoch 1, or on from ``resume``, to --epochs; both checkpoints are written after every epoch."""
    if resume is None:
        progress, first_epoch = Progress(history=[], best={"epoch": None, "val_accuracy": None, "val_loss": None}), 1
    else:
        progress, first_epoch = resume_run(args, resume, model, data.classes, run_dir)
    if args.epochs < first_epoch:
        return progress  # nothing left to train: --epochs 0, or a resumed run that has reached --epochs
    print(f"train {len(data.train)} images, validate {len(data.val)} images")
    shuffle = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(
        data.train, batch_size=args.batch_size, shuffle=True, drop_last=len(data.train) > args.batch_size, generator=shuffle
    )
    val_loader = DataLoader(data.val, batch_size=args.batch_size * 2)
    if amp:
        model.to(memory_format=torch.channels_last)  # in place, as Module.to always is
    optimizer = build_optimizer(args, model)
    steps_per_epoch = min(len(train_loader), args.limit_batches or len(train_loader))
    scheduler = build_scheduler(args, optimizer, steps_per_epoch)
    if resume is not None:
        resume_optimisation(resume, args, optimizer, scheduler)

    for epoch in range(first_epoch, args.epochs + 1):
        shuffle.manual_seed(args.seed * 1_000 + epoch)  # a resumed epoch sees the order it would have seen
        train_stats = train_one_epoch(model, train_loader, optimizer, scheduler, amp, epoch, args.limit_batches)
        val_stats = evaluate(model, val_loader, amp, data.classes, args.topk, args.limit_batches)
        confusion = val_stats.pop("confusion")
        # The epoch's metrics, complete: the one record that metrics.json, metadata.json and the plots are made of.
        record = {"epoch": epoch, "lr": scheduler.get_last_lr()[0], "train": train_stats, "val": val_stats}
        print_epoch(record)
        progress = next_progress(progress, record, confusion, args.min_delta)
        checkpoint = {
            "epoch": epoch,
            "model": model.state_dict(),
            "classes": data.classes,
            "args": vars(args),
            "history": progress.history,
            "stale_epochs": progress.stale,
            "confusion": confusion,
            "best": progress.best,
        }
        resumable = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "steps": epoch * steps_per_epoch}
        save_checkpoints(run_dir, checkpoint, resumable)
        for hook in hooks:
            hook(record)
        if args.patience and progress.stale >= args.patience:
            print(f"early stop: validation loss has not dropped for {progress.stale} epochs (--patience {args.patience})")
            return progress._replace(stopped_early=True)
    return progress


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


def run_metrics(classes: list[str], progress: Progress, seconds: float) -> dict:
    """The run's final metrics, as metrics.json holds them."""
    return {
        "classes": classes,
        "best": progress.best,
        "epochs_run": len(progress.history),
        "stopped_early": progress.stopped_early,
        "history": progress.history,
        "seconds": round(seconds, 1),
    }


def write_report(run_dir: Path, metrics: dict) -> list[Path]:
    """metrics.json and, once an epoch has run, loss.png, accuracy.png and confusion.png; returns the files written."""
    path = run_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2))
    if not metrics["history"]:
        return [path]
    best = metrics["best"]
    title = f"validation, best epoch {best['epoch']}: top-1 {best['val_accuracy']:.1%}"
    curves = report.plot_curves(metrics["history"], run_dir)
    return [path, *curves, report.plot_confusion(best["confusion"], metrics["classes"], run_dir / "confusion.png", title)]


def build_metadata(args, model, config: PreprocessConfig, data: Data, amp: bool, run_dir: Path, metrics: dict) -> dict:
    """metadata.json: what serving needs to run the model, the drift monitor's reference, and how the model was made."""
    return {
        "arch": args.arch,
        "num_classes": len(data.classes),
        "classes": data.classes,
        "input_size": config.input_size,
        "outputs": ["logits", "embedding"],
        "embedding_dim": model.backbone.fc.in_features,
        "preprocessing": config.to_dict(),
        "data_fingerprint": data.fingerprint,
        "drift_reference": drift_reference(model.eval(), data.val, len(data.classes), args.batch_size * 2)
        if data.val is not None
        else None,
        "training": {
            "args": vars(args),
            "data": data.description,
            "bf16_autocast": amp,
            "run_dir": str(run_dir),
            "best": metrics["best"],
            "stopped_early": metrics["stopped_early"],
            "history": metrics["history"],
            "seconds": metrics["seconds"],
            "torch": torch.__version__,
        },
    }


def export(model: ResNetWithEmbedding, out_dir: Path, classes: list[str], config: PreprocessConfig, metadata: dict) -> list[Path]:
    """Write model.pt2 (batch dimension dynamic), index_to_name.json and metadata.json; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, config.input_size, config.input_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out_dir / "model.pt2")
    (out_dir / "index_to_name.json").write_text(json.dumps({str(i): c for i, c in enumerate(classes)}, indent=1))
    (out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return [out_dir / "model.pt2", out_dir / "index_to_name.json", out_dir / "metadata.json"]


# ----------------------------------------------------------------------------- main


def main(args, on_epoch: EpochHook | None = None, register: bool = True) -> dict:
    """One run: data and model, fit, the best epoch's weights back into the model, metrics and plots, the export,
    and (unless --no-track) its MLflow run and registry version.

    Returns metadata.json's content, which holds the run's final metrics and where its files are (under "training").
    """
    started = time.perf_counter()
    # First: an unreachable tracking server stops the run before it reads any data.
    tracker = None if args.no_track else tracking.Tracker()
    try:
        metadata = train_and_export(args, started, tracker, on_epoch, register)
    except BaseException:
        if tracker is not None:
            tracker.end(ok=False)
        raise
    if tracker is not None:
        tracker.end(ok=True)
    return metadata


def train_and_export(args, started: float, tracker: tracking.Tracker | None, on_epoch: EpochHook | None, register: bool) -> dict:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = has_bf16(cpu_flags()) if args.amp is None else args.amp
    config = PreprocessConfig()
    resume = load_checkpoint(Path(args.resume)) if args.resume else None
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.resume).parent if args.resume else default_run_dir()

    data, model = load_data_and_model(args, config)
    start_run(args, run_dir, data.classes, amp)
    hooks = [h for h in (tracker and tracker.epoch, on_epoch) if h is not None]
    if tracker is not None:
        tracker.start(vars(args), data.fingerprint, data.description)
    progress = fit(args, model, data, amp, run_dir, resume, hooks)
    if progress.best["epoch"] is not None:
        model.load_state_dict(load_checkpoint(run_dir / BEST_CHECKPOINT)["model"])  # export exactly the best checkpoint

    metrics = run_metrics(data.classes, progress, seconds=time.perf_counter() - started)
    write_report(run_dir, metrics)
    metadata = build_metadata(args, model, config, data, amp, run_dir, metrics)
    if tracker is not None:
        tracker.finish(metrics, run_dir)
    if tracker is not None and register:
        version = tracker.register(metadata)
        print(f"registered as version {version} of model {tracking.REGISTERED_MODEL} (run {tracker.run_id}, {tracker.uri})")
    export(model, Path(args.output_dir), data.classes, config, metadata)
    if tracker is not None and register:
        tracker.log_export(Path(args.output_dir))
    best = progress.best
    if best["val_accuracy"] is not None:
        print(f"validation accuracy {best['val_accuracy']:.4f} (best epoch {best['epoch']} of {len(progress.history)} run)")
    print(f"exported to {args.output_dir} in {time.perf_counter() - started:.0f} s total; metrics and plots in {run_dir}")
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
    g.add_argument(
        "--no-track",
        action="store_true",
        help="no MLflow run and no registry version (default: track to $MLFLOW_TRACKING_URI, else runs/mlflow.db)",
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
