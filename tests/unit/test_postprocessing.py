import json

import numpy as np
import pytest
import torch

from classifier.postprocessing import embedding_stats, error_body, top_k_predictions


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_top_2_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 7)) * 4
    labels = [f"class{i}" for i in range(7)]
    out = top_k_predictions(torch.from_numpy(logits), labels, k=2)
    probs = numpy_softmax(logits)
    for row, preds in zip(probs, out, strict=True):
        order = np.argsort(-row)[:2]
        assert [p["index"] for p in preds] == order.tolist()
        assert [p["label"] for p in preds] == [labels[i] for i in order]
        assert np.allclose([p["probability"] for p in preds], row[order], atol=1e-6)
        assert preds[0]["probability"] >= preds[1]["probability"]
        assert all(0.0 <= p["probability"] <= 1.0 for p in preds)


def test_top_k_is_capped_by_class_count_and_labels_fall_back_to_index():
    out = top_k_predictions(torch.tensor([[0.0]]), {}, k=2)
    assert out == [[{"label": "0", "index": 0, "probability": 1.0}]]


def test_extreme_logits_stay_finite_probabilities():
    out = top_k_predictions(torch.tensor([[1e4, -1e4, 0.0]]), ["a", "b", "c"], k=2)
    assert out[0][0]["probability"] == pytest.approx(1.0) and 0.0 <= out[0][1]["probability"] <= 1e-30


def test_embedding_stats_match_numpy_population_variance():
    rng = np.random.default_rng(1)
    emb = rng.gamma(2.0, size=(5, 2048)).astype(np.float32)
    stats = embedding_stats(torch.from_numpy(emb))
    for row, s in zip(emb.astype(np.float64), stats, strict=True):
        assert s["dim"] == 2048
        assert s["mean"] == pytest.approx(row.mean(), rel=1e-9)
        assert s["variance"] == pytest.approx(row.var(ddof=0), rel=1e-9)
        assert s["variance"] != pytest.approx(row.var(ddof=1), rel=1e-6)  # population, not sample


def test_error_body_is_json_naming_the_cause():
    body = json.loads(error_body("image is 30000x30000", 400))
    assert body == {"code": 400, "type": "InvalidInput", "message": "image is 30000x30000"}
