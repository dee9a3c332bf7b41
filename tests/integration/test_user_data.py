"""Your own data, end to end, as a user runs it: `make train DATA=...` -> `make archive` (ONNX export and int8
quantization with the default backend) -> a real TorchServe -> `curl -T` -> answers labelled with the user's classes.

Every other test trains on the built-in generated data, so these are the only ones that walk the paths a user
takes with their own images: an ImageFolder tree (flat class folders, and the train/ + val/ layout that
`make prepare` writes), CIFAR-10 batches in the real pickle format, and `--weights` from a local state dict.
One TorchServe serves the four archives side by side, each under its own model name.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from classifier.model import build_backbone
from serving.launcher import TorchServeProcess, loopback_overrides, wait_ready
from tests.conftest import REPO
from tests.training.test_datasets import LABEL_NAMES, write_cifar
from training import synthetic

pytestmark = [pytest.mark.slow, pytest.mark.server]

# The user's own class names: the generated textures, saved under folder names no test model has ever used.
USER_CLASSES = {"checkerboard": "tiles", "dots": "polka", "horizontal_stripes": "shelves", "vertical_stripes": "fence"}
# --no-track: tracking is tests/training/test_lifecycle.py's subject; here each MLflow run would add seconds.
QUICK = "--arch tiny --epochs 1 --batch-size 8 --synthetic-val-per-class 2 --no-track"


def make(*args: str) -> None:
    result = subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"make {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def user_folder(root: Path, per_class: int, seed: int) -> Path:
    """A flat ImageFolder tree: root/<user class>/<image>."""
    for path in synthetic.write_folder(root / "tmp", per_class=per_class, seed=seed):
        target = root / USER_CLASSES[path.parent.name] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    shutil.rmtree(root / "tmp")
    return root


def train_and_archive(work: Path, name: str, data_args: str) -> tuple[Path, dict]:
    """`make train` then `make archive` (default backend, so the int8 export runs) into work/<name>; the .mar path."""
    model_dir, store = work / name / "model", work / name / "store"
    make("train", f"MODEL_DIR={model_dir}", f"TRAIN_ARGS={QUICK} --run-dir {work / name / 'run'} {data_args}")
    make("archive", f"MODEL_DIR={model_dir}", f"MODEL_STORE={store}")
    return store / "classifier.mar", json.loads((model_dir / "metadata.json").read_text())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("user_data")
    flat = user_folder(work / "photos", per_class=4, seed=5)
    split = work / "photos_split"
    make("prepare", f"SRC={flat}", f"DST={split}")
    cifar = work / "cifar-10-batches-py"
    write_cifar(cifar, {"data_batch_1": [i % 4 for i in range(48)], "test_batch": [i % 4 for i in range(16)]})
    weights = work / "start.pth"  # a local state dict to start from (here: a fresh backbone of the tiny test architecture)
    torch.save(build_backbone("tiny", 4).state_dict(), weights)

    runs = {
        "flat": f"--data {flat}",
        "split": f"--data {split}",
        "cifar": f"--cifar {cifar} --cifar-classes 4 --cifar-per-class 12 --cifar-val-per-class 4",
        "weights": f"--data {flat} --weights {weights}",
    }
    store = work / "store"
    store.mkdir()
    metadata = {}
    for name, data_args in runs.items():
        mar, metadata[name] = train_and_archive(work, name, data_args)
        shutil.copy(mar, store / f"{name}.mar")
    models = ",".join(f"{name}={name}.mar" for name in runs)
    overrides = loopback_overrides(store, models)
    with TorchServeProcess(REPO / "config.properties", work / "ts", overrides, model="flat") as ts:
        for name in runs:
            wait_ready(ts.management_url, name, 240, alive=lambda: ts.proc.poll() is None, log_dir=ts.log_dir)
        yield ts, metadata, work


def curl_predict(url: str, image: Path) -> dict:
    out = subprocess.run(["curl", "-sS", "-T", str(image), url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    "name, classes",
    [
        ("flat", sorted(USER_CLASSES.values())),
        ("split", sorted(USER_CLASSES.values())),
        ("cifar", [n.decode() for n in LABEL_NAMES[:4]]),
        ("weights", sorted(USER_CLASSES.values())),
    ],
)
def test_a_model_trained_on_user_data_is_served_with_the_users_labels(served, name, classes):
    ts, metadata, work = served
    assert metadata[name]["classes"] == classes
    # int8 was calibrated on this model's own training data, and the metadata says so.
    calibration = metadata[name]["int8_calibration"]
    assert calibration["source"].startswith("training set") and calibration["images"] > 0
    expected_source = {"cifar": "CIFAR-10", "split": "photos_split"}.get(name, "photos")
    assert expected_source in calibration["source"], calibration
    for image in sorted((work / "photos").rglob("*"))[::5]:
        if image.is_file():
            body = curl_predict(f"{ts.inference_url}/predictions/{name}", image)
            assert set(body) == {"predictions", "embedding", "crop", "model"}, body
            assert body["model"]["name"] == name
            assert [p["label"] for p in body["predictions"]] == [classes[p["index"]] for p in body["predictions"]]
            assert len(body["predictions"]) == 2 and body["embedding"]["dim"] == 2048


def test_weights_only_export_calibrates_on_a_fallback_and_says_so(capsys):
    from training.export_onnx import calibration_images

    metadata = {"preprocessing": {}, "training": {"data": None, "args": {}}}
    images, source = calibration_images(metadata, 8)
    assert images and "fallback" in source and "no training data" in source
    assert "--calibration-data" in capsys.readouterr().err


def test_workers_report_their_threads_and_jpeg_region_decoding(served):
    """Each worker's ready line: torch keeps one thread next to OpenVINO / ONNX Runtime (classifier.backends.torch_threads),
    and the archive's region decoder loaded inside TorchServe's worker, with the libjpeg-turbo of Pillow's wheel."""
    ts, _, _ = served
    log = (ts.log_dir / "model_log.log").read_text()
    ready = [line for line in log.splitlines() if "classifier ready:" in line]
    assert len(ready) >= 4, ready
    for line in ready:
        fields = dict(re.findall(r"(\w+)=(\S+)", line.split("classifier ready:", 1)[1]))
        expected = fields["threads"] if fields["backend"] == "eager" else "1"
        assert fields["torch_threads"] == expected, line
        assert fields["jpeg_region_decode"] == "on", line
    assert re.search(r"JPEG region decoding runs \S*pillow\.libs/libjpeg-", log), "the worker did not say which libjpeg it runs"
