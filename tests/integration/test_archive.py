"""The .mar that `make archive` writes is self-contained: its handler imports and serves from the archive alone."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# Runs in a fresh interpreter in isolated mode (-I: no PYTHONPATH, no current directory on sys.path), so nothing
# of the repository can be imported unless the archive carries it.
PROBE = """
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
sys.path.insert(0, str(root))
import classifier, classifier_handler, handlers
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
import yaml

modules = {m.__name__: m.__file__ for m in (classifier, classifier_handler, handlers)}
config = yaml.safe_load(next(root.glob("*.yaml")).read_text()) if list(root.glob("*.yaml")) else {}
import ts
metrics = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
metrics.initialize_cache()
manifest = json.loads((root / "MAR-INF" / "MANIFEST.json").read_text())  # what TorchServe's worker hands the handler
ctx = Context("classifier", str(root), manifest, 1, None, "0.12.0",
              metrics=metrics, model_yaml_config={**config, "minWorkers": 1})
ctx.request_processor = [RequestProcessor({"x-seed": "7"})]
handler = classifier_handler.ClassifierHandler()
handler.initialize(ctx)
[body] = handler.handle([{"body": Path(sys.argv[2]).read_bytes()}], ctx)
print(json.dumps({"modules": modules, "body": json.loads(body), "backend": handler.service.backend.name}))
"""


def test_the_archive_imports_and_serves_from_a_clean_directory(model_store, tmp_path):
    extracted = tmp_path / "mar"
    with zipfile.ZipFile(model_store / "classifier.mar") as mar:
        names = mar.namelist()
        mar.extractall(extracted)
    assert "classifier/preprocessing.py" in names and "handlers/requests.py" in names, names
    assert not any(name.startswith("ts/") for name in names)  # TorchServe comes from the server, not the archive
    out = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(extracted), str(REPO / "docs" / "sample.png")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name, path in result["modules"].items():
        assert path.startswith(str(extracted)), f"{name} was imported from {path}, not from the archive"
    body = result["body"]
    assert set(body) == {"predictions", "embedding", "crop", "model"} and body["crop"]["seed"] == 7
    manifest = json.loads((extracted / "MAR-INF" / "MANIFEST.json").read_text())["model"]
    assert body["model"] == {"name": "classifier", "version": manifest["modelVersion"]}
