"""The training script through its real CLI, on generated data."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from training import synthetic
from training.datasets import split_items

pytestmark = pytest.mark.slow


def train(*args, check=True):
    # No MLflow run: tracking is tests/training/test_lifecycle.py's subject, and each run costs seconds here.
    return subprocess.run(
        [sys.executable, "-m", "training.train", *args, "--no-track"], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_tiny_run_exports_artifact_labels_and_metadata(tiny_model_dir):
    names = json.loads((tiny_model_dir / "index_to_name.json").read_text())
    assert names == {str(i): c for i, c in enumerate(synthetic.CLASSES)}
    meta = json.loads((tiny_model_dir / "metadata.json").read_text())
    assert meta["classes"] == list(synthetic.CLASSES) and meta["input_size"] == 224
    assert meta["preprocessing"]["zoom"] == 1.5 and meta["preprocessing"]["crop_size"] == 100
    assert 0 <= meta["training"]["best"]["val_accuracy"] <= 1
    program = torch.export.load(str(tiny_model_dir / "model.pt2")).module()
    for batch in (1, 3):  # the batch dimension is dynamic
        logits, embedding = program(torch.zeros(batch, 3, 224, 224))
        assert logits.shape == (batch, 4) and embedding.shape == (batch, 2048)


def test_synthetic_data_is_deterministic():
    a = synthetic.generate(2, seed=5)
    b = synthetic.generate(2, seed=5)
    assert [(x.tobytes(), la) for x, la in a] == [(x.tobytes(), la) for x, la in b]
    assert [la for _, la in a] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_image_folder_split_is_deterministic_and_disjoint(tmp_path):
    paths = synthetic.write_folder(tmp_path, per_class=5, seed=0, formats=("png",))
    items = [(p, synthetic.CLASSES.index(p.parent.name)) for p in reversed(paths)]
    train_a, val_a = split_items(items, 0.2, seed=1)
    train_b, val_b = split_items(list(reversed(items)), 0.2, seed=1)
    assert val_a == val_b and train_a == train_b
    assert len(val_a) == 4 and not set(val_a) & set(train_a)
    assert split_items(items, 0.2, seed=2)[1] != val_a


def test_trains_on_a_user_image_folder(tmp_path):
    synthetic.write_folder(tmp_path / "data", per_class=3, seed=0)
    out = tmp_path / "model"
    result = train(
        "--arch",
        "tiny",
        "--data",
        str(tmp_path / "data"),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--output-dir",
        str(out),
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation accuracy" in result.stdout
    assert json.loads((out / "index_to_name.json").read_text())["0"] == "checkerboard"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--data", "/nonexistent/folder"], "/nonexistent/folder does not exist"),
        (["--weights", "IMAGENET1K_V2", "--epochs", "0"], "--weights /path/to/resnet50"),
        (["--weights", "no_such_weights"], "neither an existing file nor a torchvision weights name"),
    ],
)
def test_clear_errors_not_tracebacks(args, needle, tmp_path):
    # IMAGENET1K_V2 cannot be downloaded here (no network); elsewhere it would download, so keep the cache empty.
    env_home = tmp_path / "torch_home"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--arch",
            "tiny",
            *args,
            "--output-dir",
            str(tmp_path),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "TORCH_HOME": str(env_home)},
        timeout=120,
    )
    assert result.returncode != 0
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_local_imagenet_weights_with_zero_epochs_export_the_1000_class_classifier(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    reference = resnet50(weights=None).eval()
    weights = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), weights)
    out = tmp_path / "model"
    result = train("--weights", str(weights), "--epochs", "0", "--output-dir", str(out), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    names = json.loads((out / "index_to_name.json").read_text())
    assert len(names) == 1000 and names["0"] == "tench" and names["999"] == "toilet tissue"
    program = torch.export.load(str(out / "model.pt2")).module()
    x = torch.randn(1, 3, 224, 224)
    logits, _ = program(x)
    with torch.inference_mode():
        assert torch.allclose(logits, reference(x), atol=1e-4)  # the weights were exported unchanged


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not(tmp_path):
    """Crops, flips, shuffling and init all follow --seed (with the same --threads: see docs/training.md)."""

    def history(name: str, seed: int) -> list[dict]:
        args = ["--arch", "tiny", "--epochs", "2", "--synthetic-per-class", "12", "--synthetic-val-per-class", "4"]
        args += ["--batch-size", "8", "--threads", "2", "--seed", str(seed)]
        result = train(*args, "--output-dir", str(tmp_path / name), "--run-dir", str(tmp_path / f"run-{name}"))
        assert result.returncode == 0, result.stdout + result.stderr
        runs = json.loads((tmp_path / f"run-{name}" / "metrics.json").read_text())["history"]
        return [{"train_loss": r["train"]["loss"], "val_loss": r["val"]["loss"], "val_acc": r["val"]["accuracy"]} for r in runs]

    first, again, other = history("a", 3), history("b", 3), history("c", 4)
    for x, y in zip(first, again, strict=True):
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), (key, first, again)
    assert first != other
