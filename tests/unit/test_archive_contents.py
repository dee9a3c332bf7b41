"""What `make archive BACKEND=...` packs: the backend's artifact and exactly the ones its fallbacks need."""

from __future__ import annotations

import itertools
import os
import re
import subprocess

import pytest
import torch

from classifier.backends import ARTIFACTS, BACKENDS, archive_artifacts, resolve_backend
from tests.conftest import REPO

ALL_FILES = set(ARTIFACTS.values())
HOSTS = [set(), {"avx512_vnni"}, {"avx512_bf16"}, {"avx512_vnni", "avx512_bf16"}]


@pytest.mark.parametrize("requested", BACKENDS)
def test_a_slim_archive_never_changes_what_runs(requested):
    """On every host (CPU flags, CUDA, runtime installed or not), the archive's subset leads to the same backend
    as an archive holding every artifact, and that backend's file is in it."""
    packed = set(archive_artifacts(requested))
    for flags, device, importable in itertools.product(HOSTS, ("cpu", "cuda:0"), (True, False)):
        args = (flags, torch.device(device), lambda _module, ok=importable: ok)
        chosen, _ = resolve_backend(requested, args[0], packed, *args[1:])
        assert chosen == resolve_backend(requested, args[0], ALL_FILES, *args[1:])[0], (flags, device, importable)
        assert ARTIFACTS[chosen] in packed


def test_fp32_backends_leave_the_int8_model_out_and_int8_keeps_its_fp32_fallback():
    assert archive_artifacts("eager") == ["model.pt2"]
    assert archive_artifacts("openvino") == archive_artifacts("openvino-bf16") == ["model.onnx", "model.pt2"]
    assert archive_artifacts("openvino-int8") == ["model.int8.onnx", "model.onnx", "model.pt2"]
    with pytest.raises(ValueError, match="Only eager"):
        archive_artifacts("tensorrt")


@pytest.mark.parametrize("backend", BACKENDS)
def test_make_archive_packs_exactly_those(backend):
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    # -o: treat the model files as present, so that the dry run prints only the archive's own commands.
    present = [arg for name in ["index_to_name.json", *ALL_FILES] for arg in ("-o", f"/m/{name}")]
    out = subprocess.run(
        [
            "make",
            "-n",
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            *present,
            "archive",
            f"BACKEND={backend}",
            "MODEL_DIR=/m",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    copied = {name for line in out.splitlines() if line.startswith("cp /m/") for name in re.findall(r"/m/(\S+)", line)}
    serialized = re.search(r"--serialized-file /m/(\S+)", out).group(1)
    assert sorted(copied | {serialized}) == archive_artifacts(backend)
