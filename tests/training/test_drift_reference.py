"""The drift reference that training writes into metadata.json, and its recomputation for older exports."""

import json
import shutil

import numpy as np

from classifier.drift import SIGNALS, DriftReference
from training import drift_reference


def test_training_writes_a_reference_from_its_held_out_set(tiny_model_dir):
    meta = json.loads((tiny_model_dir / "metadata.json").read_text())
    reference = DriftReference.from_dict(meta["drift_reference"])
    assert reference.samples == 8 * 4  # the tiny run's --synthetic-val-per-class 8, four classes
    for signal in SIGNALS:
        assert np.isclose(sum(reference.expected[signal]), 1.0)
    assert len(reference.expected["predicted_class"]) == 4


def test_recomputing_it_from_the_export_gives_the_same_reference(tiny_model_dir, tmp_path):
    """An export without a reference gets the one training would have written: same images, same model."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    meta = json.loads((model_dir / "metadata.json").read_text())
    written = meta.pop("drift_reference")
    (model_dir / "metadata.json").write_text(json.dumps(meta))
    again = drift_reference.main(["--model-dir", str(model_dir)])
    assert json.loads((model_dir / "metadata.json").read_text())["drift_reference"] == again
    assert (
        again["samples"] == written["samples"] and again["expected"]["predicted_class"] == written["expected"]["predicted_class"]
    )
    for signal, edges in written["edges"].items():
        assert np.allclose(again["edges"][signal], edges, rtol=1e-3, atol=1e-5), signal
