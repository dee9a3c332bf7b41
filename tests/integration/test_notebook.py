"""notebooks/walkthrough.ipynb, executed cell by cell by nbclient in a real kernel, against the suite's server."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_the_walkthrough_runs_top_to_bottom(server, tmp_path, monkeypatch):
    monkeypatch.setenv("WALKTHROUGH_SERVER", server.inference_url)
    monkeypatch.setenv("WALKTHROUGH_WORK", str(tmp_path))
    notebook = nbformat.read(REPO / "notebooks" / "walkthrough.ipynb", as_version=4)
    # execute() raises CellExecutionError, naming the cell and its traceback, at the first cell that fails.
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()

    def text(cell) -> str:
        return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "registry version" in text(code[1])
    assert "served by {'name': 'classifier'" in text(code[4])
    last = code[-1]
    assert any(out.output_type == "display_data" and "image/png" in out.data for out in last.outputs), "no plot"
    scores = json.loads(text(last))  # PSI per stream and signal
    assert max(scores["blurred"].values()) > max(scores["normal"].values())
    assert len(list(tmp_path.glob("model-lr*/model.pt2"))) == 2
