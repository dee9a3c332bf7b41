"""The pre-commit hooks are valid and the committed tree passes them (as a fresh clone's CI would)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def test_pre_commit_hooks_pass_on_every_file(tmp_path):
    pre_commit = BIN / "pre-commit"
    assert pre_commit.exists(), "pre-commit is missing from .venv: run `make install`"
    assert shutil.which("git"), "git is missing: apt-get install -y git"
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path)}  # its cache, away from the user's
    valid = subprocess.run([str(pre_commit), "validate-config"], cwd=REPO, env=env, capture_output=True, text=True)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    run = subprocess.run(
        [str(pre_commit), "run", "--all-files", "--show-diff-on-failure"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, f"pre-commit found problems (and may have fixed them in place):\n{run.stdout[-4000:]}"
