"""`python -m cli predict` against the real handler class in-process: same batches, same answers.

tests/integration/test_cli_parity.py makes the same comparison against a real TorchServe.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.predict import add_arguments, run
from handlers.classifier_handler import ClassifierHandler
from tests.conftest import REPO, encode, random_image
from tests.model.test_handler import make_context
from tests.model.test_handler import run as handle


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Mixed formats, modes and sizes, two files the server refuses, and a file that is not an image."""
    root = tmp_path_factory.mktemp("predict")
    (root / "sub").mkdir()
    (root / "a.png").write_bytes(encode(random_image(300, 200, seed=1), "PNG"))
    (root / "b.jpg").write_bytes(encode(random_image(90, 160, seed=2), "JPEG", quality=85))
    (root / "sub" / "c.webp").write_bytes(encode(random_image(640, 480, seed=3), "WEBP"))
    (root / "sub" / "d.png").write_bytes(encode(random_image(50, 40, seed=4, mode="RGBA"), "PNG"))
    (root / "sub" / "e.gif").write_bytes(encode(random_image(120, 120, seed=5, mode="L"), "GIF"))
    (root / "broken.jpg").write_bytes(encode(random_image(200, 200, seed=6), "JPEG")[:300])
    (root / "empty.png").write_bytes(b"")
    return root


def ordered(root) -> list:
    """The order the CLI reads a folder in: sorted paths."""
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def handler(tiny_model_dir):
    h = ClassifierHandler()
    h.initialize(make_context(tiny_model_dir))
    return h


def predict(*argv: str) -> list[dict]:
    out = io.StringIO()
    run(add_arguments(argparse.ArgumentParser()).parse_args([*argv, "--quiet"]), stdout=out, stderr=io.StringIO())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def without_path(line: dict) -> dict:
    return {k: v for k, v in line.items() if k != "path"}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_each_line_equals_the_handler_answer_for_the_same_batches(handler, tiny_model_dir, folder, batch_size):
    lines = predict(
        str(folder), "--model-dir", str(tiny_model_dir), "--backend", "eager", "--seed", "42", "--batch-size", str(batch_size)
    )
    files = ordered(folder)
    assert [line["path"] for line in lines] == [str(p) for p in files]
    expected = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        bodies, _ = handle(handler, tiny_model_dir, [{"body": p.read_bytes(), "seed": b"42"} for p in chunk])
        expected += bodies
    assert [without_path(line) for line in lines] == expected
    by_name = {line["path"].rsplit("/", 1)[1]: line for line in lines}
    assert by_name["empty.png"]["code"] == 400 and "empty body" in by_name["empty.png"]["message"]
    assert by_name["broken.jpg"]["code"] == 400 and "truncated" in by_name["broken.jpg"]["message"]
    assert sum("predictions" in line for line in lines) == 5


def test_unseeded_files_get_their_own_seed_and_each_replays_on_the_handler(handler, tiny_model_dir, folder):
    lines = predict(str(folder / "sub"), "--model-dir", str(tiny_model_dir), "--backend", "eager", "--batch-size", "1")
    seeds = [line["crop"]["seed"] for line in lines]
    assert len(set(seeds)) == len(seeds) == 3
    for line in lines:
        [replay], _ = handle(
            handler, tiny_model_dir, [{"body": Path(line["path"]).read_bytes(), "seed": str(line["crop"]["seed"])}]
        )
        assert replay == without_path(line)


def test_center_crop_equals_a_center_mode_server(tiny_model_dir, folder):
    center = ClassifierHandler()
    center.initialize(make_context(tiny_model_dir, {"crop_mode": "center"}))
    lines = predict(
        str(folder / "a.png"),
        str(folder / "b.jpg"),
        *("--model-dir", str(tiny_model_dir), "--backend", "eager", "--center", "--batch-size", "1"),
    )
    for line in lines:
        assert line["crop"]["mode"] == "center" and line["crop"]["seed"] is None
        [body], _ = handle(center, tiny_model_dir, [{"body": Path(line["path"]).read_bytes(), "seed": b"5"}])
        assert body == without_path(line)


def test_command_line_reports_failures_in_its_exit_status_and_summary(tiny_model_dir, folder, tmp_path):
    out = tmp_path / "results.csv"
    argv = [sys.executable, "-m", "cli", "predict", str(folder), "--model-dir", str(tiny_model_dir), "--output", str(out)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert "7 images, 2 failed" in proc.stderr and "images/s" in proc.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("path,code,label_1,") and len(rows) == 1 + 7
    assert sum(",400," in row for row in rows) == 2


def test_only_good_files_exit_zero_and_missing_paths_are_a_usage_error(tiny_model_dir, folder, capsys):
    from cli.predict import main

    assert main([str(folder / "sub"), "--model-dir", str(tiny_model_dir), "--format", "table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["PATH", "TOP-1", "TOP-2", "SEED"] and len(table) == 4
    assert main([str(folder / "nope.png"), "--model-dir", str(tiny_model_dir)]) == 2
    assert "no such file, folder or glob match" in capsys.readouterr().err
