"""Training runs through the real CLI on tiny generated data: early stopping, resume, plots, best-checkpoint export."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from classifier.model import ResNetWithEmbedding, build_backbone
from tests.conftest import REPO
from tests.training.test_datasets import write_cifar

pytestmark = pytest.mark.slow

# 8 training images in batches of 4: two optimizer steps per epoch.
TINY = ["--arch", "tiny", "--synthetic-per-class", "2", "--synthetic-val-per-class", "1", "--batch-size", "4", "--threads", "2"]
# No MLflow run: tracking is tests/training/test_lifecycle.py's subject, and each run costs seconds here.
TINY += ["--no-track"]


def train(tmp_path, *args):
    result = subprocess.run(
        [sys.executable, "-m", "training.train", *TINY, "--output-dir", str(tmp_path / "model"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """One epoch, then a resume of the same run folder to two epochs."""
    tmp = tmp_path_factory.mktemp("resume")
    run = tmp / "run"
    train(tmp, "--epochs", "1", "--run-dir", str(run))
    first = torch.load(run / "checkpoint_last.pt", weights_only=False)
    result = train(tmp, "--epochs", "2", "--resume", str(run / "checkpoint_last.pt"))
    return run, first, result


def test_resume_continues_the_epoch_count_and_the_optimizer_state(resumed_run):
    run, first, result = resumed_run
    assert "resumed from" in result.stdout and "epoch 1:" not in result.stdout.replace("\r", "\n").split("resumed from")[1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][0] == first["history"][0]  # epoch 1 carried over, not retrained
    last = torch.load(run / "checkpoint_last.pt", weights_only=False)
    assert last["epoch"] == 2 and last["steps"] == 4
    steps = {int(s["step"]) for s in last["optimizer"]["state"].values()}
    assert steps == {4}  # AdamW's per-parameter step count went on from 2, not restarted
    assert {int(s["step"]) for s in first["optimizer"]["state"].values()} == {2}
    assert last["scheduler"]["last_epoch"] == 4
    assert json.loads((run / "args.json").read_text())["resume"].endswith("checkpoint_last.pt")


def test_plots_are_valid_pngs(resumed_run):
    run, _, _ = resumed_run
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        data = (run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(run / name) as img:
            img.load()
            assert img.width > 100 and img.height > 100


def test_early_stopping_stops_when_validation_loss_cannot_improve(tmp_path):
    # lr 0 and a min-delta no loss drop can reach: epoch 1 sets the best loss, epoch 2 cannot beat it.
    result = train(
        tmp_path, "--epochs", "6", "--lr", "0", "--patience", "1", "--min-delta", "1e9", "--run-dir", str(tmp_path / "run")
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stopped_early"] is True
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert "early stop" in result.stdout
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["training"]["stopped_early"] is True and len(meta["training"]["history"]) == 2


def test_export_is_the_best_checkpoint_not_the_last(tmp_path):
    # The lr grows 1e12-fold after epoch 1, so epochs 2 and 3 diverge and epoch 1 stays the best.
    run = tmp_path / "run"
    train(
        tmp_path,
        "--epochs",
        "3",
        "--opt",
        "sgd",
        "--lr",
        "0.01",
        "--lr-schedule",
        "step",
        "--lr-step-size",
        "1",
        "--lr-gamma",
        "1e12",
        "--run-dir",
        str(run),
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["best"]["epoch"] == 1
    best, last = (torch.load(run / f"checkpoint_{n}.pt", weights_only=False) for n in ("best", "last"))
    assert best["epoch"] == 1 and last["epoch"] == 3

    def from_state(state):
        model = ResNetWithEmbedding(build_backbone("tiny", 4))
        model.load_state_dict(state)
        return model.eval()

    exported = torch.export.load(str(tmp_path / "model" / "model.pt2")).module()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits, embedding = exported(x)
        best_logits, best_embedding = from_state(best["model"])(x)
        last_logits, _ = from_state(last["model"])(x)
    assert torch.allclose(logits, best_logits, atol=1e-4) and torch.allclose(embedding, best_embedding, atol=1e-4)
    assert not torch.allclose(logits, last_logits, atol=1e-2)


def test_trains_on_a_cifar_subset_and_reports_per_class_and_topk(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    write_cifar(root, {"data_batch_1": [0, 1, 2, 3] * 3, "test_batch": [0, 1, 2, 3, 4, 5]})
    run = tmp_path / "run"
    result = train(
        tmp_path,
        "--cifar",
        str(root),
        "--cifar-classes",
        "3",
        "--cifar-per-class",
        "2",
        "--epochs",
        "1",
        "--topk",
        "2",
        "--run-dir",
        str(run),
    )
    assert "train 6 images, validate 3 images" in result.stdout
    names = json.loads((tmp_path / "model" / "index_to_name.json").read_text())
    assert names == {"0": "airplane", "1": "automobile", "2": "bird"}
    val = json.loads((run / "metrics.json").read_text())["history"][0]["val"]
    assert set(val["per_class_accuracy"]) == {"airplane", "automobile", "bird"} and val["k"] == 2
    assert val["accuracy"] <= val["topk_accuracy"] <= 1
    # 3 images, one per class: top-1 is the mean of the per-class accuracies.
    assert val["accuracy"] == pytest.approx(sum(val["per_class_accuracy"].values()) / 3)


def test_missing_or_corrupt_data_stops_with_the_path_not_a_traceback(tmp_path):
    (tmp_path / "cifar").mkdir()
    for args, needle in [
        (["--cifar", str(tmp_path / "nope")], f"{tmp_path / 'nope'} does not exist"),
        (["--cifar", str(tmp_path / "cifar")], f"{tmp_path / 'cifar' / 'batches.meta'} does not exist"),
        (["--resume", str(tmp_path / "none.pt")], f"checkpoint {tmp_path / 'none.pt'} does not exist"),
    ]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "training.train",
                *TINY,
                *args,
                "--run-dir",
                str(tmp_path / "run"),
                "--output-dir",
                str(tmp_path / "model"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0 and needle in result.stderr and "Traceback" not in result.stderr, result.stderr
