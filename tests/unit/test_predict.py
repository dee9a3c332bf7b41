"""The command-line predictor's pure parts: which files it reads, the seed and size rules, its output formats."""

from __future__ import annotations

import csv
import io
import json

import pytest

from classifier.limits import MAX_SEED
from classifier.service import ItemError, check_body_size, resolve_seed
from cli.predict import FORMATS, Result, Writer, add_arguments, choose_format, collect_paths, csv_header, table_lines

OK = Result(
    "a/one.png",
    200,
    {
        "predictions": [
            {"label": "dots", "index": 1, "probability": 0.75},
            {"label": "checkerboard", "index": 0, "probability": 0.25},
        ],
        "embedding": {"mean": 0.5, "variance": 0.25, "dim": 2048},
        "crop": {"mode": "random", "seed": 42, "box": [1, 2, 101, 102]},
        "model": {"name": "classifier", "version": "3"},
    },
)
BAD = Result("a/bad.png", 400, {"code": 400, "type": "InvalidInput", "message": "body is not an image"})


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folders_recurse_for_images_only_and_skip_hidden(tmp_path):
    a, b = touch(tmp_path / "d" / "b.JPG"), touch(tmp_path / "d" / "sub" / "a.png")
    touch(tmp_path / "d" / "notes.txt")
    touch(tmp_path / "d" / ".cache" / "c.png")
    touch(tmp_path / "d" / ".hidden.png")
    files, unmatched = collect_paths([str(tmp_path / "d")])
    assert files == [a, b] and unmatched == []


def test_named_files_keep_their_order_globs_expand_and_repeats_go(tmp_path):
    png, txt = touch(tmp_path / "z.png"), touch(tmp_path / "notes.txt")
    jpgs = [touch(tmp_path / "g" / f"{n}.jpg") for n in (2, 1)]
    files, unmatched = collect_paths(
        [str(png), str(txt), str(tmp_path / "g" / "*.jpg"), str(png), str(tmp_path / "**" / "1.jpg")]
    )
    # A named non-image is kept, so its line says why it failed.
    assert files == [png, txt, jpgs[1], jpgs[0]] and unmatched == []


def test_arguments_that_match_nothing_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    files, unmatched = collect_paths([str(tmp_path / "missing.png"), str(tmp_path / "*.webp"), str(tmp_path / "empty")])
    assert files == [] and unmatched == [str(tmp_path / "missing.png"), str(tmp_path / "*.webp"), str(tmp_path / "empty")]


def test_seed_rules_match_the_server():
    assert resolve_seed("center", 42) is None
    assert resolve_seed("random", 42) == 42 and resolve_seed("random", 0) == 0
    assert resolve_seed("random", None, draw=lambda bits: bits * 1000) == 63_000
    assert 0 <= resolve_seed("random", None) <= MAX_SEED


def test_body_size_limit_is_a_413_naming_both_sizes():
    check_body_size(10, 10)
    check_body_size(10**9, None)
    with pytest.raises(ItemError, match="11 bytes, over the limit of 10 bytes") as info:
        check_body_size(11, 10)
    assert info.value.code == 413


@pytest.mark.parametrize("bad", ["-1", str(MAX_SEED + 1), "4.5"])
def test_seed_option_refuses_what_the_server_refuses(bad, capsys):
    parser = add_arguments(__import__("argparse").ArgumentParser())
    with pytest.raises(SystemExit):
        parser.parse_args(["x.png", "--seed", bad])
    assert "seed must be an integer in [0, 9223372036854775807]" in capsys.readouterr().err
    assert parser.parse_args(["x.png", "--seed", str(MAX_SEED)]).seed == MAX_SEED


def test_format_follows_the_flag_then_the_file_suffix_then_the_terminal(tmp_path):
    assert choose_format("csv", None, True) == "csv"
    assert choose_format(None, tmp_path / "out.CSV", True) == "csv"
    assert choose_format(None, tmp_path / "out.txt", False) == "table"
    assert choose_format(None, tmp_path / "out.jsonl", True) == "jsonl"
    assert choose_format(None, None, True) == "table" and choose_format(None, None, False) == "jsonl"


def written(fmt: str) -> str:
    out = io.StringIO()
    writer = Writer(out, fmt, topk=2)
    writer.write([OK, BAD])
    writer.close()
    return out.getvalue()


def test_jsonl_is_the_server_body_with_the_path_first():
    lines = [json.loads(line) for line in written("jsonl").splitlines()]
    assert [list(line)[0] for line in lines] == ["path", "path"]
    assert lines[0] == {"path": OK.path, **OK.body} and lines[1] == {"path": BAD.path, **BAD.body}


def test_csv_has_one_row_per_file_with_the_error_in_its_own_column():
    rows = list(csv.DictReader(io.StringIO(written("csv"))))
    assert list(rows[0]) == csv_header(2)
    assert rows[0]["path"] == OK.path and rows[0]["label_1"] == "dots" and float(rows[0]["probability_2"]) == 0.25
    assert rows[0]["crop_seed"] == "42" and rows[0]["crop_box"] == "1 2 101 102" and rows[0]["error"] == ""
    assert rows[1]["code"] == "400" and rows[1]["error"] == "body is not an image" and rows[1]["label_1"] == ""
    assert (rows[0]["model_name"], rows[0]["model_version"]) == ("classifier", "3") and rows[1]["model_version"] == ""
    assert csv_header(2)[-3:] == ["error", "model_name", "model_version"]  # added last: earlier columns keep their place


def test_table_aligns_columns_and_spells_out_errors():
    header, ok, bad = table_lines([OK, BAD], topk=2)
    assert header.split() == ["PATH", "TOP-1", "TOP-2", "SEED"]
    assert ok.split() == ["a/one.png", "dots", "0.750", "checkerboard", "0.250", "42"]
    assert ok.index("dots") == header.index("TOP-1") and ok.index("42") == header.index("SEED")
    assert bad == "a/bad.png  error 400: body is not an image"


def test_every_format_is_written():
    for fmt in FORMATS:
        assert OK.path in written(fmt) and BAD.path in written(fmt)
