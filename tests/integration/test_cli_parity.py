"""`python -m cli predict --mar` and a real TorchServe serving that .mar give the same JSON.

Batch size 1 on both sides: the CLI runs one file per backend call, and the requests go to the server
one after another, so each is a batch of its own (a batched convolution may round differently).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, encode, random_image

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("cli_parity")
    for ext, path in images.items():
        (root / f"synthetic.{ext}").write_bytes(path.read_bytes())
    (root / "rgba.png").write_bytes(encode(random_image(70, 300, seed=21, mode="RGBA"), "PNG"))
    (root / "photo.webp").write_bytes(encode(random_image(900, 600, seed=22), "WEBP"))
    (root / "text.png").write_bytes(b"this is not an image")
    return root


def predict(*argv: str) -> tuple[int, list[dict]]:
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "predict", *argv, "--batch-size", "1", "--format", "jsonl"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def ask_server(server, path: str, seed: int | None) -> dict:
    headers = {} if seed is None else {"X-Seed": str(seed)}
    resp = requests.post(
        f"{server.inference_url}/predictions/classifier", data=Path(path).read_bytes(), headers=headers, timeout=60
    )
    body = resp.json()
    assert resp.status_code == (body.get("code") or 200)
    return body


def test_cli_on_the_mar_answers_exactly_as_the_server(server, model_store, folder):
    mar = str(model_store / "classifier.mar")
    code, seeded = predict(str(folder), "--mar", mar, "--seed", "42")
    _, unseeded = predict(str(folder / "*.webp"), str(folder / "*.png"), "--mar", mar)
    assert code == 1 and len(seeded) == 5 and len(unseeded) == 4  # *.png matches text.png too
    for line in seeded:
        assert {k: v for k, v in line.items() if k != "path"} == ask_server(server, line["path"], 42), line["path"]
    # Without --seed each file draws a seed and reports it; sending that seed to the server replays the answer.
    for line in unseeded:
        assert {k: v for k, v in line.items() if k != "path"} == ask_server(
            server, line["path"], line.get("crop", {}).get("seed")
        )
    bad = next(line for line in seeded if line["path"].endswith("text.png"))
    assert bad["code"] == 400 and "not an image" in bad["message"]
