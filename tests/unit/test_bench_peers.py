"""The pure parts of benchmarks/peers.py: CPU per request, ratios, the report section, its splice, the arguments."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.peers import (
    BEGIN,
    END,
    OURS,
    PEERS,
    by_name,
    cpu_per_request,
    get_args_parser,
    peer_list,
    plot,
    ratios,
    render_section,
    splice,
)


def row(server, workload, users, rps, p99, failures=0):
    return {
        "server": server,
        "workload": workload,
        "users": users,
        "requests": 100,
        "failures": failures,
        "rps": rps,
        "p50_ms": p99 / 2 if p99 else None,
        "p99_ms": p99,
        "cpu_ms": {"java": 3.0, "python": 20.5},
        "rss_mib": {"java": 400.0, "python": 300.0},
    }


def report(rows):
    return {
        "date": "2026-12-03 14:00 UTC",
        "command": "python -m benchmarks.peers --duration 5",
        "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 8.0, "os": "Linux"},
        "settings": {"duration_s": 5.0, "warmup_s": 1.0, "mar": "classifier.mar"},
        "skipped": {"ray": "/x/.venv-ray/bin/python is missing (`make peers` builds it)"},
        "rows": rows,
        "ratios": ratios(rows),
    }


def test_processes_of_one_name_add_up():
    assert by_name([("python", 1.0), ("java", 2.0), ("python", 0.5)]) == {"python": 1.5, "java": 2.0}


def test_cpu_per_request_is_the_difference_per_answer_in_ms():
    before, after = {"java": 1.0, "python": 10.0}, {"java": 1.5, "python": 12.0, "tritonserver": 0.2}
    # A process first seen after the start counts from zero.
    assert cpu_per_request(before, after, 100) == pytest.approx({"java": 5.0, "python": 20.0, "tritonserver": 2.0})
    assert cpu_per_request(before, after, 0) == {}


def test_ratios_pair_each_peer_with_ours_at_the_same_level():
    rows = [row(OURS, "sample", 1, 20.0, 60.0), row("triton", "sample", 1, 30.0, 30.0), row("triton", "photo", 16, 5.0, 900.0)]
    assert ratios(rows) == [{"server": "triton", "workload": "sample", "users": 1, "rps": 1.5, "p99": 0.5}]


def test_a_level_without_answers_has_no_ratio():
    rows = [row(OURS, "mixed", 16, None, None, failures=100), row("triton", "mixed", 16, 30.0, 30.0)]
    assert ratios(rows) == [{"server": "triton", "workload": "mixed", "users": 16, "rps": None, "p99": None}]


def test_the_section_names_machine_command_levels_skips_and_ratios():
    text = render_section(report([row(OURS, "sample", 16, 20.0, 60.0), row("triton", "sample", 16, 25.0, 48.0)]))
    assert text.startswith(BEGIN) and text.rstrip().endswith(END)
    assert "Test CPU (2 logical cores, 8 GiB)" in text and "`python -m benchmarks.peers --duration 5`" in text
    assert "| triton | sample | 16 | 25.0 | 24 | 48 | 0 of 100 | java 3.0, python 20.5 | java 400, python 300 |" in text
    assert "| triton | sample | 16 | 1.25 | 0.80 |" in text
    assert "- ray: not measured, /x/.venv-ray/bin/python is missing" in text


def test_splice_replaces_only_the_measured_section():
    doc = f"# Peers\n\nprose before\n\n{BEGIN}\nold numbers\n{END}\n\n## Migration\n\nprose after\n"
    out = splice(doc, f"{BEGIN}\nnew numbers\n{END}\n")
    assert out == f"# Peers\n\nprose before\n\n{BEGIN}\nnew numbers\n{END}\n\n## Migration\n\nprose after\n"
    assert splice("# Peers\n", f"{BEGIN}\nx\n{END}\n") == f"# Peers\n\n{BEGIN}\nx\n{END}\n"


def test_peers_are_checked_by_name():
    assert peer_list("triton") == ["triton"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown peer"):
        peer_list("triton,nginx")
    args = get_args_parser().parse_args(["--duration", "5", "--warmup", "1"])
    assert (args.duration, args.warmup, args.peers) == (5.0, 1.0, list(PEERS))


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "peers.png"
    plot(report([row(OURS, "sample", 1, 20.0, 60.0), row("triton", "sample", 1, 25.0, 48.0)]), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
