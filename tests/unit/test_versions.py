"""classifier/versions.py: which versions TorchServe and a URL can carry, and where a model's version comes from."""

from __future__ import annotations

import json
import zipfile

import pytest

from classifier.versions import (
    CONTENT_FILES,
    MODEL_NAME,
    ModelIdentity,
    archive_identity,
    check_version,
    content_version,
    folder_version,
    model_identity,
)


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in CONTENT_FILES:
        (folder / name).write_text(f"stand-in {name}")
    (folder / "metadata.json").write_text('{"preprocessing": {}}')
    return folder


@pytest.mark.parametrize("good", ["1", "2.3", "3", 7, "8f2c1a9e0b7d4c3aa1b2c3d4e5f60718", "sha256-0123456789ab", "v2_rc-1"])
def test_registry_versions_run_ids_and_hashes_are_versions(good):
    assert check_version(good) == str(good)


@pytest.mark.parametrize("bad", ["", " 1", "1/2", "1?x", "a%2F", "1..2", ".1", "1.", "-rc", "ü", True, None, 1.5, "x" * 65])
def test_what_a_url_path_or_torchserve_cannot_carry_is_refused_naming_the_form(bad):
    with pytest.raises(ValueError, match="letters and digits"):
        check_version(bad, "VERSION")


@pytest.mark.parametrize("reserved", ["all", "ALL", "default"])
def test_words_torchserve_reads_in_the_versions_place_are_refused(reserved):
    with pytest.raises(ValueError, match="reserved"):
        check_version(reserved)


def test_the_content_version_is_reproducible_and_follows_every_content_file(model_dir):
    first = content_version(model_dir)
    assert first.startswith("sha256-") and len(first) == len("sha256-") + 12 and first == content_version(model_dir)
    (model_dir / "model.onnx").write_text("an export: not part of the version")
    assert content_version(model_dir) == first
    seen = {first}
    for name in CONTENT_FILES:
        (model_dir / name).write_text((model_dir / name).read_text() + " changed")
        seen.add(content_version(model_dir))
    assert len(seen) == 1 + len(CONTENT_FILES)


def test_a_folder_takes_the_version_training_recorded_else_its_content(model_dir):
    assert folder_version(model_dir) == content_version(model_dir)
    (model_dir / "metadata.json").write_text(json.dumps({"version": 4}))  # the registry's version, as a number
    assert folder_version(model_dir) == "4"
    (model_dir / "metadata.json").write_text(json.dumps({"version": "a/b"}))
    with pytest.raises(ValueError, match='metadata.json\'s "version"'):
        folder_version(model_dir)
    (model_dir / "metadata.json").write_text("not json")
    with pytest.raises(ValueError, match="cannot read"):
        folder_version(model_dir)


def test_an_archive_is_identified_by_its_manifest_packed_or_unpacked(tmp_path, model_dir):
    manifest = {"model": {"modelName": "classifier", "modelVersion": "9"}}
    mar = tmp_path / "classifier.mar"
    with zipfile.ZipFile(mar, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
    assert archive_identity(mar) == ModelIdentity("classifier", "9")
    (model_dir / "MAR-INF").mkdir()
    (model_dir / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    assert model_identity(model_dir) == ModelIdentity("classifier", "9")  # an unpacked archive: its manifest wins
    assert ModelIdentity("classifier", "9").as_dict() == {"name": "classifier", "version": "9"}


def test_a_model_folder_answers_as_make_archive_would_register_it(model_dir):
    assert model_identity(model_dir) == ModelIdentity(MODEL_NAME, folder_version(model_dir))


def test_what_is_not_an_archive_is_named(tmp_path):
    (tmp_path / "x.mar").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a model archive"):
        archive_identity(tmp_path / "x.mar")
    with zipfile.ZipFile(tmp_path / "y.mar", "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", '{"model": {"modelName": "classifier"}}')
    with pytest.raises(ValueError, match="no modelName and modelVersion"):
        archive_identity(tmp_path / "y.mar")
