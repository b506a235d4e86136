"""Honest flags: mode coverage from samples that mostly lie off the modes is marked "not meaningful".

The figures are computed here by the ``modes`` metric's own ``mode_statistics`` from samples
drawn in the test: a good generator (samples of the mixture itself), one collapsed onto 6 of
the 8 modes (good samples, fewer modes) and a blurred one (every mode's centre plus noise 12
times the mode's std: it touches all 8 modes with a few stray points). The blurred one has the
most modes covered, so it ranks first; it must carry the mark wherever it is called best, and
the good ones must carry none.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re

import pytest
import torch
from rich.console import Console

from ganbench.registry import get_registry
from ganbench.report import write_report
from ganbench_plugins.metrics import mode_statistics
from test_report import make_run

REGISTRY = get_registry()
MODES = torch.tensor([[2 * math.cos(2 * math.pi * k / 8), 2 * math.sin(2 * math.pi * k / 8)] for k in range(8)])
STD = 0.02


def samples(kind: str, seed: int, count: int = 2500) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    modes = MODES[:6] if kind == "collapsed" else MODES
    centres = modes[torch.randint(len(modes), (count,), generator=rng)]
    spread = 12 * STD if kind == "blurred" else STD
    return centres + spread * torch.randn(count, 2, generator=rng)


def figures(kind: str, seed: int) -> dict[str, float]:
    covered, percent, reverse_kl = mode_statistics(samples(kind, seed), MODES, STD, 3.0)
    return {"modes_covered": covered, "modes_high_quality_percent": percent, "modes_reverse_kl": reverse_kl,
            "images_per_second": 1000.0 + seed}


LOSSES = {"blurred": "lsgan", "good": "ns", "collapsed": "hinge"}


@pytest.fixture(scope="module")
def flagged_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("flags")
    measured = {}
    for kind, loss in LOSSES.items():
        for seed in (0, 1, 2):
            measured[kind, seed] = figures(kind, seed)
            make_run(out, loss, seed, measured[kind, seed], picture=False)
    console = Console(record=True, width=80, file=open(os.devnull, "w"))
    report_dir = write_report([out], console, sort="modes_covered", registry=REGISTRY)
    return measured, report_dir, console.export_text()


def test_the_generators_are_what_the_test_says(flagged_report):
    measured = flagged_report[0]
    for seed in (0, 1, 2):
        assert measured["blurred", seed]["modes_covered"] == 8 and measured["blurred", seed][
            "modes_high_quality_percent"] < 10
        assert measured["good", seed]["modes_covered"] == 8 and measured["good", seed][
            "modes_high_quality_percent"] > 95
        assert measured["collapsed", seed]["modes_covered"] == 6 and measured["collapsed", seed][
            "modes_high_quality_percent"] > 95


def test_the_modes_metric_marks_coverage_below_half_high_quality_samples():
    modes = REGISTRY.get("metric", "modes")
    blurred, good = figures("blurred", 0), figures("good", 0)
    assert set(modes.not_meaningful(blurred)) == {"modes_covered", "modes_reverse_kl"}
    assert f"{blurred['modes_high_quality_percent']:.1f}%" in modes.not_meaningful(blurred)["modes_covered"]
    assert modes.not_meaningful(good) == {}
    assert modes.not_meaningful({**good, "modes_high_quality_percent": 49.9}) != {}
    assert modes.not_meaningful({**good, "modes_high_quality_percent": 50.0}) == {}


def test_terminal_flags_the_blurred_generator_and_not_the_good_ones(flagged_report):
    text = flagged_report[2]
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("mlp/")}
    assert "best" in rows["mlp/lsgan"] and rows["mlp/lsgan"].rstrip().endswith("n/m")
    assert "n/m" not in rows["mlp/ns"] and "n/m" not in rows["mlp/hinge"]
    assert "n/m = not meaningful: mlp/lsgan: modes_covered: only" in text
    assert "mlp/ns: modes_covered" not in text


def test_markdown_html_and_latex_mark_the_blurred_best(flagged_report):
    report_dir = flagged_report[1]
    markdown = (report_dir / "report.md").read_text()
    row = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| mlp/")}
    assert "(not meaningful)" in row["mlp/lsgan"] and "best (not meaningful)" in row["mlp/lsgan"]
    assert "not meaningful" not in row["mlp/ns"] and "not meaningful" not in row["mlp/hinge"]
    assert "- mlp/lsgan: modes_covered is not meaningful for 3 of 3 seeds" in markdown
    html = (report_dir / "report.html").read_text()
    html_rows = re.findall(r"<tr.*?</tr>", html, flags=re.S)
    best_row = next(r for r in html_rows if "mlp/lsgan" in r and "verdict-best" in r)
    assert "best (not meaningful)" in best_row
    assert not any("not meaningful" in r for r in html_rows if "mlp/ns" in r or "mlp/hinge" in r)
    latex = (report_dir / "report.tex").read_text()
    assert next(line for line in latex.splitlines() if line.startswith("mlp/lsgan")).count("$^\\ast$") >= 1
    assert "$^\\ast$" not in next(line for line in latex.splitlines() if line.startswith("mlp/ns"))


def test_csv_and_json_carry_the_mark_as_a_field(flagged_report):
    report_dir = flagged_report[1]
    with open(report_dir / "report.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["metric"] == "modes_covered"]
    marks = {r["config"]: r["not_meaningful"] for r in rows}
    assert marks["mlp/lsgan"].startswith("modes_covered is not meaningful for 3 of 3 seeds")
    assert marks["mlp/ns"] == marks["mlp/hinge"] == ""
    data = json.loads((report_dir / "report.json").read_text())
    configs = {c["label"]: c for c in data["configs"]}
    best = data["datasets"]["ring8"]
    assert configs["mlp/lsgan"]["config_id"] == best["best_config"]
    assert best["best_config_not_meaningful"].startswith("modes_covered is not meaningful")
    assert configs["mlp/lsgan"]["significance"]["not_meaningful"] is not None
    assert configs["mlp/lsgan"]["metrics"]["modes_reverse_kl"]["not_meaningful"] is not None
    for label in ("mlp/ns", "mlp/hinge"):
        assert configs[label]["significance"]["not_meaningful"] is None
        assert all(m["not_meaningful"] is None for m in configs[label]["metrics"].values())


def test_a_metric_plugin_declares_its_own_marks_and_a_broken_one_is_a_note(tmp_path, registry_with):
    from ganbench import Metric
    from ganbench.api import MetricResult
    from ganbench.report.aggregate import aggregate
    from ganbench.report.runs import load_runs

    class Sharpness(Metric):
        name = "sharpness"
        description = "a plugin metric whose figure means nothing below 0.5"

        def evaluate(self, context):
            return MetricResult({"sharpness_score": 1.0})

        def not_meaningful(self, values):
            return {"sharpness_score": "too blurry"} if values.get("sharpness_score", 1.0) < 0.5 else {}

    class Broken(Metric):
        name = "broken-judge"
        description = "raises when asked"

        def evaluate(self, context):
            return MetricResult({})

        def not_meaningful(self, values):
            raise RuntimeError("oops")

    registry = registry_with(("metric", Sharpness()), ("metric", Broken()))
    make_run(tmp_path, "ns", 0, {"sharpness_score": 0.2}, picture=False)
    make_run(tmp_path, "lsgan", 0, {"sharpness_score": 0.9}, picture=False)
    comparison = aggregate(load_runs([tmp_path]), registry=registry)
    marks = {c.config["loss"]: c.not_meaningful for c in comparison.configs}
    assert marks["ns"]["sharpness_score"].reasons == {0: "too blurry"} and marks["lsgan"] == {}
    assert any("broken-judge" in note and "oops" in note for note in comparison.notes)
