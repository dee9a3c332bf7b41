"""The pure parts of docker/image_check.py (`make image-check`), which builds and runs the image for real."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("image_check", REPO / "docker" / "image_check.py")
image_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(image_check)

ANSWER = {
    "predictions": [{"label": "a", "index": 0, "probability": 0.9}, {"label": "b", "index": 1, "probability": 0.1}],
    "embedding": {"mean": 0.1, "variance": 0.2, "dim": 2048},
    "crop": {"mode": "random", "seed": 1, "box": [0, 0, 100, 100]},
    "model": {"name": "classifier", "version": "3"},
}


NO = "not installed"
DEAD = "`docker info` failed: Cannot connect to the Docker daemon"


@pytest.mark.parametrize(
    ("requested", "docker", "podman", "expected"),
    [
        (None, None, None, "docker"),
        (None, DEAD, None, "podman"),  # a docker client on PATH with no daemon: podman, which answers
        (None, NO, None, "podman"),
        ("podman", None, None, "podman"),
        ("docker", NO, NO, "docker"),
    ],
)
def test_engine_choice(requested, docker, podman, expected):
    assert image_check.choose_engine(requested, {"docker": docker, "podman": podman})[0] == expected


def test_engine_choice_says_why():
    engine, why = image_check.choose_engine(None, {"docker": DEAD, "podman": None})
    assert engine == "podman" and "`podman info` answered" in why and "Cannot connect to the Docker daemon" in why


def test_engine_choice_names_what_to_install_or_choose():
    with pytest.raises(RuntimeError, match="make container-tools.*apt-get install podman"):
        image_check.choose_engine(None, {"docker": DEAD, "podman": NO})
    with pytest.raises(ValueError, match="Only docker and podman"):
        image_check.choose_engine("nerdctl", {"docker": None, "podman": None})


def test_engine_answers_only_when_info_succeeds(tmp_path, monkeypatch):
    """A client whose `info` fails (docker without a daemon) does not answer; a missing one is not installed."""
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "Cannot connect to the Docker daemon" in image_check.engine_answers("docker")
    assert image_check.engine_answers("podman") == "not installed"
    fake.write_text("#!/bin/sh\nexit 0\n")
    assert image_check.engine_answers("docker") is None


def test_the_torch_requirements_name_their_index():
    assert image_check.index_url((REPO / "docker/torch-cpu.txt").read_text()) == "https://download.pytorch.org/whl/cpu"
    assert image_check.index_url((REPO / "docker/torch-pypi.lock").read_text()) is None
    for path in (*image_check.TORCH_REQUIREMENTS.values(), image_check.FALLBACK_TORCH_REQUIREMENTS):
        assert (REPO / path).is_file(), path


def test_containers_conf_keeps_nofile_within_the_hard_limit():
    conf = image_check.containers_conf(20000, 9000)
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=9000:9000"]' in conf
    assert 'cgroup_manager = "cgroupfs"' in conf and 'events_logger = "file"' in conf and 'runtime = "runc"' in conf
    assert '["nofile=1048576:1048576", "nproc=32768:32768"]' in image_check.containers_conf(2**40, 2**40)


def test_base_images_are_read_from_the_dockerfile():
    text = (REPO / "Dockerfile").read_text()
    assert image_check.base_image(text, "cpu") == "python:3.11-slim-bookworm"
    assert image_check.base_image(text, "gpu").startswith("nvidia/cuda:")
    with pytest.raises(ValueError, match="no stage tpu-base"):
        image_check.base_image(text, "tpu")


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("python:3.11-slim-bookworm", "docker.io/library/python:3.11-slim-bookworm"),
        ("nvidia/cuda:13.0.2-base-ubuntu22.04", "docker.io/nvidia/cuda:13.0.2-base-ubuntu22.04"),
        ("registry.example:5000/x/y:1", "registry.example:5000/x/y:1"),
        ("localhost/a:1", "localhost/a:1"),
    ],
)
def test_qualified_names(name, full):
    assert image_check.qualified(name) == full


def test_podman_build_keeps_the_healthcheck_and_reaches_pip_through_the_host():
    cmd = image_check.build_command("podman", "gpu", "t:gpu", "docker/torch-pypi.lock", Path("/ca.crt"))
    assert cmd[:2] == ["podman", "build"] and cmd[-1] == str(REPO)
    text = " ".join(cmd)
    for part in ("--format docker", "--pull=never", "--network host", "FLAVOUR=gpu", "TORCH_REQUIREMENTS=docker/torch-pypi.lock"):
        assert part in text
    assert f"/ca.crt:{image_check.CA_IN_BUILD}:ro" in text and f"PIP_CERT={image_check.CA_IN_BUILD}" in text
    assert str(image_check.CA_BUNDLE) not in text  # an apt step installing ca-certificates rewrites that file
    docker = " ".join(image_check.build_command("docker", "cpu", "t:cpu", "docker/torch-cpu.txt", None))
    assert "--format" not in docker and "--volume" not in docker  # docker build has neither option


def test_published_port_is_read_from_the_loopback_line():
    assert image_check.published_port("127.0.0.1:41234\n") == 41234
    with pytest.raises(ValueError, match="no published loopback port"):
        image_check.published_port("")


def test_answer_check_accepts_the_contract_and_names_what_breaks_it():
    assert image_check.answer_problems(json.dumps(ANSWER).encode()) == []
    assert image_check.answer_problems(b"<html>")[0].startswith("not JSON")
    broken = {**ANSWER, "predictions": ANSWER["predictions"][:1], "crop": {"mode": "random"}}
    problems = image_check.answer_problems(json.dumps(broken).encode())
    assert len(problems) == 2 and "predictions is not a list of 2" in problems[0] and "crop without" in problems[1]
    out_of_range = {**ANSWER, "predictions": [{"label": "a", "index": 0, "probability": 1.5}] * 2}
    assert "probability out of [0, 1]" in image_check.answer_problems(json.dumps(out_of_range).encode())[0]
    unnamed = {k: v for k, v in ANSWER.items() if k != "model"}
    assert image_check.answer_problems(json.dumps(unnamed).encode()) == ["model without name/version: None"]


def test_processes_not_of_uid_1000_are_reported():
    procs = [{"pid": 1, "uid": 1000, "cmd": "tini"}, {"pid": 7, "uid": 0, "cmd": "java"}]
    assert image_check.foreign_processes(procs) == [procs[1]]


def test_healthcheck_is_read_in_exec_form_or_refused():
    inspected = {"Config": {"Healthcheck": {"Test": ["CMD", "python", "/home/model-server/entrypoint.py", "ready"]}}}
    assert image_check.healthcheck_test(inspected) == ["python", "/home/model-server/entrypoint.py", "ready"]
    with pytest.raises(ValueError, match="OCI format"):
        image_check.healthcheck_test({"Config": {}})


def test_process_listing_snippet_runs():
    """The /proc reader that runs inside the container works on this machine's /proc too."""
    out = subprocess.run([sys.executable, "-c", image_check.PS], capture_output=True, text=True, timeout=30, check=True)
    listed = json.loads(out.stdout)
    assert listed and all({"pid", "uid", "cmd"} <= p.keys() for p in listed)


def test_the_drain_cell_counts_what_is_neither_answered_nor_refused_as_lost():
    cell = image_check.drain_summary({"answered": 90, "refused": 8, "reset": 1, "5xx": 2}, {"answered": 30, "refused": 8})
    assert cell == "90 answered (30 after the stop began), 8 refused, 3 lost"
    assert image_check.drain_summary({"answered": 5, "refused": 8}, {}).endswith(", 0 lost")
