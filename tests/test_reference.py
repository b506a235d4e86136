"""Published tables beside ganbench's runs: means, standard errors and agreement verdicts."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ganbench.errors import UserError
from ganbench.report.reference import compare, load_reference, reference_names, terminal_table
from ganbench.report.runs import RunSet

PUBLISHED = """
source = "A paper, Table 9"
statistic = "standard error"
trials = 4

[[row]]
label = "GAN"
match = { dataset = "ring8", pac = 1 }
modes_covered = [6.0, 0.5]

[[row]]
label = "PacGAN2"
match = { dataset = "ring8", pac = 2 }
modes_covered = [2.0, 0.1]
"""


def run_set(values_by_pac: dict[int, list[float]], status: str = "done") -> RunSet:
    rows, configs = [], {}
    for pac, values in values_by_pac.items():
        configs[f"c{pac}"] = {"dataset": "ring8", "architecture": "pacgan", "params": {"pac": pac, "lr_g": 1e-4}}
        rows += [{"config_id": f"c{pac}", "dataset": "ring8", "seed": seed, "status": status, "modes_covered": v}
                 for seed, v in enumerate(values)]
    return RunSet(pd.DataFrame(rows), ["modes_covered"], configs, {}, [])


@pytest.fixture
def reference(tmp_path):
    path = tmp_path / "table9.toml"
    path.write_text(PUBLISHED)
    return load_reference(str(path))


def test_each_row_gets_the_mean_and_standard_error_of_its_matching_runs(reference):
    ours = {1: [5.0, 6.0, 8.0, 7.0], 2: [7.0, 8.0, 8.0]}
    rows = compare(reference, run_set(ours))
    for row, pac in zip(rows, (1, 2)):
        figure, = row.figures
        assert row.runs == figure.runs == len(ours[pac])
        assert figure.mean == pytest.approx(np.mean(ours[pac]))
        assert figure.standard_error == pytest.approx(stats.sem(ours[pac]))
    # 6.5 +- 0.645 vs 6.0 +- 0.5: a gap of 0.5 within 2 * 0.816; 7.67 vs 2.0: far apart
    assert [row.figures[0].verdict for row in rows] == ["agrees", "differs"]


def test_the_verdict_turns_at_two_combined_standard_errors(reference):
    # published 6.0 +- 0.5; two equal runs have SE 0, so the allowed gap is 2 * 0.5 = 1.0
    assert compare(reference, run_set({1: [7.0, 7.0]}))[0].figures[0].verdict == "agrees"
    assert compare(reference, run_set({1: [7.01, 7.01]}))[0].figures[0].verdict == "differs"
    # runs 6.4 and 8.0: mean 7.2, SE 0.8; allowed 2 * sqrt(0.8^2 + 0.5^2) = 1.89 > 1.2
    assert compare(reference, run_set({1: [6.4, 8.0]}))[0].figures[0].verdict == "agrees"


def test_configs_matching_one_row_get_a_line_each_never_one_pooled_mean(reference):
    # pac 1 run with two generator-step settings: seeds of either are never averaged together
    runs = run_set({1: [5.0, 6.0, 7.0], 2: [8.0, 8.0]})
    runs.configs["c1-g2"] = {"dataset": "ring8", "architecture": "pacgan",
                             "params": {"pac": 1, "lr_g": 1e-4, "g_steps": 2}}
    extra = pd.DataFrame([{"config_id": "c1-g2", "dataset": "ring8", "seed": seed, "status": "done",
                           "modes_covered": value} for seed, value in enumerate([1.0, 2.0])])
    runs = RunSet(pd.concat([runs.frame, extra], ignore_index=True), runs.metric_columns, runs.configs, {}, [])
    rows = compare(reference, runs)
    assert [(row.label, row.runs) for row in rows] == [("GAN [g_steps=None]", 3), ("GAN [g_steps=2]", 2),
                                                       ("PacGAN2", 2)]
    assert [row.figures[0].mean for row in rows] == pytest.approx([6.0, 1.5, 8.0])
    from rich.console import Console

    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    console.print(terminal_table(reference, rows))
    shown = console.export_text()
    assert "GAN [g_steps=None]" in shown and "GAN [g_steps=2]" in shown  # text, not rich markup


def test_one_run_or_none_gives_no_verdict_and_unfinished_runs_do_not_count(reference):
    assert compare(reference, run_set({1: [6.0]}))[0].figures[0].verdict == "can't tell (1 run)"
    row = compare(reference, run_set({1: [6.0, 6.1]}, status="running"))[0]
    assert row.runs == 0 and row.figures[0].verdict == "no runs" and math.isnan(row.figures[0].mean)


def test_a_figure_the_metric_marks_not_meaningful_carries_the_mark_in_every_format(reference):
    from ganbench.report.reference import markdown, to_json

    class FewerThanSevenMeansNothing:
        name = "judge"

        def not_meaningful(self, values):
            return {"modes_covered": "only a test's reason"} if values["modes_covered"] < 7 else {}

    runs = run_set({1: [6.0, 8.0, 5.0], 2: [8.0, 8.0]})
    rows = compare(reference, runs, [FewerThanSevenMeansNothing()])
    marked, clean = rows[0].figures[0], rows[1].figures[0]
    assert marked.not_meaningful == ["only a test's reason"] * 2 and clean.not_meaningful == []
    assert "not meaningful in 2 of 3 runs (only a test's reason)" in marked.shown_verdict()
    assert clean.shown_verdict() == clean.verdict
    text = markdown(reference, rows)
    assert text.count("not meaningful") == 1 and "only a test's reason" in text
    figures = [row["figures"][0] for row in to_json(reference, rows)["rows"]]
    assert [f["not_meaningful_runs"] for f in figures] == [2, 0]
    table = terminal_table(reference, rows)
    assert "n/m = not meaningful" in table.caption and "only a test's reason" in table.caption
    assert compare(reference, runs)[0].figures[0].not_meaningful == []  # no judges: no marks


def test_the_shipped_pacgan_table1_reference_is_the_papers_table():
    assert "pacgan-table1" in reference_names()
    table = load_reference("pacgan-table1")
    assert table.trials == 10 and len(table.rows) == 8
    gan_ring = table.rows[0]
    assert gan_ring.match == {"dataset": "ring8", "pac": 1}
    assert gan_ring.figures["modes_covered"] == (6.3, 0.5)
    assert table.rows[-1].figures["modes_reverse_kl"] == (0.04, 0.01)
    assert terminal_table(table, compare(table, run_set({1: [6.0, 7.0]}))).row_count == 8


def test_bad_references_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="shipped references: .*pacgan-table1"):
        load_reference("no-such-table")
    bad = tmp_path / "bad.toml"
    bad.write_text(PUBLISHED.replace('"standard error"', '"std"'))
    with pytest.raises(UserError, match="statistic must be"):
        load_reference(str(bad))
    bad.write_text(PUBLISHED.replace("[6.0, 0.5]", "6.0"))
    with pytest.raises(UserError, match=r"must be \[mean, error\]"):
        load_reference(str(bad))


def test_report_with_an_unknown_reference_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", "from ganbench.cli import main; main()", "report", str(tmp_path),
                           "--reference", "nosuch"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "unknown reference 'nosuch'" in done.stderr
