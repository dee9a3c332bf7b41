"""docs/cpp-vs-python.md renders from a run's numbers (the measuring itself runs in `make cpp-report`)."""

from __future__ import annotations

import json

from cpp.compare import IMAGE_KINDS, PYTHON, PYTHON_ONE_THREAD, REPO, STAGES, plot, render


def fake_results() -> dict:
    rows = []
    for kind in IMAGE_KINDS:
        for batch in (1, 8):
            for n, language in enumerate(("C++", PYTHON, PYTHON_ONE_THREAD)):
                times = {stage: 1.0 + n + i for i, stage in enumerate(STAGES)}
                rows.append(
                    {
                        "kind": kind,
                        "batch": batch,
                        "language": language,
                        **times,
                        "total_p50": 10.0,
                        "total_p90": 12.0,
                        "images_per_s": 100.0 / (n + 1),
                    }
                )
    answer = {"predictions": [{"label": "a", "index": 0, "probability": 0.9}], "embedding": {}, "crop": {}}
    return {
        "rows": rows,
        "agreement": {"small, batch 1": {"labels_equal": 1.0, "probability": 0.0, "mean": 1e-16, "variance": 2e-16}},
        "cold_start": {"C++": {"seconds": 0.9, "answer": answer}, PYTHON: {"seconds": 6.0, "answer": answer}},
        "footprint": {
            "cpp_binary": 300_000,
            "cpp_wheel_libs": {"libopenvino.so": 20_000_000},
            "cpp_system_libs": {"libc.so.6": 2_000_000},
            "cpp_wheel_unused": 70_000_000,
            "python_loaded_libs": 3_000_000_000,
            "python_loaded_lib_count": 100,
            "python_distributions": {"torch": 1_000_000_000, "pillow": 20_000_000},
            "python_stdlib": 200_000_000,
            "python_venv": 6_000_000_000,
        },
        "machine": "test CPU",
        "threads": 2,
        "batches": [1, 8],
        "repeat": 3,
        "cold_runs": 3,
        "per_kind": 8,
        "model": "build/model (resnet50)",
        "versions": {"libjpeg-turbo in Pillow's wheel": "3.2.0"},
        "command": "python -m cpp.compare",
    }


def test_report_renders_every_section(tmp_path):
    results = fake_results()
    page = render(results, "cpp-vs-python.png")
    for heading in (
        "## Build and run",
        "## Do they compute the same thing?",
        "## Time per image",
        "## Cold start",
        "## On-disk footprint",
        "## Where the differences come from",
        "## Serving the C++ program",
    ):
        assert heading in page
    # One row per kind, batch and language, and one speed-up row per kind and batch.
    assert page.count("| small JPEG 320x240 q90 | 1 |") == 4
    assert "| **C++ total** | **21.3** |" in page
    plot(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_the_committed_page_is_what_its_committed_numbers_render_to():
    # The page says "do not edit by hand": a sentence changed in docs/cpp-vs-python.md alone would be lost on the next
    # `make cpp-report` (or `python -m cpp.compare render`); it belongs in cpp/templates/cpp-vs-python.md.j2.
    page = REPO / "docs" / "cpp-vs-python.md"
    results = json.loads(page.with_suffix(".json").read_text())
    assert render(results, page.with_suffix(".png").name) == page.read_text()
