"""What `make archive BACKEND=...` packs: the backend's artifact and exactly the ones its fallbacks need.

The archive is built by serving/archive.py; here with the real torch-model-archiver, on stand-in model files.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from classifier.artifacts import ARTIFACTS, BACKENDS, archive_artifacts
from classifier.backends import resolve_backend
from classifier.versions import folder_version
from serving.archive import build_archive, missing_file_message, with_backend
from tests.conftest import REPO, run_make

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


def make(*args: str) -> str:
    """make in the repository, without a BACKEND or VERSION from the environment."""
    return run_make(*args, unset=("BACKEND", "VERSION"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_make_archive_packs_exactly_those(backend):
    """make builds (training, the ONNX export) exactly the model files archive_artifacts names, then runs the entry point."""
    # -o: treat the model files as present, so that the dry run prints only the archive's own command.
    present = [arg for name in ["index_to_name.json", *ALL_FILES] for arg in ("-o", f"/m/{name}")]
    # -p: after the commands, make's database, where the archive's rule lists its prerequisites expanded.
    commands, database = make("-pn", *present, "archive", f"BACKEND={backend}", "MODEL_DIR=/m").split("\n# GNU Make", 1)
    [rule] = [line for line in database.splitlines() if line.startswith("model_store/classifier.mar:")]
    model_files = sorted(p.removeprefix("/m/") for p in rule.split(":", 1)[1].split() if p.startswith("/m/"))
    assert model_files == sorted([*archive_artifacts(backend), "index_to_name.json"])
    assert commands.strip().splitlines() == [
        f".venv/bin/python -m serving.archive --model-dir /m --backend {backend} --model-config model-config.yaml "
        "--export-path model_store"
    ]


def test_make_archive_passes_version_on():
    present = [arg for name in ["index_to_name.json", *ALL_FILES] for arg in ("-o", f"/m/{name}")]
    [command] = make("-n", *present, "archive", "MODEL_DIR=/m", "VERSION=4.2").strip().splitlines()
    assert command.endswith("--export-path model_store --version 4.2")


def test_make_builds_the_onnx_files_only_for_a_backend_that_packs_them():
    assert "training.export_onnx" in make("-n", "-o", "/m/model.pt2", "-o", "/m/index_to_name.json", "archive", "MODEL_DIR=/m")
    eager = make("-n", "-o", "/m/model.pt2", "-o", "/m/index_to_name.json", "archive", "MODEL_DIR=/m", "BACKEND=eager")
    assert "training.export_onnx" not in eager


def test_make_asks_for_the_artifacts_with_the_standard_library_alone():
    """make asks before .venv may exist (a fresh clone's `make serve`), so -S: no site-packages, no torch, no YAML."""
    for backend in BACKENDS:
        out = subprocess.run(
            [sys.executable, "-S", "-m", "serving.archive", "--print-artifacts", "--backend", backend],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.split() == archive_artifacts(backend)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """Stand-ins for every file `make train` and the ONNX export write: the archiver only copies them."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in [*ALL_FILES, "index_to_name.json"]:
        (folder / name).write_text(f"stand-in {name}")
    (folder / "metadata.json").write_text('{"note": "stand-in, from before training recorded a version"}')
    return folder


def archived(mar: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(mar) as z:
        return {name: z.read(name) for name in z.namelist() if not name.endswith("/")}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_archive_holds_exactly_those_and_the_backend_in_its_model_config(backend, model_dir, tmp_path):
    mar = build_archive(model_dir, backend, REPO / "model-config.yaml", tmp_path / "store")
    files = archived(mar)
    assert sorted(name for name in files if name in ALL_FILES) == archive_artifacts(backend)
    for name in [*archive_artifacts(backend), "index_to_name.json", "metadata.json"]:
        assert files[name] == (model_dir / name).read_bytes(), name
    assert {"classifier_handler.py", "handlers/requests.py", "classifier/limits.py", "classifier/artifacts.py"} <= set(files)
    manifest = json.loads(files["MAR-INF/MANIFEST.json"])["model"]
    assert manifest["modelName"] == "classifier" and manifest["serializedFile"] == "model.pt2"
    assert manifest["modelVersion"] == folder_version(model_dir)
    config = yaml.safe_load(files[manifest["configFile"]])
    shipped = yaml.safe_load((REPO / "model-config.yaml").read_text())
    assert config == {**shipped, "handler": {**shipped["handler"], "backend": backend}}


def version_of(mar: Path) -> str:
    return json.loads(archived(mar)["MAR-INF/MANIFEST.json"])["model"]["modelVersion"]


def test_the_version_is_a_parameter(model_dir, tmp_path):
    assert version_of(build_archive(model_dir, "eager", REPO / "model-config.yaml", tmp_path / "store", version="2.3")) == "2.3"


def test_by_default_the_version_is_the_trained_models_never_a_constant(model_dir, tmp_path):
    config, store = REPO / "model-config.yaml", tmp_path / "store"
    hashed = version_of(build_archive(model_dir, "eager", config, store))
    assert hashed.startswith("sha256-") and hashed == version_of(build_archive(model_dir, "eager", config, store))
    (model_dir / "model.pt2").write_text("other weights")
    assert version_of(build_archive(model_dir, "eager", config, store)) not in {hashed, "1.0"}
    (model_dir / "metadata.json").write_text('{"version": "5"}')  # what training records (the registry's version)
    assert version_of(build_archive(model_dir, "eager", config, store)) == "5"


@pytest.mark.parametrize("bad", ["", "1.0/../x", "v 2", "2..1", "-1", "all", "x" * 65])
def test_a_version_torchserve_or_a_url_cannot_carry_is_refused_before_archiving(bad, model_dir, tmp_path):
    with pytest.raises(SystemExit, match="not a model version|reserved"):
        build_archive(model_dir, "eager", REPO / "model-config.yaml", tmp_path / "store", version=bad)
    (model_dir / "metadata.json").write_text(json.dumps({"version": bad}))
    with pytest.raises(SystemExit, match='metadata.json\'s "version"'):
        build_archive(model_dir, "eager", REPO / "model-config.yaml", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_archives_built_at_the_same_time_keep_their_own_files(model_dir, tmp_path):
    """Each run stages in, and gives the archiver, its own temporary folder (the archiver copies to $TMPDIR/classifier)."""
    backends = ["eager", "openvino-int8", "onnxruntime", "eager"]
    with ThreadPoolExecutor(len(backends)) as pool:
        mars = list(
            pool.map(
                lambda job: build_archive(model_dir, job[1], REPO / "model-config.yaml", tmp_path / f"store{job[0]}"),
                enumerate(backends),
            )
        )
    for backend, mar in zip(backends, mars, strict=True):
        assert sorted(name for name in archived(mar) if name in ALL_FILES) == archive_artifacts(backend), backend


def test_the_archived_model_config_keeps_every_comment_and_changes_only_the_backend():
    shipped = (REPO / "model-config.yaml").read_text()
    edited = with_backend(shipped, "eager")
    changed = [(a, b) for a, b in zip(shipped.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert changed == [("  backend: openvino-int8", "  backend: eager")]


def test_a_model_config_without_a_handler_section_gets_one():
    assert yaml.safe_load(with_backend("batchSize: 8\n", "onnxruntime")) == {
        "batchSize": 8,
        "handler": {"backend": "onnxruntime"},
    }
    with pytest.raises(ValueError, match="mapping"):
        with_backend("- a list\n", "eager")


def test_a_missing_artifact_is_named_with_the_make_target_that_writes_it(model_dir, tmp_path):
    (model_dir / "model.int8.onnx").unlink()
    with pytest.raises(SystemExit) as exc:
        build_archive(model_dir, "openvino-int8", REPO / "model-config.yaml", tmp_path / "store")
    message = str(exc.value)
    assert f"{model_dir / 'model.int8.onnx'} is missing" in message
    assert f"make archive MODEL_DIR={model_dir} BACKEND=openvino-int8" in message
    assert "make train" in missing_file_message(model_dir / "model.pt2", "eager")
    assert not (tmp_path / "store" / "classifier.mar").exists()
    build_archive(model_dir, "openvino", REPO / "model-config.yaml", tmp_path / "store")  # needs no int8 model


def test_an_unknown_backend_names_the_valid_ones(model_dir, tmp_path):
    with pytest.raises(SystemExit, match="Only eager, onnxruntime"):
        build_archive(model_dir, "tensorrt", REPO / "model-config.yaml", tmp_path / "store")
