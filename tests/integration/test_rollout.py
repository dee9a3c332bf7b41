"""`make rollout` then `make rollback` on a real TorchServe, under 8 clients on loopback.

The server runs the repository's config.properties (registration on, management on loopback) on free ports, with two
archives of the tiny model that differ only in their version. Each client posts images one after the other for the
whole time and checks every answer against the load test's contract. The test asks for what the issue asks: not one
failed request, and each client's answers name the old version, then the new one, then the old one again, with no
flapping. It also samples the resident memory of the frontend and every worker, to report the peak while two versions
are loaded (docs/operations.md gives the measured numbers and the command).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import psutil
import pytest
import requests

from classifier.versions import archive_identity
from loadtests.contract import check_ours
from serving.archive import build_archive
from serving.launcher import TorchServeProcess, loopback_overrides
from serving.rollout import STATE_FILE, RolloutError, Server, rollback, rollout
from tests.conftest import REPO, encode, random_image

pytestmark = [pytest.mark.server, pytest.mark.slow]

CLIENTS = 8
MAX_REQUESTS = 20_000  # per client: a bound on the load whatever the machine's speed
MAX_SECONDS = 900  # the clients stop by then even if the rollout hangs
BACKEND = "openvino-int8"  # the shipped default


@pytest.fixture(scope="module")
def archives(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The served store holding classifier.mar (the model folder's own version) and a second archive, version 2."""
    root = tmp_path_factory.mktemp("rollout")
    config = REPO / "model-config.yaml"
    served = build_archive(tiny_model_dir, BACKEND, config, root / "model_store")
    new = build_archive(tiny_model_dir, BACKEND, config, root / "next", version="2")
    return served, new


@pytest.fixture(scope="module")
def server(archives, tmp_path_factory):
    store = archives[0].parent
    with TorchServeProcess(REPO / "config.properties", tmp_path_factory.mktemp("ts"), loopback_overrides(store)) as ts:
        yield ts


@dataclass
class Client:
    """One closed-loop client: the version of each answer in order, and every failure with its reason."""

    versions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_client(url: str, images: list[bytes], client: Client, stop: threading.Event) -> None:
    deadline = time.monotonic() + MAX_SECONDS
    with requests.Session() as session:
        for n in range(MAX_REQUESTS):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                resp = session.post(url, data=images[n % len(images)], timeout=60)
            except requests.RequestException as exc:
                client.failures.append(repr(exc))
                continue
            if resp.status_code != 200:
                client.failures.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                continue
            body = resp.json()
            reason = check_ours(body)
            if reason:
                client.failures.append(reason)
            else:
                client.versions.append(body["model"]["version"])


def served_rss(pid: int) -> dict[str, int]:
    """Resident bytes of the server's processes: TorchServe's Python launcher, the Java frontend, each worker."""
    parts: dict[str, int] = {"launcher": 0, "frontend": 0, "workers": 0, "worker_count": 0}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            rss, cmd = proc.memory_info().rss, " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "model_service_worker" in cmd:
            parts["workers"] += rss
            parts["worker_count"] += 1
        elif proc.name() == "java":
            parts["frontend"] += rss
        else:
            parts["launcher"] += rss
    return parts


def sample_memory(pid: int, samples: list[dict[str, int]], stop: threading.Event) -> None:
    while not stop.is_set():
        samples.append(served_rss(pid))
        stop.wait(0.2)


def wait_for_answers(clients: list[Client], more: int, timeout: float = 120) -> None:
    """Until every client has ``more`` answers beyond what it has now (so it has seen the version now served)."""
    marks = [len(c.versions) for c in clients]
    deadline = time.monotonic() + timeout
    while any(len(c.versions) < mark + more for c, mark in zip(clients, marks, strict=True)):
        assert time.monotonic() < deadline, "clients stopped getting answers"
        time.sleep(0.1)


def mib(value: int) -> float:
    return round(value / 2**20, 1)


