"""Every lock (tools/locks.py LOCKS) is what gets installed, agrees with the file people edit, and is complete.

A full re-resolution needs the network and minutes (`make lock-check`); these tests need neither:
- a pin added, changed or removed in a requirements file without `make lock` is caught;
- every requirement of every locked package, read from the installed metadata and following extras, is met by a
  pin in the lock (the check `make install` runs, tools/locks.py), for .venv, .venv-checkov and the image's locks;
- the install resolves nothing: a dependency the lock lacks fails it by name, even when the index has a release.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tools import locks

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)")
VENVS = {"requirements.lock": REPO / ".venv", "deploy/requirements-checkov.lock": REPO / ".venv-checkov"}
# Locks installed into images, not into a venv here: checked with .venv's metadata, at .venv's versions.
IMAGE_LOCKS = ("docker/requirements-serve.lock", "docker/torch-pypi.lock")


def direct_requirements(source: str = "requirements.txt") -> dict[str, Requirement]:
    reqs = {}
    for line in (REPO / source).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def locked(lock: str = "requirements.lock", source: str = "requirements.txt") -> tuple[dict[str, str], set[str]]:
    """Pinned versions of the lock, and the names it says come straight from its requirements file."""
    versions, direct, current = {}, set(), None
    for line in (REPO / lock).read_text().splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m.group(1).split("[")[0])
            versions[current] = m.group(2)
        elif current and re.search(rf"#\s+(via )?-r {re.escape(source)}", line):
            direct.add(current)
    return versions, direct


def test_every_requirement_is_locked_at_a_matching_version():
    versions, _ = locked()
    for name, req in direct_requirements().items():
        assert name in versions, f"{name} is in requirements.txt but not in requirements.lock: run `make lock`"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"requirements.txt asks {req}, requirements.lock has {versions[name]}: run `make lock`"
        )


def test_the_lock_has_no_direct_requirement_that_was_removed():
    _, direct = locked()
    stale = direct - set(direct_requirements())
    assert not stale, f"requirements.lock still lists {sorted(stale)} as from requirements.txt: run `make lock`"


@pytest.mark.parametrize("entry", locks.LOCKS, ids=lambda e: e.lock)
def test_every_lock_agrees_with_its_requirements_file(entry):
    versions, direct = locked(entry.lock, entry.source)
    wanted = direct_requirements(entry.source)
    for name, req in wanted.items():
        assert name in versions, f"{name} is in {entry.source} but not in {entry.lock}: run `make lock`"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"{entry.source} asks {req}, {entry.lock} has {versions[name]}"
        )
    assert not direct - set(wanted), (
        f"{entry.lock} still lists {sorted(direct - set(wanted))} as from {entry.source}: run `make lock`"
    )


@pytest.mark.parametrize("entry", locks.LOCKS, ids=lambda e: e.lock)
def test_every_locked_package_has_hashes(entry):
    text = (REPO / entry.lock).read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1])
    for block in blocks:
        if PIN.match(block):
            assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]} in {entry.lock}"


def test_the_main_venv_is_the_lock_and_the_lock_is_complete():
    """.venv holds exactly requirements.lock's pins, and every requirement of each (extras followed) is pinned."""
    problems = locks.lock_problems(
        locks.read_pins(REPO / "requirements.lock"), locks.top_level_requirements(REPO / "requirements.txt"), locks.installed()
    )
    assert not problems, "\n".join(problems)


def test_checkovs_venv_is_its_lock_and_the_lock_is_complete():
    venv = VENVS["deploy/requirements-checkov.lock"]
    if not (venv / "bin" / "python").exists():
        pytest.fail("the .venv-checkov venv is missing: run `make k8s-tools` (make install does it)")
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(REPO / "tools" / "locks.py"),
            "check",
            "--lock",
            "deploy/requirements-checkov.lock",
            "--requirements",
            "deploy/requirements-checkov.txt",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("lock", IMAGE_LOCKS)
def test_the_image_locks_are_complete_at_the_versions_the_tests_ran(lock):
    """Each image lock pins what .venv has (same versions), and .venv's metadata finds nothing it lacks."""
    source = next(e.source for e in locks.LOCKS if e.lock == lock)
    problems = locks.lock_problems(
        locks.read_pins(REPO / lock), locks.top_level_requirements(REPO / source), locks.installed(), whole_venv=False
    )
    assert not problems, "\n".join(problems)


def test_the_cpu_image_has_every_requirement_of_torch_but_cudas():
    """docker/torch-cpu.txt installs torch --no-deps; its requirements (all but the CUDA ones) come from the serve lock."""
    serve = locks.read_pins(REPO / "docker/requirements-serve.lock")
    for package in ("torch", "torchvision"):
        for line in locks.installed()[package].requires or []:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            cuda = name.startswith(("nvidia-", "cuda-")) or name in {"triton", "torch"}
            if cuda or (req.marker and not req.marker.evaluate({"extra": ""})):
                continue
            assert name in serve and req.specifier.contains(serve[name], prereleases=True), (
                f"{package} requires {req}; docker/requirements-serve.lock has {serve.get(name)}"
            )
    cpu = (REPO / "docker/torch-cpu.txt").read_text()
    versions, _ = locked()
    for package in ("torch", "torchvision"):
        assert f"{package}=={versions[package]}+cpu" in cpu.splitlines()


