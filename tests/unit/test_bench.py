"""Pure helpers of the load tests and the benchmark, on synthetic inputs: CSV parsing, ratios, Markdown, contract."""

from __future__ import annotations

import math

import pytest

from benchmarks.bench import best_batch, broken_levels, headline, plot, ratio, render_markdown, stock_handler
from benchmarks.running import parse_locust_stats
from loadtests.contract import check, check_ours, check_stock

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def write_stats(path, rows):
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_parse_locust_stats_reads_the_aggregated_row(tmp_path):
    path = write_stats(
        tmp_path / "x_stats.csv",
        [
            "POST,/predictions/classifier,120,0,300,310.5,90.1,900.2,337,4.0,0.0,300,320,340,350,400,450,600,700,900,900,900",
            ",Aggregated,123,3,310,320.25,90.1,950.0,337,4.1,0.1,310,330,350,360,410,460,610,720,950,950,950",
        ],
    )
    stats = parse_locust_stats(path)
    assert stats == {
        "requests": 123,
        "failures": 3,
        "rps": 4.1,
        "p50_ms": 310.0,
        "p95_ms": 460.0,
        "p99_ms": 720.0,
        "avg_ms": 320.25,
        "max_ms": 950.0,
    }


def test_parse_locust_stats_with_no_requests_and_no_aggregated_row(tmp_path):
    no_request = ",Aggregated,0,0,0,0,0,0,0,0,0" + ",N/A" * 11
    empty = parse_locust_stats(write_stats(tmp_path / "a.csv", [no_request]))
    assert empty["requests"] == 0 and empty["p99_ms"] is None and empty["rps"] is None
    with pytest.raises(ValueError, match="no Aggregated row"):
        parse_locust_stats(write_stats(tmp_path / "b.csv", []))


def test_ratio():
    assert ratio(30.0, 10.0) == 3.0
    assert ratio(None, 10.0) is None and ratio(3.0, None) is None and ratio(3.0, 0.0) is None


RAW = [
    {"backend": "eager", "batch_size": 1, "images_per_s": 20.0},
    {"backend": "eager", "batch_size": 8, "images_per_s": 32.0},
    {"backend": "eager", "batch_size": 16, "images_per_s": 30.0},
]
SERVED = [
    {"server": "ours", "concurrency": 1, "rps": 16.0, "p50_ms": 60.0, "p95_ms": 70.0, "p99_ms": 80.0, "failures": 0},
    {"server": "stock", "concurrency": 1, "rps": 20.0, "p50_ms": 50.0, "p95_ms": 55.0, "p99_ms": 60.0, "failures": 0},
    {"server": "ours", "concurrency": 16, "rps": 24.0, "p50_ms": 600.0, "p95_ms": 700.0, "p99_ms": 800.0, "failures": 0},
    {"server": "stock", "concurrency": 16, "rps": 8.0, "p50_ms": 2000.0, "p95_ms": 4000.0, "p99_ms": 5000.0, "failures": 2},
]


def test_best_batch_and_headline_ratios():
    assert best_batch(RAW, "eager")["batch_size"] == 8
    assert best_batch(RAW, "onnx") is None
    rows = headline(RAW, SERVED, "eager")
    assert [r["concurrency"] for r in rows] == [1, 16]
    c1, c16 = rows
    assert c1["throughput_ours_over_stock"] == pytest.approx(0.8) and c1["p99_stock_over_ours"] == pytest.approx(0.75)
    assert c16["throughput_ours_over_stock"] == pytest.approx(3.0) and c16["p99_stock_over_ours"] == pytest.approx(6.25)
    assert c16["served_over_raw_bs1"] == pytest.approx(1.2) and c16["served_over_raw_best"] == pytest.approx(0.75)
    assert headline(RAW, SERVED, "onnx")[0]["served_over_raw_best"] is None


def report():
    return {
        "date": "2026-11-23 12:00 UTC",
        "command": "python -m benchmarks.bench --duration 5",
        "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 16.0, "os": "Linux", "python": "3.11.9"},
        "versions": {"torch": "2.14.1", "torchserve": "0.12.0", "locust": "2.47.0"},
        "settings": {
            "duration_s": 5,
            "warmup_s": 2,
            "concurrency": [1, 16],
            "threads": 2,
            "input_size": 224,
            "images": 28,
            "served_backend": "eager",
            "stock_handler": "image_classifier",
        },
        "raw": RAW,
        "served": SERVED,
        "headline": headline(RAW, SERVED, "eager"),
    }


