"""Every virtual environment of the project is made from a hashed lock, and only from it.

    python3 tools/locks.py install --venv .venv --lock requirements.lock [--requirements requirements.txt]
    .venv/bin/python tools/locks.py check --lock requirements.lock [--requirements requirements.txt]
    .venv/bin/python tools/locks.py compile [LOCK ...]

`install` creates the venv when it is missing, installs the lock with `pip install --no-deps --require-hashes`,
removes what the lock does not list, runs `pip check`, then `check`. `--no-deps` is the point: pip 23.2.1 (what
Python 3.11's venv brings) re-resolves an extra such as pytest-cov's `coverage[toml]` to the newest release on the
index and then refuses it in hash mode, so an upstream release anyone can publish broke every fresh install. With
`--no-deps` pip resolves nothing: it installs the pins and their hashes, nothing newer, ever.

`check` runs inside the venv it checks (markers are evaluated for that interpreter) and proves the lock complete
without the network: every locked package is installed at its pin, and every requirement of every locked package,
read from its installed metadata and following the extras that other packages ask for, is met by a pin in the lock.
A missing or mismatched pin is an error that names the package and the package that needs it.

`compile` re-resolves the locks from the files people edit (LOCKS below) with pip-compile (needs the index).

This file runs before any venv exists (`install`, with the system Python), so it imports only the standard library
and, in `check`, `packaging`, which every venv has: pip vendors it when the lock does not list it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What `python -m venv` puts in every venv before the lock is installed: never removed as "not in the lock".
BOOTSTRAP = {"pip", "setuptools"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)(?:\[[^\]]*\])?==([^\s\\;]+)")


@dataclass(frozen=True)
class Lock:
    """A lock and the file people edit that `make lock` resolves into it."""

    source: str
    lock: str
    # A file whose pins the resolution must keep (an image installs a subset of what .venv has, at the same versions).
    constraint: str | None = None


LOCKS = (
    Lock("requirements.txt", "requirements.lock"),
    # checkov pins dependencies that clash with ours: its own venv, .venv-checkov.
    Lock("deploy/requirements-checkov.txt", "deploy/requirements-checkov.lock"),
    # DVC (the pipeline in dvc.yaml) likewise: .venv-dvc.
    Lock("training/requirements-dvc.txt", "training/requirements-dvc.lock"),
    # The images: what the serving tail installs, and the PyPI (CUDA) build of torch for the GPU flavour.
    Lock("docker/requirements-serve.txt", "docker/requirements-serve.lock", constraint="requirements.lock"),
    Lock("docker/torch-pypi.txt", "docker/torch-pypi.lock", constraint="requirements.lock"),
    # The peer servers' venvs (make peers). Not --constraint requirements.lock: every nvidia-pytriton needs numpy<2,
    # so the .txt pins the core's packages at requirements.lock's versions itself and numpy alone diverges.
    Lock("peers/requirements-triton.txt", "peers/requirements-triton.lock"),
    # LitServe and Ray Serve resolve with our pins, so they keep requirements.lock's versions of the core's packages.
    Lock("peers/requirements-litserve.txt", "peers/requirements-litserve.lock", constraint="requirements.lock"),
    Lock("peers/requirements-ray.txt", "peers/requirements-ray.lock", constraint="requirements.lock"),
)


def canonical(name: str) -> str:
    """PEP 503's normalised name: `Typing_Extensions` and `typing-extensions` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(lock: Path) -> dict[str, str]:
    """`{canonical name: version}` for every `name==version` line of a pip-compile lock."""
    pins = {}
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            pins[canonical(match.group(1))] = match.group(2)
    return pins


# ---------------------------------------------------------------- check (runs inside the venv it checks)
def lock_problems(
    pins: dict[str, str], top_level: list[str], dists: dict[str, importlib.metadata.Distribution], whole_venv: bool = True
) -> list[str]:
    """Why the lock does not describe the installed venv completely (empty when it does).

    Args:
        pins: the lock's `{canonical name: version}`.
        top_level: the requirement strings people wrote (requirements.txt), extras included.
        dists: the installed distributions by canonical name, whose metadata says what each package requires.
        whole_venv: the venv was made from this lock alone, so a package it has and the lock lacks is a problem too.
            False for a lock that installs a subset of this venv (an image's), read with this venv's metadata.
    """
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # a lock without packaging: pip's own copy reads the same metadata
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
        from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

    problems: list[str] = []
    for name, version in sorted(pins.items()):
        dist = dists.get(name)
        if dist is None:
            problems.append(f"{name}=={version} is in the lock but not installed: run `make install`")
        elif Version(dist.version) != Version(version):
            problems.append(f"{name} is installed at {dist.version} but the lock pins {version}: run `make install`")
    for name in sorted(set(dists) - set(pins) - BOOTSTRAP if whole_venv else ()):
        problems.append(f"{name} is installed but not in the lock: `make install` removes it")

    # Breadth-first over (package, extras asked of it): from what people wrote, and from every pin, so that a pin
    # nothing reaches still has its own requirements checked.
    wanted: dict[str, set[str]] = {}
    queue = [("the requirements file", "", Requirement(line)) for line in top_level]
    queue += [("the lock", "", Requirement(name)) for name in pins]
    while queue:
        needed_by, extra_of_parent, req = queue.pop()
        name = canonical(req.name)
        if req.marker is not None and not req.marker.evaluate({"extra": extra_of_parent}):
            continue
        if name not in pins:
            problems.append(f"{needed_by} requires {req}, and the lock has no {name}: add it (run `make lock`)")
            continue
        if not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{needed_by} requires {req}, but the lock pins {name}=={pins[name]}: run `make lock`")
        new = ({canonical(e) for e in req.extras} | {""}) - wanted.get(name, set())
        if not new or name not in dists:
            continue
        wanted.setdefault(name, set()).update(new)
        for line in dists[name].requires or []:
            for extra in new:
                queue.append((f"{name}[{extra}]" if extra else name, extra, Requirement(line)))
    return sorted(set(problems))