# ---------------------------------------------------------------- the check can fail, and names the package
def lock_without(names: set[str], tmp_path: Path, bump: dict[str, str] | None = None) -> Path:
    """requirements.lock with some packages' blocks removed, or pinned at another version."""
    out, skipping = [], False
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if m := PIN.match(line):
            name = canonicalize_name(m.group(1))
            skipping = name in names
            if bump and name in bump:
                line = line.replace(f"=={m.group(2)}", f"=={bump[name]}")
        elif line and not line.startswith(" "):
            skipping = False
        if not skipping:
            out.append(line)
    path = tmp_path / "requirements.lock"
    path.write_text("\n".join(out) + "\n")
    return path


def problems_of(lock: Path) -> list[str]:
    return locks.lock_problems(locks.read_pins(lock), locks.top_level_requirements(REPO / "requirements.txt"), locks.installed())


def test_a_lock_missing_a_package_fails_with_its_name_and_who_needs_it(tmp_path):
    problems = problems_of(lock_without({"coverage"}, tmp_path))
    assert any("pytest-cov requires coverage[toml]" in p and "the lock has no coverage" in p for p in problems), problems


def test_the_check_follows_extras(tmp_path):
    """torch asks for cuda-toolkit[cublas,...]: dropping what only that extra requires is found."""
    problems = problems_of(lock_without({"nvidia-cublas"}, tmp_path))
    assert any(p.startswith("cuda-toolkit[cublas] requires nvidia-cublas") for p in problems), problems


def test_a_pin_outside_a_requirement_fails(tmp_path):
    problems = problems_of(lock_without(set(), tmp_path, bump={"packaging": "20.1"}))
    assert any("pytest requires packaging>=" in p and "packaging==20.1" in p for p in problems), problems
    assert any("packaging is installed at" in p for p in problems), problems


# ---------------------------------------------------------------- the install resolves nothing (offline)
def wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal pure-Python wheel (one module, METADATA with Requires-Dist), enough for pip to install."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": b"",
        f"{dist}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
        ).encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{dist}/RECORD", record + f"{dist}/RECORD,,\n")
    return path


def hashed(*wheels: Path) -> str:
    lines = []
    for whl in wheels:
        name, version = whl.name.split("-")[:2]
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{hashlib.sha256(whl.read_bytes()).hexdigest()}\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def offline_index(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A find-links folder where alpha 1.0 needs beta[fast]>=1 and beta 1.0 and a newer 2.0 both exist."""
    folder = tmp_path_factory.mktemp("wheels")
    made = {
        "alpha": wheel(folder, "alpha", "1.0", ["beta[fast]>=1"]),
        "beta": wheel(folder, "beta", "1.0", ['gamma; extra == "fast"']),
        "beta2": wheel(folder, "beta", "2.0", ['gamma; extra == "fast"']),
        "gamma": wheel(folder, "gamma", "1.0", []),
    }
    return folder, made


def install(tmp_path: Path, folder: Path, lock_text: str) -> tuple[subprocess.CompletedProcess, Path]:
    lock = tmp_path / "test.lock"
    lock.write_text(lock_text)
    venv = tmp_path / "venv"
    # Only the folder: no index, no machine-wide find-links or constraints (PIP_CONFIG_FILE=/dev/null).
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(folder)}
    env.pop("PIP_CONSTRAINT", None)
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "locks.py"), "install", "--venv", str(venv), "--lock", str(lock)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    return out, venv


def site_packages(venv: Path) -> set[str]:
    return {p.name for p in next((venv / "lib").glob("python3*/site-packages")).iterdir()}


def test_install_takes_the_pins_and_nothing_newer(offline_index, tmp_path):
    folder, made = offline_index
    out, venv = install(tmp_path, folder, hashed(made["alpha"], made["beta"], made["gamma"]))
    assert out.returncode == 0, out.stdout + out.stderr
    installed = site_packages(venv)
    assert "beta-1.0.dist-info" in installed and "beta-2.0.dist-info" not in installed  # 2.0 was on the index


def test_install_fails_naming_a_dependency_the_lock_lacks_and_fetches_nothing(offline_index, tmp_path):
    folder, made = offline_index
    out, venv = install(tmp_path, folder, hashed(made["alpha"]))  # beta is missing, though the index has two
    assert out.returncode != 0
    assert "alpha 1.0 requires beta" in out.stdout + out.stderr and "make lock" in out.stderr
    assert not {n for n in site_packages(venv) if n.startswith("beta")}


def test_install_fails_naming_what_only_an_extra_needs(offline_index, tmp_path):
    folder, made = offline_index
    out, _ = install(tmp_path, folder, hashed(made["alpha"], made["beta"]))  # beta[fast] needs gamma
    assert out.returncode != 0 and "the lock has no gamma" in out.stderr, out.stdout + out.stderr
