"""Comparison reports: aggregation numbers, significance marks, merging, commands and every file format.

Run directories are written here in the ledger's format (config.json from a real RunSpec,
status.json through RunDirectory, metrics.jsonl lines as the training loop writes them),
and the numbers are checked against scipy and numpy computed independently.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console
from scipy import stats

from ganbench.errors import UserError
from ganbench.ledger.runs import run_directory
from ganbench.ledger.storage import append_jsonl
from ganbench.planning.spec import RunSpec
from ganbench.registry import get_registry
from ganbench.report import write_report
from ganbench.report.aggregate import aggregate
from ganbench.report.directions import direction_of
from ganbench.report.files import CSV_COLUMNS, SCHEMA
from ganbench.report.runs import load_runs
from ganbench.report.significance import holm, welch_worse_p

REGISTRY = get_registry()

# A hand-made benchmark on a 2D set: FID-like "score" lower is better, per seed.
FID = {"ns": [10.0, 11.0, 12.0], "lsgan": [10.5, 11.5, 12.5], "hinge": [30.0, 31.0, 32.5]}
MODES = {"ns": [8, 8, 7], "lsgan": [8, 7, 7], "hinge": [3, 4, 3]}
THROUGHPUT = {"ns": [1000.0, 1100.0, 1050.0], "lsgan": [900.0, 950.0, 1000.0], "hinge": [2000.0, 2100.0, 2050.0]}


def defaults(architecture: str, loss: str, dataset: str) -> dict:
    from ganbench.planning.defaults import LOOP_DEFAULTS

    params = dict(LOOP_DEFAULTS)
    for kind, name in (("loss", loss), ("architecture", architecture), ("dataset", dataset)):
        params.update(REGISTRY.get(kind, name).defaults)
    return params


def versions(loss: str, dataset: str) -> dict:
    """What ``ganbench run`` records in config.json "versions" (see ganbench.planning.grid.expand)."""
    from ganbench import __version__

    return {"ganbench": __version__, "architecture:mlp": REGISTRY.version_of("architecture", "mlp"),
            f"loss:{loss}": REGISTRY.version_of("loss", loss), f"dataset:{dataset}": REGISTRY.version_of("dataset", dataset)}


def make_run(out, loss, seed, metrics=None, *, dataset="ring8", status="done", params=None, steps=100,
             wall_seconds=5.0, history=(), protocol=None, picture=True, error="", version_changes=None):
    """Write one run directory exactly as the ledger lays it out; return its RunSpec."""
    spec = RunSpec(architecture="mlp", loss=loss, dataset=dataset, seed=seed, steps=steps, batch_size=64,
                   split="train", params={**defaults("mlp", loss, dataset), **(params or {})},
                   versions={**versions(loss, dataset), **(version_changes or {})}, metrics=("modes", "throughput"),
                   evaluation={"modes_samples": 2500, "modes_threshold_std": 3.0})
    directory = run_directory(out, spec)
    fields = {"step": steps, "wall_seconds": wall_seconds}
    if error:
        fields["error"] = error
    if metrics is not None:
        fields["metrics"] = metrics
        fields["protocol"] = protocol if protocol is not None else {
            column: {"metric": "modes", "generated_samples": "2500"} for column in metrics}
    directory.write_status(status, **fields)
    lines = [{"step": step, "kind": "train", "d_loss": 1.0 / step, "g_loss": 2.0 / step, "penalty": 0.0,
              "wall_seconds": step * 0.01} for step in (50, 100)]
    lines += [{"step": step, "kind": "eval", **values} for step, values in history]
    append_jsonl(directory.metrics, lines)
    if picture:
        pixels = np.random.default_rng(seed).uniform(size=(16, 16, 3))
        matplotlib.image.imsave(directory.samples / f"step_{steps:07d}.png", pixels)
    return spec


def make_benchmark(out, losses=("ns", "lsgan", "hinge"), seeds=(0, 1, 2)):
    for loss in losses:
        for seed in seeds:  # the seed picks the value, so split benchmarks merge back into FID etc.
            make_run(out, loss, seed, {"fid10k_test": FID[loss][seed], "modes_covered": MODES[loss][seed],
                                       "images_per_second": THROUGHPUT[loss][seed]},
                     history=[(50, {"fid10k_test": FID[loss][seed] * 2}), (100, {"fid10k_test": FID[loss][seed]})])


def comparison_of(*outs, sort=None):
    return aggregate(load_runs(list(outs)), sort=sort, registry=REGISTRY, hardware_fallback=lambda: "test machine")


def quiet_console():
    return Console(file=open(os.devnull, "w"), width=200)


def test_seed_statistics_match_scipy_and_numpy(tmp_path):
    make_benchmark(tmp_path)
    comparison = comparison_of(tmp_path, sort="fid")
    for loss, values in FID.items():
        config = next(c for c in comparison.configs if c.config["loss"] == loss)
        summary = config.metrics["fid10k_test"]
        low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert summary.n == 3 and config.seeds == [0, 1, 2]
        assert summary.mean == pytest.approx(np.mean(values))
        assert summary.std == pytest.approx(np.std(values, ddof=1))
        assert (summary.ci_low, summary.ci_high) == (pytest.approx(low), pytest.approx(high))
        assert summary.median == pytest.approx(np.median(values))
        assert summary.best == min(values)  # lower is better for FID
        assert config.metrics["modes_covered"].best == max(MODES[loss])  # higher is better
        assert config.counts == {"runs": 3, "done": 3, "diverged": 0, "failed": 0, "unfinished": 0}


def test_configs_are_sorted_by_the_primary_metric_in_its_direction(tmp_path):
    make_benchmark(tmp_path)
    assert [c.config["loss"] for c in comparison_of(tmp_path, sort="fid").configs] == ["ns", "lsgan", "hinge"]
    assert [c.config["loss"] for c in comparison_of(tmp_path, sort="images_per_second").configs] == \
        ["hinge", "ns", "lsgan"]
    default = comparison_of(tmp_path)
    assert default.primary == {"ring8": "fid10k_test"}  # fid before modes_covered when no --sort


def test_unknown_sort_metric_is_a_user_error_listing_the_metrics(tmp_path):
    make_benchmark(tmp_path)
    with pytest.raises(UserError, match="modes_covered"):
        comparison_of(tmp_path, sort="precision")


def test_diverged_and_failed_runs_are_counted_but_not_averaged(tmp_path):
    make_benchmark(tmp_path, losses=("ns",), seeds=(0, 1))
    make_run(tmp_path, "ns", 2, status="diverged", error="non-finite loss at step 40")
    make_run(tmp_path, "ns", 3, status="failed", error="RuntimeError: boom")
    make_run(tmp_path, "ns", 4, status="running", metrics={"fid10k_test": 999.0})
    (config,) = comparison_of(tmp_path).configs
    assert config.counts == {"runs": 5, "done": 2, "diverged": 1, "failed": 1, "unfinished": 1}
    assert config.metrics["fid10k_test"].values == FID["ns"][:2]
    assert any("non-finite" in error for error in config.errors)


def test_welch_one_sided_p_matches_scipy_and_holm_adjusts():
    best, other = [10.0, 11.0, 12.0], [10.5, 11.5, 12.5]
    expected = stats.ttest_ind(other, best, equal_var=False).pvalue / 2  # t > 0: one-sided is half
    assert welch_worse_p(other, best, "lower") == pytest.approx(expected)
    assert welch_worse_p(best[:1], other, "lower") is None  # n = 1: can't tell
    assert welch_worse_p([3.0, 3.0], [3.0, 3.0], "higher") == 1.0
    assert welch_worse_p([2.0, 2.0], [3.0, 3.0], "higher") == 0.0
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_a_clearly_worse_config_is_marked_and_a_tied_one_is_not(tmp_path):
    make_benchmark(tmp_path)
    verdicts = {c.config["loss"]: c.verdict for c in comparison_of(tmp_path, sort="fid").configs}
    assert verdicts["ns"].label == "best"
    assert verdicts["lsgan"].label == "tied" and verdicts["lsgan"].p_adjusted > 0.05
    assert verdicts["hinge"].label == "worse" and verdicts["hinge"].p_adjusted < 0.05
    raw = [stats.ttest_ind(FID[loss], FID["ns"], equal_var=False, alternative="greater").pvalue
           for loss in ("lsgan", "hinge")]
    assert [verdicts["lsgan"].p_value, verdicts["hinge"].p_value] == pytest.approx(raw)
    assert [verdicts["lsgan"].p_adjusted, verdicts["hinge"].p_adjusted] == pytest.approx(holm(raw))


def test_a_single_seed_cannot_be_told_apart(tmp_path):
    make_benchmark(tmp_path, seeds=(0,))
    verdicts = {c.config["loss"]: c.verdict.label for c in comparison_of(tmp_path, sort="fid").configs}
    assert verdicts == {"ns": "best", "lsgan": "can't tell", "hinge": "can't tell"}
    assert all(math.isnan(c.metrics["fid10k_test"].ci_low) for c in comparison_of(tmp_path).configs)


def test_two_output_directories_merge_into_one_comparison(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    make_benchmark(first, seeds=(0, 1))
    make_benchmark(second, seeds=(2,))
    make_benchmark(second, losses=("ns",), seeds=(0,))  # the same run in both: counted once
    make_run(second, "ns", 0, {"fid10k_test": 5.0}, params={"lr_g": 1e-4})  # a different config
    comparison = comparison_of(first, second, sort="fid")
    ns = [c for c in comparison.configs if c.config["loss"] == "ns"]
    assert len(ns) == 2 and {c.label for c in ns} == {"mlp/ns lr_g=0.0001", "mlp/ns lr_g=0.0002"}
    merged = next(c for c in ns if c.config["params"]["lr_g"] == 2e-4)
    assert merged.seeds == [0, 1, 2] and merged.metrics["fid10k_test"].values == FID["ns"]
    assert any("counted once" in note for note in comparison.notes)
    assert comparison.sources == [first, second]


def test_a_run_from_before_a_setting_existed_is_a_seed_of_the_config_with_its_neutral_value(tmp_path):
    from ganbench.planning.spec import ID_NEUTRAL_PARAMS

    make_benchmark(tmp_path, losses=("ns",), seeds=(0, 1))
    old = make_run(tmp_path, "ns", 2, {"fid10k_test": FID["ns"][2]})
    config_file = tmp_path / "runs" / old.run_id / "config.json"
    config = json.loads(config_file.read_text())  # as a ganbench without lr_schedule, g_steps, latent wrote it
    config["params"] = {key: value for key, value in config["params"].items() if key not in ID_NEUTRAL_PARAMS}
    config_file.write_text(json.dumps(config))
    ns, = comparison_of(tmp_path, sort="fid").configs
    assert ns.seeds == [0, 1, 2] and ns.label == "mlp/ns"
    assert ns.metrics["fid10k_test"].values == FID["ns"]


def test_reproduce_command_lists_what_differs_from_the_defaults(tmp_path):
    make_run(tmp_path, "ns", 0, {"fid10k_test": 1.0}, params={"lr_d": 1e-4, "n_critic": 2})
    make_run(tmp_path, "ns", 3, {"fid10k_test": 1.0}, params={"lr_d": 1e-4, "n_critic": 2})
    (config,) = comparison_of(tmp_path).configs
    words = shlex.split(config.command)
    assert words[:2] == ["ganbench", "run"]
    assert words[words.index("--seeds") + 1] == "0,3"
    assert [words[i + 1] for i, w in enumerate(words) if w == "--set"] == ["lr_d=0.0001", "n_critic=2"]
    for flag, value in (("--steps", "100"), ("--batch-size", "64"), ("--split", "train"),
                        ("--metrics", "modes,throughput")):
        assert words[words.index(flag) + 1] == value


def test_runs_of_other_versions_get_a_note_that_their_command_trains_new_runs(tmp_path):
    make_run(tmp_path, "ns", 0, {"fid10k_test": 1.0})
    assert comparison_of(tmp_path).notes == []
    make_run(tmp_path, "lsgan", 0, {"fid10k_test": 1.0}, version_changes={"ganbench": "0.0.9"})
    (note,) = comparison_of(tmp_path).notes
    assert "mlp/lsgan" in note and "ganbench ran 0.0.9" in note


def test_reproduce_command_gives_the_same_run_ids_through_ganbench_run(tmp_path, monkeypatch):
    """Both commands go through the real `ganbench run` parsing and grid expansion; only training is faked."""
    import ganbench.execution.runner
    from ganbench.cli import cli

    expanded = []

    def pretend_to_train(runs, registry, options, console):
        expanded.append([spec.run_id for spec in runs])
        for spec in runs:  # finished runs, as the ledger would hold them
            run_directory(options.out, spec).write_status("done", step=spec.steps,
                                                          metrics={"images_per_second": 1.0})
        return ganbench.execution.runner.GridSummary(statuses={spec.run_id: "done" for spec in runs})

    monkeypatch.setattr(ganbench.execution.runner, "run_grid", pretend_to_train)
    runner = CliRunner()
    original = runner.invoke(cli, ["run", "--archs", "mlp", "--losses", "lsgan,wgan-gp", "--datasets", "ring8",
                                   "--seeds", "0,1", "--steps", "7", "--batch-size", "8", "--metrics", "modes",
                                   "--set", "lr=1e-4", "--set", "mlp_width=16", "--set", "modes_samples=100",
                                   "--eval-every", "5", "--out", str(tmp_path / "a"), "--quiet"],
                             catch_exceptions=False)
    assert original.exit_code == 0, original.output
    write_report([tmp_path / "a"], quiet_console())
    configs = json.loads((tmp_path / "a" / "report" / "report.json").read_text())["configs"]
    assert len(configs) == 2
    for config in configs:
        words = shlex.split(config["command"])
        assert {"mlp_width=16", "modes_samples=100"} <= set(words)
        lr_default = REGISTRY.get("loss", config["loss"]).defaults.get("lr_g")
        assert ("lr_g=0.0001" in words) == (lr_default != 1e-4)  # wgan-gp's default already is 1e-4
        again = runner.invoke(cli, words[1:] + ["--out", str(tmp_path / config["loss"]), "--quiet"],
                              catch_exceptions=False)
        assert again.exit_code == 0, again.output
        assert sorted(expanded[-1]) == sorted(config["run_ids"])
    assert sorted(expanded[0]) == sorted(run_id for config in configs for run_id in config["run_ids"])


@pytest.fixture(scope="module")
def written_report(tmp_path_factory):
    """The hand-made benchmark's report, written once for the format tests: (out, report dir, terminal text)."""
    out = tmp_path_factory.mktemp("benchmark")
    make_benchmark(out)
    console = Console(record=True, width=250, file=open(os.devnull, "w"))
    report_dir = write_report([out], console, sort="fid")
    return out, report_dir, console.export_text()


