"""serving/rollout.py's parts that need no server: the loopback rule, the model store's archives, the state, make.

tests/integration/test_rollout.py rolls versions out and back on a real TorchServe under load.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile

import pytest

from serving.launcher import write_properties
from serving.rollout import STATE_FILE, RolloutError, Server, copy_into, keep_running_archive, read_state, write_state
from tests.conftest import REPO


def archive(path, version: str, name: str = "classifier", filler: bytes = b""):
    """A stand-in .mar: a zip with the manifest TorchServe reads (that is all the store logic looks at)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": name, "modelVersion": version}}))
        z.writestr("filler", filler)
    return path


@pytest.fixture
def server(tmp_path) -> Server:
    (tmp_path / "model_store").mkdir()
    return Server("http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path / "model_store")


@pytest.mark.parametrize("address", ["http://0.0.0.0:8081", "http://10.0.0.5:8081", "http://example.com:8081"])
def test_a_management_api_beyond_loopback_is_refused(tmp_path, address):
    config = tmp_path / "config.properties"
    write_properties(config, {"management_address": address, "model_store": "model_store"})
    with pytest.raises(RolloutError, match="not on loopback"):
        Server.from_config(config)


def test_the_store_is_the_configs_resolved_beside_it(tmp_path):
    config = tmp_path / "config.properties"
    write_properties(config, {"management_address": "http://127.0.0.1:8081", "inference_address": "http://0.0.0.0:8080"})
    server = Server.from_config(config)
    assert server.store == tmp_path / "model_store" and server.inference == "http://127.0.0.1:8080"
    assert Server.from_config(REPO / "config.properties").store == REPO / "model_store"


def test_an_archive_is_copied_in_whole_or_found_and_never_overwritten(tmp_path, server):
    source = archive(tmp_path / "next" / "classifier.mar", "2")
    os.chmod(source, 0o644)
    copied = copy_into(server.store, source, "classifier-2.mar")
    assert copied.read_bytes() == source.read_bytes() and oct(copied.stat().st_mode & 0o777) == "0o644"
    assert copy_into(server.store, source, "classifier-2.mar") == copied  # the same bytes again: kept as it is
    assert [p.name for p in server.store.iterdir()] == ["classifier-2.mar"]  # no temporary file left behind
    other = archive(tmp_path / "other" / "classifier.mar", "2", filler=b"other weights")
    with pytest.raises(RolloutError, match="already holds a different archive"):
        copy_into(server.store, other, "classifier-2.mar")
    assert copied.read_bytes() == source.read_bytes()


def test_the_running_versions_archive_is_kept_under_its_versioned_name(server):
    archive(server.store / "classifier.mar", "1")
    kept = keep_running_archive(server, {"modelVersion": "1", "modelUrl": "classifier.mar"})
    assert kept == "classifier-1.mar" and (server.store / kept).read_bytes() == (server.store / "classifier.mar").read_bytes()
    # Once kept, a later `make archive` over classifier.mar does not matter.
    archive(server.store / "classifier.mar", "2")
    assert keep_running_archive(server, {"modelVersion": "1", "modelUrl": "classifier.mar"}) == "classifier-1.mar"


def test_a_running_version_whose_archive_was_rewritten_is_named_with_the_way_out(server):
    """`make serve` (1), then `make archive` into the same store (now 2): version 1 could not be rolled back to."""
    archive(server.store / "classifier.mar", "2")
    with pytest.raises(RolloutError) as exc:
        keep_running_archive(server, {"modelVersion": "1", "modelUrl": "classifier.mar"})
    assert "now version 2" in str(exc.value) and "make archive MODEL_STORE=build/next" in str(exc.value)
    assert not (server.store / "classifier-1.mar").exists()


def test_the_state_records_both_versions_and_nothing_recorded_is_a_clear_error(server):
    with pytest.raises(RolloutError, match="nothing to roll back"):
        read_state(server.store)
    write_state(server.store, "classifier", ("2", "classifier-2.mar"), ("1", "classifier-1.mar"))
    state = read_state(server.store)
    assert state["current"] == {"version": "2", "archive": "classifier-2.mar"}
    assert state["previous"] == {"version": "1", "archive": "classifier-1.mar"}
    assert sorted(p.name for p in server.store.iterdir()) == [STATE_FILE]


def make(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAR"}}
    return subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_rollout_and_rollback_are_one_line_each():
    assert make("rollout", "MAR=build/next/classifier.mar").stdout.split() == [
        ".venv/bin/python",
        "-m",
        "serving.rollout",
        "rollout",
        "build/next/classifier.mar",
    ]
    assert make("rollback").stdout.split() == [".venv/bin/python", "-m", "serving.rollout", "rollback"]
    missing = make("rollout")
    assert missing.returncode != 0 and "make rollout needs MAR=" in missing.stderr
