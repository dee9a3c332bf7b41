"""The benchmark drivers' report templates (benchmarks/templates/): they parse, fill in numbers and refuse gaps."""

from __future__ import annotations

import jinja2
import pytest

from benchmarks import reports
from benchmarks.photo_stages import server_table
from benchmarks.soak import render as render_soak


@pytest.mark.parametrize("name", sorted(p.name for p in reports.TEMPLATES.glob("*.md.j2")))
def test_every_template_parses(name):
    assert reports.environment().get_template(name) is not None


def test_measured_shows_a_missing_measurement_as_na():
    assert reports.measured(None) == "n/a"
    assert reports.measured(3.14159) == "3.1"
    assert reports.measured(2.5, ".2f", "×") == "2.50×"
    assert reports.measured(0.754, ".0%") == "75%"


def test_a_number_the_template_needs_and_the_driver_left_out_is_an_error():
    with pytest.raises(jinja2.UndefinedError):
        reports.render("soak.md.j2", date="2026-11-24")


def soak_run(**changes) -> dict:
    # (seconds, worker RSS, frontend RSS, OK, failed): after the warm-up the worker grows 10 MB/min, the frontend 2
    samples = [(0.0, 900.0, 400.0, 0, 0), (60.0, 950.0, 410.0, 2400, 0), (120.0, 960.0, 412.0, 4800, 0)]
    samples.append((180.0, 970.0, 414.0, 7200, 0))
    run = {
        "date": "2026-11-24",
        "host": "box",
        "cpus": 2,
        "ram_gib": 24.0,
        "clients": 4,
        "duration": 180.0,
        "warmup": 60.0,
        "ok": 7200,
        "failed": 0,
        "samples": samples,
        "same_worker": True,
    }
    return run | changes


def test_soak_page_has_the_counts_slopes_and_every_sample():
    page = render_soak(soak_run())
    assert page.startswith("# Soak: memory under sustained load\n\nMeasured 2026-11-24 on box (2 CPUs, 24 GiB)")
    assert "- requests: 7200 (7200 OK, 0 failed), 40.0 req/s" in page
    assert "- worker RSS: 950 MB at 60 s, 970 MB at the end; slope after 60 s warm-up: **+10.00 MB/min**" in page
    assert "- frontend (Java) RSS: 410 MB at 60 s, 414 MB at the end; slope +2.00 MB/min" in page
    assert "- the same worker process served the whole run: yes" in page
    assert "| 0 | 900 | 400 | 0 | 0 |\n| 60 | 950 | 410 | 2400 | 0 |" in page
    last = "| 180 | 970 | 414 | 7200 | 0 |\n\nThe throughput here is not a benchmark: see docs/benchmarks.md for that.\n"
    assert page.endswith(last)
    assert "served the whole run: NO" in render_soak(soak_run(same_worker=False))


def test_photo_stages_server_table():
    rows = [("100 B non-image body (400)", 2.04, 0.51, 1.2), ("photo (200)", 38.16, 10.0, 30.0)]
    assert server_table(rows) == (
        "\n| request, one at a time | wall p50 ms | Java frontend CPU ms | worker CPU ms |\n|---|---:|---:|---:|\n"
        "| 100 B non-image body (400) | 2.0 | 0.5 | 1.2 |\n| photo (200) | 38.2 | 10.0 | 30.0 |\n"
    )


def test_a_template_from_another_folder_renders_with_the_same_filters(tmp_path):
    # cpp.compare keeps its template in cpp/templates/ and renders it here, with these settings and filters.
    (tmp_path / "page.md.j2").write_text(
        "{#- a comment -#}\n{% for x in xs %}\n| {{ x | fmt('.2f') }} | {{ None | measured }} |\n{% endfor %}\n"
    )
    assert reports.render("page.md.j2", folder=tmp_path, xs=[1, 2.5]) == "| 1.00 | n/a |\n| 2.50 | n/a |\n"
    with pytest.raises(jinja2.UndefinedError):
        reports.render("page.md.j2", folder=tmp_path)
