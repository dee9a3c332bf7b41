"""Dataset loaders, the prepare split, augmentation and the YAML config: no training, so not slow."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from classifier.transforms import PreprocessConfig, zoom_crop_pad
from training import synthetic
from training.datasets import Augment, load_cifar
from training.prepare import prepare
from training.train import parse_args

LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar(root, labels_by_batch: dict[str, list[int]], seed=0):
    """A cifar-10-batches-py folder in the real format: pickled dicts with bytes keys, rows of 3072 uint8 (R, G, B planes)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name, labels in labels_by_batch.items():
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        batches[name] = (data, labels)
        with open(root / name, "wb") as f:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [f"{i}.png".encode() for i in range(len(labels))],
                },
                f,
                protocol=2,
            )
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": LABEL_NAMES, b"num_cases_per_batch": 10000, b"num_vis": 3072}, f, protocol=2)
    return batches


def test_cifar_loader_takes_a_balanced_subset_in_the_real_pickle_layout(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    batches = write_cifar(root, {"data_batch_1": [0, 1, 2, 0, 3, 1, 0, 1, 2, 2, 0, 1], "test_batch": [3, 0, 1, 2, 0, 1, 0, 4]})
    classes, train, val = load_cifar(root, num_classes=2, per_class=3, train_batches=["data_batch_1"], val_per_class=0)
    assert classes == ["airplane", "automobile"]
    # The first 3 of class 0 and of class 1, in file order: rows 0, 1, 3, 5, 6, 7.
    assert [lbl for _, lbl in train] == [0, 1, 0, 1, 0, 1]
    data, _ = batches["data_batch_1"]
    for (img, _), row in zip(train, [0, 1, 3, 5, 6, 7], strict=True):
        assert img.size == (32, 32) and img.mode == "RGB"
        pixels = np.asarray(img)
        # Row-major CHW: pixel (y, x) channel c sits at c*1024 + y*32 + x.
        assert pixels[0, 0].tolist() == [data[row][0], data[row][1024], data[row][2048]]
        assert pixels[5, 7].tolist() == [data[row][5 * 32 + 7 + c * 1024] for c in range(3)]
    assert sorted(lbl for _, lbl in val) == [0, 0, 0, 1, 1]  # every test image of the chosen classes
    _, _, val_capped = load_cifar(root, 2, 3, ["data_batch_1"], val_per_class=2)
    assert sorted(lbl for _, lbl in val_capped) == [0, 0, 1, 1]


def test_cifar_loader_errors_name_the_path(tmp_path):
    with pytest.raises(SystemExit, match="cifar-10-python.tar.gz"):
        load_cifar(tmp_path / "missing", 2, 1, ["data_batch_1"], 0)
    root = tmp_path / "cifar"
    write_cifar(root, {"data_batch_1": [0, 1, 0, 1], "test_batch": [0, 1]})
    with pytest.raises(SystemExit, match="fewer than 3 images"):
        load_cifar(root, 2, 3, ["data_batch_1"], 0)
    (root / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(SystemExit, match=f"{root / 'data_batch_1'} is not a CIFAR-10 python batch"):
        load_cifar(root, 2, 1, ["data_batch_1"], 0)
    with pytest.raises(SystemExit, match="between 2 and 10"):
        load_cifar(root, 11, 1, ["data_batch_1"], 0)


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "split.json")


def test_prepare_split_is_deterministic_disjoint_and_complete(tmp_path):
    src = tmp_path / "src"
    synthetic.write_folder(src, per_class=5, seed=0, formats=("png",))
    counts = prepare(src, tmp_path / "a", val_fraction=0.2, seed=3)
    prepare(src, tmp_path / "b", val_fraction=0.2, seed=3)
    assert counts == {"train": 16, "val": 4}
    assert listing(tmp_path / "a") == listing(tmp_path / "b")
    train = {p.split("/", 1)[1] for p in listing(tmp_path / "a") if p.startswith("train/")}
    val = {p.split("/", 1)[1] for p in listing(tmp_path / "a") if p.startswith("val/")}
    assert not train & val and train | val == set(listing(src))
    assert sorted(p.split("/")[0] for p in val) == sorted(synthetic.CLASSES)  # one val image per class
    first = next((tmp_path / "a" / "val").rglob("*.png"))
    assert os.path.samefile(first, src / first.relative_to(tmp_path / "a" / "val"))  # hardlinked, not re-encoded
    prepare(src, tmp_path / "c", val_fraction=0.2, seed=4)
    assert listing(tmp_path / "c") != listing(tmp_path / "a")
    with pytest.raises(SystemExit, match="not empty"):
        prepare(src, tmp_path / "a", val_fraction=0.2, seed=3)


def test_augmentations_switched_off_are_the_serving_transform_and_noise_spares_the_padding():
    config = PreprocessConfig()
    img = synthetic.render("dots", np.random.default_rng(0), size_range=(80, 80))  # 120 px zoomed: a 100 px crop
    plain, box = zoom_crop_pad(img, config, "random", random.Random(7))
    off = Augment(hflip=False, rotate=0, color_jitter=0, noise=0)
    same = off.after(zoom_crop_pad(off.before(img, random.Random(7)), config, "random", random.Random(7))[0], (100, 100), config)
    assert torch.equal(same, plain)

    torch.manual_seed(0)
    noisy = Augment(noise=0.1).after(plain.clone(), (box.height, box.width), config)
    inside = (slice(None), slice(62, 162), slice(62, 162))
    assert (noisy == 0).sum() == (plain == 0).sum() - (plain[inside] == 0).sum()  # padding still exactly zero
    assert 0.3 < (noisy - plain)[inside].std() < 0.6  # 0.1 on the [0, 1] scale is ~0.44 after dividing by std

    flipped = Augment(hflip=True).before(img, random.Random(1))  # random.Random(1).random() < 0.5
    assert np.array_equal(np.asarray(flipped), np.asarray(img)[:, ::-1])
    assert not np.array_equal(np.asarray(Augment(rotate=30).before(img, random.Random(0))), np.asarray(img))
    assert not np.array_equal(np.asarray(Augment(color_jitter=0.5).before(img, random.Random(0))), np.asarray(img))


def test_yaml_config_fills_flags_and_the_command_line_overrides_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 3\nbatch-size: 16\nlr_schedule: cosine\nopt: sgd\nhflip: false\n")
    args = parse_args(["--config", str(config), "--epochs", "5"])
    assert (args.epochs, args.batch_size, args.lr_schedule, args.opt, args.hflip) == (5, 16, "cosine", "sgd", False)
    assert (args.lr, args.weight_decay) == (0.05, 1e-4)  # the sgd defaults, since neither was given
    defaults = parse_args([])
    assert (defaults.opt, defaults.lr, defaults.lr_schedule, defaults.rotate, defaults.epochs) == (
        "adamw",
        1e-3,
        "onecycle",
        0,
        6,
    )

    config.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit, match="unknown keys \\['learning_rate'\\]"):
        parse_args(["--config", str(config)])
    config.write_text("opt: adam\n")
    with pytest.raises(SystemExit, match="invalid --opt 'adam'. Only adamw, sgd are supported"):
        parse_args(["--config", str(config)])