def test_rollout_then_rollback_under_8_clients_lose_nothing_and_switch_once(server, archives):
    served, new = archives
    old_version, new_version = archive_identity(served).version, archive_identity(new).version
    original = served.read_bytes()
    images = [encode(random_image(64 + 37 * i, 48 + 29 * i, seed=i), "PNG" if i % 2 else "JPEG") for i in range(8)]
    url = f"{server.inference_url}/predictions/classifier"
    clients, stop, sampling = [Client() for _ in range(CLIENTS)], threading.Event(), threading.Event()
    samples: list[dict[str, int]] = []
    threads = [threading.Thread(target=run_client, args=(url, images, c, stop)) for c in clients]
    sampler = threading.Thread(target=sample_memory, args=(server.proc.pid, samples, sampling))
    log: list[str] = []
    started = time.monotonic()
    try:
        sampler.start()
        for thread in threads:
            thread.start()
        wait_for_answers(clients, 3)
        target = Server.from_config(server.config_path)
        timings = {}
        t0 = time.monotonic()
        assert rollout(target, new, say=log.append) == (old_version, new_version)
        timings["rollout_s"] = time.monotonic() - t0
        wait_for_answers(clients, 3)
        t0 = time.monotonic()
        assert rollback(target, say=log.append) == (new_version, old_version)
        timings["rollback_s"] = time.monotonic() - t0
        wait_for_answers(clients, 3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        sampling.set()
        sampler.join(timeout=10)

    failures = [f for c in clients for f in c.failures]
    sequences = [[v for v, _ in groupby(c.versions)] for c in clients]
    one = [s for s in samples if s["worker_count"] == 1]
    two = [s for s in samples if s["worker_count"] == 2]
    peak_one, peak_two = (max(group, key=lambda s: s["launcher"] + s["frontend"] + s["workers"]) for group in (one, two))
    report = {
        "requests": sum(len(c.versions) + len(c.failures) for c in clients),
        "failed": len(failures),
        "seconds": round(time.monotonic() - started, 1),
        **{k: round(v, 1) for k, v in timings.items()},
        "versions_per_client": [[f"{v} x{len(list(g))}" for v, g in groupby(c.versions)] for c in clients],
        "peak_rss_mib_one_version": {k: mib(v) for k, v in peak_one.items() if k != "worker_count"},
        "peak_rss_mib_two_versions": {k: mib(v) for k, v in peak_two.items() if k != "worker_count"},
        "log": log,
    }
    print(json.dumps(report, indent=1))  # the numbers docs/operations.md records (pytest -s shows them)

    assert failures == [], failures[:10]
    assert sequences == [[old_version, new_version, old_version]] * CLIENTS, report["versions_per_client"]
    total = lambda s: s["launcher"] + s["frontend"] + s["workers"]  # noqa: E731
    assert two and total(peak_two) > total(peak_one)  # the sampler saw both versions' workers at once

    # What a second rollback needs stays in the store, and nothing the user built was touched.
    store = served.parent
    state = json.loads((store / STATE_FILE).read_text())
    assert state["current"] == {"version": old_version, "archive": f"classifier-{old_version}.mar"}
    assert state["previous"] == {"version": new_version, "archive": "classifier-2.mar"}
    assert (store / "classifier-2.mar").read_bytes() == new.read_bytes() and served.read_bytes() == original
    assert archive_identity(store / f"classifier-{old_version}.mar").version == old_version
    # The workers' sockets are in this server's own folder, not in the /tmp every server on the machine shares.
    assert list((server.workdir / "tmp").glob(".ts.sock.*"))


def test_what_a_rollout_refuses_leaves_the_served_version_alone(server, archives, tmp_path):
    target = Server.from_config(server.config_path)
    served_before = target.default_version()
    with pytest.raises(RolloutError, match="already the one served"):
        rollout(target, archives[0])  # the archive the server started with, and rolled back to
    other = tmp_path / "other.mar"
    other.write_bytes(b"not an archive")
    with pytest.raises(RolloutError, match="not a model archive"):
        rollout(target, other)
    assert target.default_version() == served_before and list(target.versions()) == [served_before]


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://169.254.169.254/latest/classifier.mar", "does not match any allowed URL"),  # CVE-2023-43654's SSRF
        ("file:///etc/hostname", "does not match any allowed URL"),
        ("file:///etc/hostname#/model_store/x.mar", "does not match any allowed URL"),
        ("../next/classifier.mar", "Relative path is not allowed"),
    ],
)
def test_registration_takes_no_download_and_no_path_out_of_the_store(server, url, refusal):
    resp = requests.post(f"{server.management_url}/models", params={"url": url}, timeout=30)
    assert resp.status_code == 404 and refusal in resp.json()["message"], resp.text
    assert [m["modelName"] for m in requests.get(f"{server.management_url}/models", timeout=10).json()["models"]] == [
        "classifier"
    ]
