"""Tune training's flags with Optuna: each trial one training.train run, pruned on its epochs' validation accuracy.

    python -m training.tune --space configs/search-space.yaml --trials 20 [--output configs/tuned.yaml]

The search space is a YAML file (configs/search-space.yaml says its format): ``fixed`` flags every trial shares, and
``search``, one entry per flag, a float or int range (``low``, ``high``, optional ``log``) or a list of ``choices``.
The study lives in ``runs/optuna.db`` (``--storage``), so a second run resumes it; every trial is an MLflow child
run under one parent run for the study. The best trial's flags, fixed ones included, are written to ``--output``,
which ``python -m training.train --config configs/tuned.yaml`` takes as it is.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import optuna
import yaml

from training import tracking, train

KINDS = ("float", "int", "choices")


def read_space(path: Path) -> tuple[dict[str, Any], dict[str, dict]]:
    """``(fixed, search)`` from the YAML file, checked: every key a train.py flag, every range well-formed."""
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"error: cannot read search space {path}: {exc}") from None
    fixed = {k.replace("-", "_"): v for k, v in (spec.get("fixed") or {}).items()}
    search = {k.replace("-", "_"): v for k, v in (spec.get("search") or {}).items()}
    if not search:
        raise SystemExit(f"error: search space {path} has no `search:` entries; add at least one flag to tune (e.g. lr)")
    flags = {a.dest for a in train.get_args_parser()._actions} - {"help", "config"}
    if unknown := sorted((set(fixed) | set(search)) - flags):
        raise SystemExit(f"error: search space {path} names unknown flags {unknown}; valid: {', '.join(sorted(flags))}")
    for name, entry in search.items():
        if isinstance(entry, dict) and "choices" in entry and entry["choices"]:
            continue
        if not (isinstance(entry, dict) and entry.get("type") in ("float", "int") and entry.get("low") is not None):
            raise SystemExit(
                f"error: search entry {name!r} in {path} must be {{type: float|int, low: L, high: H[, log: true]}} "
                f"or {{choices: [...]}}, not {entry!r}"
            )
        if not entry["low"] < entry["high"]:
            raise SystemExit(f"error: search entry {name!r} in {path}: low {entry['low']} must be below high {entry['high']}")
    return fixed, search


def suggest(trial: optuna.Trial, search: dict[str, dict]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, entry in search.items():
        if "choices" in entry:
            values[name] = trial.suggest_categorical(name, entry["choices"])
        elif entry["type"] == "int":
            values[name] = trial.suggest_int(name, entry["low"], entry["high"], log=bool(entry.get("log")))
        else:
            values[name] = trial.suggest_float(name, entry["low"], entry["high"], log=bool(entry.get("log")))
    return values


def objective(fixed: dict[str, Any], search: dict[str, dict], work: Path):
    def run(trial: optuna.Trial) -> float:
        # The trial's flags as a train --config file, parsed by training's own parser: the same checks of names and
        # choices, and the same optimizer-dependent defaults, as `make train TRAIN_ARGS="--config ..."` gets.
        folder = work / f"trial-{trial.number}"
        folder.mkdir()
        config = folder / "flags.yaml"
        config.write_text(yaml.safe_dump({**fixed, **suggest(trial, search)}))
        # A trial's export and run folder are its own: the model in build/model stays the one `make train` made.
        args = train.parse_args(
            ["--config", str(config), "--output-dir", str(folder / "model"), "--run-dir", str(folder / "run")]
        )

        def report(record: dict) -> None:
            trial.report(record["val"]["accuracy"], record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {record['epoch']}: val accuracy {record['val']['accuracy']:.3f}")

        # Trials are not registered: only the model trained from the winning flags becomes a registry version.
        metadata = train.main(args, on_epoch=report, register=False)
        return float(metadata["training"]["best"]["val_accuracy"] or 0.0)

    return run


def main(argv: list[str] | None = None) -> optuna.Study:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", type=Path, default=Path("configs/search-space.yaml"), help="search space YAML")
    parser.add_argument("--trials", type=int, default=20, help="trials to run in this call (default: 20)")
    parser.add_argument("--output", type=Path, default=Path("configs/tuned.yaml"), help="best flags as a train --config")
    parser.add_argument("--storage", default="sqlite:///runs/optuna.db", help="Optuna storage (default: runs/optuna.db)")
    parser.add_argument("--study", default="classifier", help="study name; the same name resumes (default: classifier)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
    parser.add_argument("--startup-trials", type=int, default=1, help="trials never pruned, the pruner's baseline (default: 1)")
    args = parser.parse_args(argv)
    if args.trials < 1:
        raise SystemExit(f"error: --trials {args.trials} must be at least 1")
    fixed, search = read_space(args.space)
    if args.storage.startswith("sqlite:///"):
        Path(args.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=args.study,
        storage=args.storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        # A trial stops once its validation accuracy at an epoch is below the median of earlier trials at that epoch.
        pruner=optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials, n_warmup_steps=0),
    )
    track = not fixed.get("no_track")
    parent = tracking.Tracker() if track else None
    try:
        if parent is not None:
            parent.mlflow.set_tags({"optuna_study": args.study, "optuna_storage": args.storage})
        with tempfile.TemporaryDirectory(prefix="tune-") as work:
            study.optimize(objective(fixed, search, Path(work)), n_trials=args.trials)
    finally:
        if parent is not None:
            parent.end(ok=True)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    if not done:
        raise SystemExit(f"error: no trial of study {args.study!r} completed ({len(pruned)} pruned); run more trials")
    best = study.best_trial
    tuned = {k.replace("_", "-"): v for k, v in {**fixed, **best.params}.items() if k not in ("output_dir", "run_dir")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        f"# Best of {len(study.trials)} trials of Optuna study {args.study!r} ({args.storage}): trial {best.number}, "
        f"val accuracy {best.value:.4f}.\n# Written by python -m training.tune; train with "
        f"python -m training.train --config {args.output}\n" + yaml.safe_dump(tuned, sort_keys=True)
    )
    print(f"{len(done)} complete, {len(pruned)} pruned; best trial {best.number}: {best.value:.4f} {best.params}")
    print(f"wrote {args.output}")
    return study


if __name__ == "__main__":
    main()