def test_every_format_is_written_with_stable_names(written_report):
    out, report_dir, _ = written_report
    assert report_dir == out / "report"
    for name in ("report.md", "report.csv", "report.json", "report.tex", "report.html",
                 "plots/history_ring8.png", "plots/history_ring8.svg", "plots/final_ring8.png",
                 "plots/final_ring8.svg", "plots/throughput.png", "plots/throughput.svg"):
        assert (report_dir / name).stat().st_size > 0, name
    assert len(list((report_dir / "samples").glob("ring8-*.png"))) == 3

    data = json.loads((report_dir / "report.json").read_text())
    assert data["schema"] == SCHEMA
    assert set(data) >= {"schema", "generated", "ganbench_version", "sources", "sort", "confidence",
                         "significance", "hardware", "datasets", "configs", "plots", "notes"}
    assert data["datasets"]["ring8"]["primary_metric"] == "fid10k_test"
    best = data["configs"][0]
    assert set(best) >= {"config_id", "dataset", "label", "params", "versions", "seeds", "run_ids", "counts",
                         "metrics", "significance", "protocol", "hardware", "command", "wall_seconds"}
    assert best["significance"]["verdict"] == "best" and best["loss"] == "ns"
    assert set(best["metrics"]["fid10k_test"]) == {"direction", "kind", "n", "mean", "std", "ci95_low",
                                                   "ci95_high", "median", "best", "min", "max", "values", "seeds",
                                                   "not_meaningful"}
    assert best["metrics"]["fid10k_test"]["not_meaningful"] is None
    assert best["protocol"]["fid10k_test"]["generated_samples"] == "2500"
    assert data["hardware"]["source"].startswith("the machine")

    with open(report_dir / "report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    primary = [r for r in rows if r["primary"] == "True"]
    assert [r["verdict"] for r in primary] == ["best", "tied", "worse"]
    assert float(primary[0]["mean"]) == pytest.approx(11.0)

    markdown = (report_dir / "report.md").read_text()
    assert "## ring8: sorted by fid10k_test" in markdown and "**11.00 ± 1.00**" in markdown
    assert "![ring8: training history](plots/history_ring8.png)" in markdown
    assert "ganbench run --archs mlp --losses hinge" in markdown


def test_latex_table_is_booktabs_with_best_in_bold(written_report):
    latex = (written_report[1] / "report.tex").read_text()
    assert latex.count("\\begin{table}") == latex.count("\\end{table}") == 1
    assert latex.count("\\begin{tabular}") == latex.count("\\end{tabular}") == 1
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert latex.count(rule) == 1
    columns = len(re.search(r"\\begin\{tabular\}\{([lr]+)\}", latex).group(1))
    body = latex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()
    header = latex.split("\\toprule")[1].split("\\midrule")[0].strip()
    for line in [header, *body]:
        assert line.endswith("\\\\") and len(re.split(r"(?<!\\)&", line)) == columns, line
    assert "\\textbf{11.00 $\\pm$ 1.00}" in body[0] and "mlp/ns" in body[0]
    assert "$^\\dagger$" in body[1] and "fid10k\\_test" in latex
    assert latex.count("{") == latex.count("}")


def test_terminal_shows_the_compact_comparison_table(written_report):
    out, report_dir, text = written_report
    assert "ring8: sorted by fid10k_test" in text
    half = stats.t.ppf(0.975, 2) * stats.sem(FID["ns"])  # the mean ± half the 95% CI, from scipy
    row = next(line for line in text.splitlines() if line.startswith("mlp/ns "))
    assert row.split()[1:5] == ["3/3", f"{np.mean(FID['ns']):.2f}", "±", f"{half:.2f}"]
    assert "best" in row and f"{np.mean(THROUGHPUT['ns']):,.0f}" in row
    assert "worse p<0.001" in text and "tied p=0.29" in text
    assert f"{report_dir}/report.md" in text  # the full table, every metric and the commands are there


def test_direction_mapping_reads_the_column_names():
    assert direction_of("fid10k_inception").better == "lower"
    assert direction_of("kid10k_classifier").better == "lower"
    assert direction_of("kid10k_classifier_std").better == ""
    assert direction_of("is10k_inception").better == "higher"
    assert direction_of("modes_covered").better == "higher"
    assert direction_of("modes_high_quality_percent").better == "higher"
    assert direction_of("modes_reverse_kl").better == "lower"
    assert direction_of("images_per_second").better == "higher" and direction_of("images_per_second").kind == "cost"
    assert direction_of("peak_memory_mb").better == "lower"
    assert direction_of("something_new").better == ""


def test_a_directory_without_runs_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no runs/ directory"):
        write_report([tmp_path], quiet_console())


def test_report_command_merges_directories_into_the_chosen_output(tmp_path):
    from ganbench.cli import cli

    make_benchmark(tmp_path / "a", seeds=(0, 1))
    make_benchmark(tmp_path / "b", seeds=(2,))
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--sort", "modes",
                                      "-o", str(tmp_path / "merged")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert data["datasets"]["ring8"]["primary_metric"] == "modes_covered"
    assert [c["seeds"] for c in data["configs"]] == [[0, 1, 2]] * 3
    assert not (tmp_path / "a" / "report").exists()


def test_report_command_reports_a_bad_directory_in_one_line(tmp_path, capsys):
    from ganbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("ganbench: error:")


def test_hardware_comes_from_the_runs_when_they_recorded_it(tmp_path):
    protocol = {"images_per_second": {"metric": "throughput", "device_name": "NVIDIA H100 80GB HBM3"}}
    make_run(tmp_path, "ns", 0, {"images_per_second": 1.0}, protocol=protocol)
    make_run(tmp_path, "ns", 1, {"images_per_second": 1.0}, protocol=protocol)
    comparison = comparison_of(tmp_path)
    assert (comparison.hardware, comparison.hardware_source) == ("NVIDIA H100 80GB HBM3 (2 runs)",
                                                                 "recorded by the runs")
    bare = tmp_path / "bare"
    make_run(bare, "ns", 0, {"images_per_second": 1.0},
             protocol={"images_per_second": {"metric": "throughput", "device_name": "cuda:0"}})
    comparison = comparison_of(bare)
    assert comparison.hardware == "test machine" and "recorded none" in comparison.hardware_source


XEON_AMX = "Intel(R) Xeon(R) Processor, AVX512-BF16 + AMX (bf16 native), 2 torch threads"
XEON_AVX2 = "Intel(R) Xeon(R) Processor, AVX2 (bf16 not native), 1 torch thread"


def test_runs_on_different_hardware_are_counted_and_keyed_beside_their_throughput(tmp_path):
    """Each hardware with its runs; runs that recorded none (older) are counted apart and the
    report says which machine wrote it; every table names each config's hardware by key."""
    for seed, hardware in enumerate([XEON_AMX, XEON_AMX, XEON_AMX, None]):  # ns: three on AMX, one old run
        make_run(tmp_path, "ns", seed, {"images_per_second": 900.0 + seed},
                 protocol={"images_per_second": {"metric": "throughput"},
                           **({"training_hardware": hardware} if hardware else {})})
    for seed in (0, 1):
        make_run(tmp_path, "hinge", seed, {"images_per_second": 300.0},
                 protocol={"images_per_second": {"metric": "throughput"}, "training_hardware": XEON_AVX2})
    make_run(tmp_path, "lsgan", 0, status="pending")  # never trained: no hardware to record
    comparison = comparison_of(tmp_path)
    assert comparison.hardware == (f"H1 = {XEON_AMX} (3 runs); H2 = {XEON_AVX2} (2 runs); "
                                   f"? = 1 older run that recorded none (this report was written on test machine)")
    assert comparison.hardware_source == "recorded by 5 of 6 runs"

    from ganbench.report.table import dataset_table, legend
    from ganbench.report.terminal import compact_rows

    table = dataset_table(comparison, "ring8")
    assert table.headers[-1] == "hardware"
    keys = {config.label: row[-1].text for config, row in zip(table.configs, table.rows)}
    assert keys == {"mlp/ns": "H1, ?", "mlp/hinge": "H2", "mlp/lsgan": "–"}
    assert comparison.hardware in legend(comparison)  # under the table in report.md and report.html
    flags = {row[0]: row[-1] for row in compact_rows(comparison, "ring8")}
    assert flags["mlp/hinge"] == "on H2" and flags["mlp/ns"] == "on H1, ?"

    from ganbench.report.files import latex_table, write_markdown
    from ganbench.report.html import render_html

    markdown = write_markdown(comparison, [], tmp_path).read_text()
    assert f"Hardware: {comparison.hardware} (recorded by 5 of 6 runs)." in markdown
    assert "| wall s / run | hardware |" in markdown and comparison.hardware in markdown.split("## ring8")[1]
    assert "<th>hardware</th>" in render_html(comparison, [])
    from ganbench.report.files import report_json

    assert report_json(comparison, [], tmp_path)["hardware"] == {
        "description": comparison.hardware, "source": "recorded by 5 of 6 runs",
        "runs": {XEON_AMX: 3, XEON_AVX2: 2}, "unrecorded_runs": 1}
    assert "& Hardware \\\\" in latex_table(comparison, "ring8")


def test_runs_on_one_hardware_need_no_hardware_column(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, "ns", seed, {"images_per_second": 900.0},
                 protocol={"images_per_second": {"metric": "throughput"}, "training_hardware": XEON_AMX})
    comparison = comparison_of(tmp_path)
    assert (comparison.hardware, comparison.hardware_source) == (f"{XEON_AMX} (2 runs)", "recorded by the runs")
    from ganbench.report.table import dataset_table

    assert "hardware" not in dataset_table(comparison, "ring8").headers


def test_a_metric_undefined_for_some_seeds_says_how_many_it_averages(tmp_path):
    from ganbench.report.table import dataset_table

    for seed, value in enumerate([0.5, 0.7, math.nan]):  # reverse KL is NaN when no sample is near a mode
        make_run(tmp_path, "ns", seed, {"modes_covered": 8.0, "modes_reverse_kl": value})
    comparison = comparison_of(tmp_path)
    (config,) = comparison.configs
    assert config.metrics["modes_reverse_kl"].values == [0.5, 0.7]
    table = dataset_table(comparison, "ring8")
    column = table.headers.index("modes_reverse_kl ↓")
    assert table.rows[0][column].text == "0.6000 ± 0.1414 (n=2)"