def test_render_markdown_has_the_tables_machine_command_and_ratios():
    md = render_markdown(report())
    assert "Test CPU (2 logical cores, 16 GiB RAM)" in md and "2026-11-23" in md
    assert "`python -m benchmarks.bench --duration 5`" in md
    assert "| 16 | 24.0 | 8.0 | 3.00× | 600 / 700 / 800 | 2000 / 4000 / 5000 | 0 / 2 |" in md
    assert "| eager | 20.0 | 32.0 | 30.0 | 32.0 at bs 8 |" in md
    assert "concurrency 16: throughput ours / stock = **3.00×**, p99 stock / ours = 6.25×" in md
    assert "120% of bs 1, 75% of the best batch size" in md


def test_render_markdown_with_a_server_left_out():
    r = report()
    r["served"] = [s for s in SERVED if s["server"] == "ours"]
    r["headline"] = headline(RAW, r["served"], "eager")
    md = render_markdown(r)
    assert "| 1 | 16.0 | n/a | n/a |" in md


def test_report_without_raw_backends(tmp_path):
    """benchmarks/delay_sweep.sh runs the bench with --backends "": served rows only, and the report still renders."""
    r = report()
    r["raw"] = []
    r["headline"] = headline([], SERVED, "eager")
    md = render_markdown(r)
    assert "| 16 | 24.0 | 8.0 | 3.00× |" in md
    assert "served / raw model = n/a of bs 1, n/a of the best batch size" in md
    plot(r, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stock_handler_is_the_stock_one_unless_the_model_has_too_few_classes():
    assert stock_handler(1000) == "image_classifier"
    assert stock_handler(5) == "image_classifier"
    assert stock_handler(4).endswith("top2_image_classifier.py")


GOOD = {
    "predictions": [
        {"label": "dots", "index": 1, "probability": 0.9},
        {"label": "checkerboard", "index": 0, "probability": 0.05},
    ],
    "embedding": {"mean": 0.42, "variance": 0.19, "dim": 2048},
    "crop": {"mode": "random", "seed": 1, "box": [0, 0, 100, 100]},
    "model": {"name": "classifier", "version": "3"},
}


@pytest.mark.parametrize(
    "broken, reason",
    [
        ({**GOOD, "predictions": GOOD["predictions"][:1]}, "expected 2 predictions"),
        ({**GOOD, "predictions": [{"index": 1, "probability": 0.9}, GOOD["predictions"][1]]}, "without a label"),
        ({**GOOD, "predictions": [GOOD["predictions"][0], {"label": "x", "probability": 1.5}]}, "not in [0, 1]"),
        ({**GOOD, "predictions": GOOD["predictions"][::-1]}, "not sorted"),
        ({k: v for k, v in GOOD.items() if k != "embedding"}, "no embedding"),
        ({**GOOD, "embedding": {"mean": math.nan, "variance": 0.1}}, "mean is not a finite number"),
        ({**GOOD, "embedding": {"mean": 0.1, "variance": -0.1}}, "variance"),
        ({**GOOD, "embedding": {"mean": 0.1}}, "variance"),
        ({k: v for k, v in GOOD.items() if k != "model"}, "no model name and version"),
        ({**GOOD, "model": {"name": "classifier", "version": ""}}, "no model name and version"),
        ({**GOOD, "model": {"name": "classifier", "version": 3}}, "no model name and version"),
        ([GOOD], "expected a JSON object"),
    ],
)
def test_check_ours_names_what_is_wrong(broken, reason):
    assert check_ours(GOOD) is None
    assert reason in check_ours(broken)


def test_check_stock():
    assert check_stock({"dots": 0.9, "checkerboard": 0.05}) is None
    assert "non-empty" in check_stock({})
    assert "non-empty" in check_stock(GOOD["predictions"])
    assert "bad label" in check_stock({"dots": 1.2})
    assert "sum to" in check_stock({"a": 0.7, "b": 0.6})
    assert "non-empty" in check(GOOD["predictions"], "stock")
    with pytest.raises(ValueError, match="ours, stock"):
        check(GOOD, "grpc")


def test_broken_levels_are_the_failed_or_empty_ones():
    failed = {"server": "stock", "concurrency": 16, "requests": 40, "failures": 2}
    assert broken_levels([failed]) == ["stock c=16: 2 failed of 40"]
    assert broken_levels([{"server": "ours", "concurrency": 4, "requests": 0, "failures": 0}]) == ["ours c=4: 0 failed of 0"]
    assert broken_levels([{"server": "ours", "concurrency": 1, "requests": 9, "failures": 0}]) == []


def test_photo_rows_get_their_own_table_and_stay_out_of_the_headline():
    from benchmarks.bench import workload_section

    photos = [
        {"server": s, "workload": "photos", "concurrency": 16, "requests": 100, "failures": 0, "rps": rps}
        | {"p50_ms": 900.0, "p95_ms": 1000.0, "p99_ms": 1100.0}
        for s, rps in (("ours", 60.0), ("stock", 10.0), ("baseline", 15.0))
    ]
    r = report()
    r["served"] = SERVED + photos
    r["settings"]["workloads"] = {"photos": "build/loadtest_photos"}
    assert headline(RAW, r["served"], "eager") == headline(RAW, SERVED, "eager")
    md = render_markdown(r)
    assert "## Phone photos and other workloads" in md
    assert "| photos | 16 | ours | 60.0 | 900 / 1000 / 1100 | 0 | 6.00× | 4.00× |" in md
    assert workload_section(report()) == []


def test_an_only_photos_report_has_no_empty_tables():
    r = report()
    r["raw"], r["headline"] = [], []
    r["served"] = [
        {"server": "ours", "workload": "photos", "concurrency": 1, "requests": 50, "failures": 0, "rps": 25.0}
        | {"p50_ms": 38.0, "p95_ms": 50.0, "p99_ms": 55.0}
    ]
    r["settings"]["workloads"] = {"photos": "build/loadtest_photos"}
    md = render_markdown(r)
    assert "## Served endpoint" not in md and "## Raw model" not in md and "## Headline" not in md
    assert "| photos | 1 | ours | 25.0 | 38 / 50 / 55 | 0 |" in md


def test_workload_levels_and_arguments():
    from benchmarks.bench import get_args_parser, workload_levels

    args = get_args_parser().parse_args(["--concurrency", "1,4", "--workload", "small=build/x", "--photo-concurrency", "1"])
    names = [(w, c) for w, _, c in workload_levels(args)]
    assert names == [("mixed", 1), ("mixed", 4), ("photos", 1), ("small", 1)]
    only = get_args_parser().parse_args(["--only-photos"])
    assert [(w, c) for w, _, c in workload_levels(only)] == [("photos", 1), ("photos", 16)]
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--workload", "nodir"])


def test_cpu_split_reads_stage_means_from_torchserves_metrics_page():
    from benchmarks.cpu_split import stage_means

    page = "\n".join(
        [
            "# TYPE classifier_stage_duration_seconds histogram",
            'classifier_stage_duration_seconds_bucket{stage="decode",ModelName="classifier",Level="Model",le="0.005",} 3.0',
            'classifier_stage_duration_seconds_sum{stage="decode",ModelName="classifier",Level="Model",} 0.06',
            'classifier_stage_duration_seconds_count{stage="decode",ModelName="classifier",Level="Model",} 4.0',
            'classifier_stage_duration_seconds_sum{stage="inference",ModelName="classifier",Level="Model",} 0.5',
            'classifier_stage_duration_seconds_count{stage="inference",ModelName="classifier",Level="Model",} 0.0',
            'ts_inference_latency_microseconds{model_name="classifier",} 1000.0',
        ]
    )
    assert stage_means(page) == pytest.approx({"decode": 15.0})


def test_report_paths_are_relative_to_the_checkout(tmp_path):
    from benchmarks.bench import REPO, display_path

    assert display_path(REPO / "build" / "loadtest_photos") == "build/loadtest_photos"
    assert display_path(tmp_path) == str(tmp_path)
