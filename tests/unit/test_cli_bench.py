"""benchmarks/cli_bench.py's pure parts: the image mix and the report."""

from __future__ import annotations

from benchmarks.cli_bench import SUMMARY, agreement, mix, render
from cli.predict import Summary


def test_mix_keeps_the_load_test_ratio_and_the_total():
    small, large = mix(500)
    assert 4 * (small + large) == 500 and round(small / large) == 6


def test_the_bench_reads_the_predictor_summary_line():
    line = Summary(images=500, failed=2, seconds=8.0, load_seconds=3.0, backend="openvino-int8").line()
    assert SUMMARY.search(line).groups() == ("500", "2", "8.0", "62.5", "openvino-int8")


def test_report_gives_both_rates_their_ratio_and_label_agreement():
    assert agreement({"a": "dots", "b": "dots", "c": "x"}, {"a": "dots", "b": "checkerboard"}) == (1, 2)
    report = {
        "date": "2026-11-24",
        "machine": {"cpu": "CPU", "cores": 2, "ram_gib": 24.0},
        "model": "m.mar",
        "arch": "resnet50",
        "backend": "eager",
        "model_config": {"batchSize": 8, "maxBatchDelay": 2},
        "images": 500,
        "mix": (107, 18),
        "clients": 4,
        "rounds": [
            {
                "round": 1,
                "cli": {"images": 500, "failed": 0, "seconds": 10.0, "wall_s": 20.0},
                "server": {"images": 500, "failed": 0, "seconds": 20.0},
                "agree": (500, 500),
            }
        ],
        "note": "",
        "command": "make cli-bench",
    }
    text = render(report)
    assert "| 1 | CLI, images only | 500 | 0 | 10.0 | **50.0** |" in text
    assert "| 1 | server, 4 HTTP clients | 500 | 0 | 20.0 | **25.0** |" in text
    assert "per round: 2.00x" in text and "500/500" in text and "`make cli-bench`" in text
