"""Which model answered: its name and version, and where the version comes from.

Every answer carries ``{"model": {"name": ..., "version": ...}}``. The version is the archive's, TorchServe's manifest
``modelVersion``: the management API registers, routes and unregisters by it, so it is the one a rollout names. An
archive gets it from ``make archive VERSION=<v>``, or by default from the trained model's folder
(:func:`folder_version`): ``metadata.json``'s ``"version"`` (what training records), else a short hash of the files
that decide the answers, so that a model folder from before training recorded one still gets a version that is
reproducible and changes whenever the model does.

Standard library only: ``serving.archive`` imports this module before ``.venv`` may exist (see
``classifier.artifacts``), and ``serving.rollout`` reads archives with it.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

# The name `make archive` registers the model under: the /predictions/classifier of every URL.
MODEL_NAME = "classifier"
MANIFEST = "MAR-INF/MANIFEST.json"
# A version travels in URL paths (/models/classifier/<v>/set-default, /predictions/classifier/<v>) and in the archive's
# file name in the model store: letters and digits in runs joined by one '.', '_' or '-'. That keeps it out of URL
# escaping and away from TorchServe's refusal of any URL containing "..".
VERSION_PATTERN = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
MAX_VERSION_LENGTH = 64
# Words TorchServe gives a meaning in the version's place: GET /models/NAME/all describes every version, and its
# metrics label a request that names no version "default".
RESERVED_VERSIONS = ("all", "default")
# What decides a model's answers: the weights, the labels, and the metadata (preprocessing, training settings).
# The ONNX files are exported from model.pt2, and an archive packs only some of them, so they are left out.
CONTENT_FILES = ("model.pt2", "index_to_name.json", "metadata.json")
CONTENT_PREFIX = "sha256-"
CONTENT_DIGITS = 12


@dataclass(frozen=True)
class ModelIdentity:
    """The model an answer came from: ``{"name": ..., "version": ...}`` in the answer."""

    name: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def check_version(version: object, source: str = "VERSION") -> str:
    """``version`` as a string when TorchServe and a URL path can carry it; a ValueError naming ``source`` otherwise."""
    text = str(version) if isinstance(version, (str, int)) and not isinstance(version, bool) else None
    if text is None or len(text) > MAX_VERSION_LENGTH or not VERSION_PATTERN.fullmatch(text):
        raise ValueError(
            f"{source} {version!r} is not a model version: use letters and digits, joined by single '.', '_' or '-' "
            f"(at most {MAX_VERSION_LENGTH} characters), e.g. 3, 2.1 or 8f2c1a9e"
        )
    if text.lower() in RESERVED_VERSIONS:
        raise ValueError(f"{source} {version!r} is reserved by TorchServe's API ({', '.join(RESERVED_VERSIONS)}); choose another")
    return text


def content_version(model_dir: Path) -> str:
    """``sha256-`` and 12 hex digits of the model's :data:`CONTENT_FILES`: the same files always give the same version."""
    digest = hashlib.sha256()
    for name in CONTENT_FILES:
        path = model_dir / name
        if not path.is_file():
            raise ValueError(f"{path} is missing: a model folder as `make train` writes it has {', '.join(CONTENT_FILES)}")
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return CONTENT_PREFIX + digest.hexdigest()[:CONTENT_DIGITS]


def folder_version(model_dir: Path) -> str:
    """The version of a model folder: its ``metadata.json``'s ``"version"``, else :func:`content_version`."""
    path = model_dir / "metadata.json"
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} ({exc}); `make train` writes it") from None
    if isinstance(metadata, dict) and metadata.get("version") is not None:
        return check_version(metadata["version"], f'{path}\'s "version"')
    return content_version(model_dir)


def read_manifest(path: Path) -> dict:
    """TorchServe's MANIFEST.json of a ``.mar`` file, or of an unpacked archive's folder."""
    try:
        if path.is_dir():
            return json.loads((path / MANIFEST).read_text())
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(MANIFEST))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a model archive with a {MANIFEST} ({exc}); `make archive` writes one") from None


def archive_identity(path: Path) -> ModelIdentity:
    """The name and version TorchServe registers an archive (``.mar`` or unpacked folder) under."""
    model = read_manifest(path).get("model", {})
    name, version = model.get("modelName"), model.get("modelVersion")
    if not name or not version:
        raise ValueError(f"{path}'s {MANIFEST} names no modelName and modelVersion")
    return ModelIdentity(str(name), str(version))


def model_identity(model_dir: Path) -> ModelIdentity:
    """Who answers from ``model_dir``: an unpacked archive's manifest, else :data:`MODEL_NAME` and its folder's version."""
    if (model_dir / MANIFEST).is_file():
        return archive_identity(model_dir)
    return ModelIdentity(MODEL_NAME, folder_version(model_dir))
