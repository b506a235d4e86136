"""Run records (runs.jsonl): a report keeps its runs' configs, statuses and histories, and a later
report reads them back, alone or merged with new run directories, after the directories are gone.

Run directories are written in the ledger's format by test_report.make_run; the figures read
back are checked against the values the runs were written with, not against the report itself.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from ganbench.errors import UserError
from ganbench.ledger.records import RECORDS_FILE, read_run_records, unpack_run_records
from ganbench.report.runs import load_runs
from test_report import FID, MODES, comparison_of, make_benchmark, make_run


def report(*sources, out):
    from ganbench.cli import cli

    result = CliRunner().invoke(cli, ["report", *map(str, sources), "--sort", "fid", "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_a_report_keeps_one_record_per_run_with_its_config_status_and_history(tmp_path):
    make_benchmark(tmp_path / "out", losses=("ns", "hinge"), seeds=(0, 1))
    report(tmp_path / "out", out=tmp_path / "report")
    records = read_run_records(tmp_path / "report" / RECORDS_FILE)
    assert len(records) == 4
    for record in records:
        run_dir = tmp_path / "out" / "runs" / record["run_id"]
        assert record["config"] == json.loads((run_dir / "config.json").read_text())
        assert record["status"] == json.loads((run_dir / "status.json").read_text())
        evals = [line for line in record["history"] if line["kind"] == "eval"]
        loss, seed = record["config"]["loss"], record["config"]["seed"]
        assert [(line["step"], line["fid10k_test"]) for line in evals] == [(50, FID[loss][seed] * 2),
                                                                            (100, FID[loss][seed])]
        assert not any(name.endswith(".pt") or name == "samples" for name in json.dumps(record))


def test_records_alone_give_the_report_of_the_lost_run_directories(tmp_path):
    make_benchmark(tmp_path / "out")
    before = report(tmp_path / "out", out=tmp_path / "first")
    shutil.rmtree(tmp_path / "out")  # the machine is gone; the published report stays
    after = report(tmp_path / "first" / RECORDS_FILE, out=tmp_path / "second")
    assert [c["seeds"] for c in after["configs"]] == [[0, 1, 2]] * 3
    for config in after["configs"]:
        loss = config["loss"]
        assert config["metrics"]["fid10k_test"]["values"] == FID[loss]  # the values the runs were made with
        assert config["metrics"]["modes_covered"]["values"] == MODES[loss]
        assert all(location == f"{tmp_path / 'first' / RECORDS_FILE}#{run_id}"
                   for location, run_id in zip(config["run_dirs"], config["run_ids"]))
    assert ([c["significance"]["verdict"] for c in after["configs"]]
            == [c["significance"]["verdict"] for c in before["configs"]])
    assert (tmp_path / "second" / "plots" / "history_ring8.png").exists()  # the histories came along
    assert read_run_records(tmp_path / "second" / RECORDS_FILE) == read_run_records(tmp_path / "first" / RECORDS_FILE)


def test_later_seeds_merge_with_the_records_of_a_published_report(tmp_path):
    make_benchmark(tmp_path / "session1", seeds=(0, 1))
    report(tmp_path / "session1", out=tmp_path / "published")
    shutil.rmtree(tmp_path / "session1")
    make_benchmark(tmp_path / "session2", seeds=(2,))
    make_run(tmp_path / "session2", "ns", 0, {"fid10k_test": 99.0})  # seed 0 again, retrained: counted once
    merged = report(tmp_path / "session2", tmp_path / "published" / RECORDS_FILE, out=tmp_path / "published")
    ns = next(c for c in merged["configs"] if c["loss"] == "ns")
    assert ns["seeds"] == [0, 1, 2]
    assert ns["metrics"]["fid10k_test"]["values"] == [99.0, FID["ns"][1], FID["ns"][2]]  # the first source wins
    assert np.isclose(ns["metrics"]["fid10k_test"]["mean"], np.mean([99.0, FID["ns"][1], FID["ns"][2]]))
    assert len(read_run_records(tmp_path / "published" / RECORDS_FILE)) == 9
    runs = load_runs([tmp_path / "session2", tmp_path / "published" / RECORDS_FILE])
    assert any("counted once" in note for note in runs.notes)


def test_records_are_read_like_directories_by_the_comparison(tmp_path):
    make_benchmark(tmp_path / "out", losses=("ns",), seeds=(0, 1, 2))
    report(tmp_path / "out", out=tmp_path / "report")
    from_dirs = comparison_of(tmp_path / "out", sort="fid").configs[0]
    from_records = comparison_of(tmp_path / "report" / RECORDS_FILE, sort="fid").configs[0]
    assert from_records.config == from_dirs.config and from_records.run_ids == from_dirs.run_ids
    assert from_records.metrics["fid10k_test"].values == from_dirs.metrics["fid10k_test"].values


@pytest.mark.parametrize("line, problem", [
    ("not json", "is not a ganbench run record"),
    ('{"schema": "something-else/1"}', "is not a ganbench run record"),
    ('{"schema": "ganbench-run-record/1", "run_id": "../escape", "config": {"run_id": "../escape"},'
     ' "status": {}, "history": []}', "is not a ganbench run record"),
])
def test_a_damaged_records_file_is_a_one_line_error_naming_the_line(tmp_path, line, problem):
    path = tmp_path / RECORDS_FILE
    path.write_text(line + "\n")
    with pytest.raises(UserError, match=problem) as error:
        unpack_run_records(path, tmp_path / "unpacked")
    assert f"{path}, line 1" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "unpacked").exists()


def test_a_records_file_without_an_output_directory_is_told_to_say_where(tmp_path, capsys):
    from ganbench.cli import main

    make_benchmark(tmp_path / "out", losses=("ns",), seeds=(0,))
    report(tmp_path / "out", out=tmp_path / "report")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "report" / RECORDS_FILE)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ganbench: error:") and "-o DIR" in error and "\n" not in error