def top_level_requirements(path: Path | None) -> list[str]:
    """The requirement lines of a requirements file people edit (comments, options and blanks dropped)."""
    if path is None:
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def installed() -> dict[str, importlib.metadata.Distribution]:
    return {canonical(d.metadata["Name"]): d for d in importlib.metadata.distributions()}


def check(lock: Path, requirements: Path | None) -> int:
    problems = lock_problems(read_pins(lock), top_level_requirements(requirements), installed())
    for problem in problems:
        print(f"{lock}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{lock}: complete ({len(read_pins(lock))} pins, every requirement of each met by a pin)")
    return 1 if problems else 0


# ---------------------------------------------------------------- install (system Python, stdlib only)
def venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args], check=False, text=True, capture_output=True
    )


def install(venv_dir: Path, lock: Path, requirements: Path | None, python: str | None) -> int:
    py = venv_python(venv_dir)
    if not py.exists():
        if python:
            subprocess.run([python, "-m", "venv", str(venv_dir)], check=True)
        else:
            venv.create(venv_dir, with_pip=True)
    # --no-deps: install the pins and nothing else (the module docstring says why); hashes make them the same bytes.
    done = pip(py, "install", "--quiet", "--no-deps", "--require-hashes", "-r", str(lock))
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        print(f"error: installing {lock} into {venv_dir} failed (above)", file=sys.stderr)
        return done.returncode
    pins = read_pins(lock)
    listed = pip(py, "list", "--format=freeze")
    extra = sorted(
        name
        for name in (canonical(line.split("==")[0]) for line in listed.stdout.splitlines() if "==" in line)
        if name not in pins and name not in BOOTSTRAP
    )
    if extra:
        # A package an older lock had, or one installed by hand: the venv must be what the lock says.
        print(f"removing from {venv_dir}, not in {lock}: {' '.join(extra)}")
        pip(py, "uninstall", "--quiet", "--yes", *extra)
    checked = pip(py, "check")
    if checked.returncode:
        sys.stderr.write(checked.stdout)
        print(f"error: {lock} lacks a dependency (above); add it to the requirements file and run `make lock`", file=sys.stderr)
        return 1
    args = [str(py), str(Path(__file__).resolve()), "check", "--lock", str(lock)]
    if requirements:
        args += ["--requirements", str(requirements)]
    return subprocess.run(args, check=False).returncode


# ---------------------------------------------------------------- compile (needs the index)
def compile_lock(entry: Lock, output: Path | None = None) -> int:
    """pip-compile one lock (from .venv's pip-tools). `output` writes elsewhere (make lock-check compares)."""
    cmd = [
        str(REPO / ".venv" / "bin" / "pip-compile"),
        "--quiet",
        "--generate-hashes",
        "--allow-unsafe",
        "--strip-extras",
        "--no-emit-index-url",
        "--no-emit-find-links",
        "--output-file",
        str(output or entry.lock),
    ]
    if entry.constraint:
        cmd += ["--constraint", entry.constraint]
    if output:
        # pip-compile keeps what it can of the output file's pins: start from the committed lock, as `make lock` does.
        output.write_bytes((REPO / entry.lock).read_bytes())
    # Relative paths, from the checkout: pip-compile writes its command into the lock's header.
    return subprocess.run([*cmd, entry.source], cwd=REPO, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="make or update a venv from its lock (no resolution), then check it")
    p_install.add_argument("--venv", type=Path, required=True)
    p_install.add_argument("--python", help="the interpreter a new venv is made from (default: this one)")
    p_check = sub.add_parser("check", help="prove the lock complete against this interpreter's installed metadata")
    for p in (p_install, p_check):
        p.add_argument("--lock", type=Path, required=True)
        p.add_argument("--requirements", type=Path, help="the file people edit; its extras are followed too")
    p_compile = sub.add_parser("compile", help="re-resolve locks with pip-compile (default: all of them)")
    p_compile.add_argument("locks", nargs="*", help=f"which ({', '.join(e.lock for e in LOCKS)})")
    p_compile.add_argument("--check", action="store_true", help="resolve into a temporary file and diff, writing nothing")
    args = parser.parse_args(argv)
    if args.command == "install":
        return install(args.venv, args.lock, args.requirements, args.python)
    if args.command == "check":
        return check(args.lock, args.requirements)
    chosen = [e for e in LOCKS if not args.locks or e.lock in args.locks]
    if unknown := set(args.locks) - {e.lock for e in LOCKS}:
        parser.error(f"unknown lock {sorted(unknown)}. Only {', '.join(e.lock for e in LOCKS)} are made here.")
    status = 0
    for entry in chosen:
        if not args.check:
            status |= compile_lock(entry)
            continue
        import difflib
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / Path(entry.lock).name
            status |= compile_lock(entry, fresh)
            # The header names the output file, which differs here by design.
            old, new = (
                [line for line in path.read_text().splitlines() if not line.startswith("#    pip-compile ")]
                for path in (REPO / entry.lock, fresh)
            )
            diff = list(difflib.unified_diff(old, new, entry.lock, "fresh", lineterm=""))
            print("\n".join(diff) if diff else f"{entry.lock} is up to date")
            status |= bool(diff)
    return status


if __name__ == "__main__":
    sys.exit(main())
