"""A real TorchServe (Java frontend, Python worker) serving the tiny model on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from serving.launcher import model_workers, read_properties, write_properties
from tests.conftest import REPO, encode, random_image
from tests.integration.conftest import server_overrides
from training import synthetic

pytestmark = [pytest.mark.server, pytest.mark.slow]


def check_contract(body: dict) -> None:
    assert set(body) == {"predictions", "embedding", "crop", "model"}
    assert body["model"]["name"] == "classifier" and isinstance(body["model"]["version"], str) and body["model"]["version"]
    preds = body["predictions"]
    assert len(preds) == 2
    assert preds[0]["probability"] >= preds[1]["probability"]
    for p in preds:
        assert p["label"] in synthetic.CLASSES and isinstance(p["index"], int) and 0.0 <= p["probability"] <= 1.0
    assert body["embedding"]["dim"] == 2048
    assert isinstance(body["embedding"]["mean"], float) and body["embedding"]["variance"] >= 0.0


def curl(*args: str) -> dict:
    out = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_readme_curl_command(server, images, ext):
    """`curl -T image localhost:8080/predictions/classifier`, on the test server's port."""
    url = f"{server.inference_url}/predictions/classifier"
    check_contract(curl("-T", str(images[ext]), url))
    seeded = curl("-T", str(images[ext]), "-H", "X-Seed: 7", url)
    assert seeded == curl("-T", str(images[ext]), "-H", "X-Seed: 7", url) and seeded["crop"]["seed"] == 7


def test_same_seed_same_response_with_requests(server, images):
    url = f"{server.inference_url}/predictions/classifier"
    data = images["png"].read_bytes()
    first = requests.post(url, headers={"X-Seed": "42"}, data=data, timeout=60)
    second = requests.put(url, headers={"x-seed": "42"}, data=data, timeout=60)
    form = requests.post(url, files={"data": data}, data={"seed": "42"}, timeout=60)
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"].startswith("application/json")
    assert first.json() == second.json() == form.json()
    check_contract(first.json())
    assert first.json()["crop"]["seed"] == 42


def test_multipart_form_upload(server, images):
    resp = requests.post(f"{server.inference_url}/predictions/classifier", files={"data": images["jpg"].read_bytes()}, timeout=60)
    assert resp.status_code == 200, resp.text
    check_contract(resp.json())


def test_non_image_gets_400_json_and_server_stays_healthy(server, images):
    url = f"{server.inference_url}/predictions/classifier"
    pids_before = {w["pid"] for w in model_workers(server.management_url, "classifier")}
    resp = requests.post(url, data=b"this is not an image", timeout=60)
    assert resp.status_code == 400
    assert "not an image" in resp.json()["message"]
    assert requests.get(f"{server.inference_url}/ping", timeout=10).json()["status"] == "Healthy"
    assert requests.post(url, data=images["png"].read_bytes(), timeout=60).status_code == 200
    workers = model_workers(server.management_url, "classifier")
    assert {w["pid"] for w in workers} == pids_before and all(w["status"] == "READY" for w in workers)


def test_concurrent_mixed_requests_fail_only_the_bad_one(server, images):
    url = f"{server.inference_url}/predictions/classifier"
    good = images["png"].read_bytes()
    bodies = [good, b"garbage", good, encode(random_image(50, 40), "WEBP")]
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: requests.post(url, headers={"X-Seed": "3"}, data=b, timeout=60), bodies))
    assert [r.status_code for r in responses] == [200, 400, 200, 200]
    assert responses[0].json() == responses[2].json()


def test_launcher_start_and_stop_leave_no_process(model_store, tmp_path):
    """The `make serve` / `make stop` code path, on free ports and a private TMPDIR (TorchServe's pid file)."""
    config = tmp_path / "config.properties"
    write_properties(config, {**read_properties(REPO / "config.properties"), **server_overrides(model_store)})
    env = {**os.environ, "TMPDIR": str(tmp_path), "LOG_LOCATION": str(tmp_path / "logs")}
    launcher = [sys.executable, "-m", "serving.launcher"]
    started = subprocess.run(
        [*launcher, "start", "--config", str(config)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "READY" in started.stdout
        url = read_properties(config)["inference_address"]
        assert requests.get(f"{url}/ping", timeout=10).status_code == 200
    finally:
        stopped = subprocess.run([*launcher, "stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    for proc in leftovers:  # the frontend may take a moment to reap its workers
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.wait(timeout=30)
    assert not [p for p in leftovers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/ping", timeout=5)
