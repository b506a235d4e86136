"""Random search (``--budget``, ``--set 'lr=loguniform(...)'``), its two stages and its report section.

The draws and the best-so-far statistics are checked against independent computations:
the distributions with a Kolmogorov-Smirnov test, the bootstrap band against a plain loop
over the same orders and its mean against the exact expectation over random subsets. The
CLI and report tests replace training by a fake whose scores are a known function of the
learning rate (so the winners are known); one test trains for real, the issue's example
with fewer steps.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from math import comb
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import ganbench.execution.runner as runner_module
from ganbench.ledger.runs import run_directory, write_results
from ganbench.ledger.storage import read_json
from ganbench.planning.grid import GridSpec, load_grid_file
from ganbench.planning.search import draw_stream, parse_distribution, plan_runs
from ganbench.registry import get_registry
from ganbench.report.search import best_so_far

GANBENCH = Path(sys.executable).parent / "ganbench"
LR = "loguniform(1e-5,1e-3)"


def search_grid(budget: int, losses=("ns", "lsgan"), search_seed: int = 0, **sets) -> GridSpec:
    return GridSpec(archs=["mlp"], losses=list(losses), datasets=["ring8"], metrics=["none"], budget=budget,
                    search_seed=search_seed, sets={"lr": [LR], **sets})


# --- the draws ---------------------------------------------------------------------------

def test_budget_draws_distinct_learning_rates_in_range_and_the_same_ones_again():
    registry = get_registry()
    plan = plan_runs(search_grid(3), registry)
    assert len(plan.runs) == 6 and [d.run_id for d in plan.draws] == [r.run_id for r in plan.runs]
    for loss in ("ns", "lsgan"):
        rates = [r.params["lr_g"] for r in plan.runs if r.loss == loss]
        assert len(set(rates)) == 3 and all(1e-5 <= rate <= 1e-3 for rate in rates)
    assert all(r.params["lr_g"] == r.params["lr_d"] for r in plan.runs)  # lr sets both, as --set lr=X does
    assert len({r.params["lr_g"] for r in plan.runs}) == 6  # each cell has its own draws
    assert [r.run_id for r in plan_runs(search_grid(3), registry).runs] == [r.run_id for r in plan.runs]

    bigger = plan_runs(search_grid(5), registry)
    assert {r.run_id for r in plan.runs} < {r.run_id for r in bigger.runs}
    assert len(bigger.runs) == 10  # raising the budget from 3 to 5 adds exactly 2 settings per cell
    other_seed = plan_runs(search_grid(3, search_seed=1), registry)
    assert not {r.run_id for r in other_seed.runs} & {r.run_id for r in plan.runs}


def test_a_second_distribution_leaves_the_first_ones_draws_unchanged_and_grid_axes_cross_the_draws():
    registry = get_registry()
    alone = plan_runs(search_grid(4, losses=("ns",)), registry)
    both = plan_runs(search_grid(4, losses=("ns",), beta1=["uniform(0,0.9)"], n_critic=["1", "2"]), registry)
    assert len(both.runs) == 8  # 4 draws x the n_critic axis
    assert sorted({r.params["lr_g"] for r in both.runs}) == sorted(r.params["lr_g"] for r in alone.runs)
    assert all(0 <= r.params["beta1"] <= 0.9 for r in both.runs)
    assert {r.params["n_critic"] for r in both.runs} == {1, 2}


def test_integer_hyperparameters_get_whole_numbers_and_choice_picks_its_values():
    registry = get_registry()
    plan = plan_runs(GridSpec(archs=["mlp"], losses=["ns"], datasets=["ring8"], metrics=["none"], budget=30,
                              sets={"n_critic": ["uniform(1,3)"], "optimizer": ["choice(adam,rmsprop)"]}), registry)
    assert {type(r.params["n_critic"]) for r in plan.runs} == {int}
    assert {r.params["n_critic"] for r in plan.runs} == {1, 2, 3}
    assert {r.params["optimizer"] for r in plan.runs} == {"adam", "rmsprop"}
    assert len(plan.runs) == 6  # 30 draws of 3 x 2 combinations: equal draws are one run, trained once


@pytest.mark.parametrize("text, transform, low, high", [
    ("loguniform(1e-5,1e-3)", np.log10, -5.0, -3.0),
    ("uniform(0.1,0.9)", lambda x: x, 0.1, 0.9),
])
def test_continuous_draws_follow_their_distribution(text, transform, low, high):
    distribution = parse_distribution("lr", text)
    draws = np.array([distribution.draw(draw_stream(0, "mlp", "ns", "ring8", i, "lr"), "lr", 1.0)
                      for i in range(2000)])
    assert draws.min() >= float(distribution.arguments[0]) and draws.max() <= float(distribution.arguments[1])
    # Kolmogorov-Smirnov against the uniform law on [low, high] of the transformed draws (4 significant digits:
    # the rounding moves a draw by at most 0.05%, far below what the test resolves at n = 2000)
    assert stats.kstest(transform(draws), stats.uniform(low, high - low).cdf).pvalue > 1e-3


def test_integer_loguniform_favours_small_values_as_the_log_scale_does():
    distribution = parse_distribution("n_critic", "loguniform(1,7)")
    draws = [distribution.draw(draw_stream(3, "mlp", "ns", "ring8", i, "n_critic"), "n_critic", 1)
             for i in range(4000)]
    frequencies = np.bincount(draws, minlength=8)[1:] / len(draws)
    expected = [math.log((k + 1) / k) / math.log(8) for k in range(1, 8)]  # floor of exp(U(log 1, log 8))
    assert np.allclose(frequencies, expected, atol=0.025)


# --- the best-so-far curve and its band ----------------------------------------------------

def direct_best_so_far(scores, better, orders, rng, band=0.95):
    """The same statistics with plain loops: running best per order, then mean and quantiles per budget."""
    n = len(scores)
    permutations = rng.permuted(np.tile(np.arange(n), (orders, 1)), axis=1)
    worst = -math.inf if better == "higher" else math.inf
    columns = [[] for _ in range(n)]
    for order in permutations:
        best = worst
        for k, index in enumerate(order):
            value = scores[index]
            if not math.isnan(value) and (value > best if better == "higher" else value < best):
                best = value
            columns[k].append(best)
    means, lows, highs = [], [], []
    for column in columns:
        means.append(math.nan if any(math.isinf(v) for v in column) else sum(column) / len(column))
        ranked = sorted(column, key=lambda v: -v if better == "higher" else v)  # best first
        ends = [ranked[math.ceil(q * orders) - 1] for q in ((1 - band) / 2, (1 + band) / 2)]
        ends = [math.nan if math.isinf(v) else v for v in ends]
        if any(math.isnan(v) for v in ends):
            ends = [math.nan, math.nan]
        lows.append(min(ends) if not math.isnan(ends[0]) else math.nan)
        highs.append(max(ends) if not math.isnan(ends[0]) else math.nan)
    return np.array(means), np.array(lows), np.array(highs)


@pytest.mark.parametrize("better", ["lower", "higher"])
def test_bootstrap_band_equals_a_direct_computation_over_the_same_orders(better):
    scores = [31.0, 24.5, math.nan, 40.2, 24.5, 27.3, math.nan, 55.0]
    curve = best_so_far(scores, better, orders=400, rng=np.random.default_rng(7))
    mean, low, high = direct_best_so_far(scores, better, 400, np.random.default_rng(7))
    np.testing.assert_allclose(curve.mean, mean, equal_nan=True)
    np.testing.assert_allclose(curve.low, low, equal_nan=True)
    np.testing.assert_allclose(curve.high, high, equal_nan=True)
    assert list(curve.budgets) == list(range(1, 9))
    best = min if better == "lower" else max
    assert curve.mean[-1] == curve.low[-1] == curve.high[-1] == best(s for s in scores if not math.isnan(s))


def test_mean_best_so_far_matches_the_exact_expectation_over_random_subsets():
    # The best of the first k of a random order is the best of a random k-subset: the j-th best of
    # n values (1-based) is the best with probability C(n - j, k - 1) / C(n, k).
    scores = [5.0, 3.0, 9.0, 1.0, 7.0, 2.0, 8.0]
    n = len(scores)
    ranked = sorted(scores)
    exact = [sum(ranked[j - 1] * comb(n - j, k - 1) / comb(n, k) for j in range(1, n + 1)) for k in range(1, n + 1)]
    curve = best_so_far(scores, "lower", orders=20000, rng=np.random.default_rng(1))
    np.testing.assert_allclose(curve.mean, exact, atol=0.05)
    # one diverged setting (NaN): budget 1 is unreached in some orders, from budget 2 on the exact mean holds
    curve = best_so_far(scores + [math.nan], "lower", orders=20000, rng=np.random.default_rng(2))
    ranked, n = sorted(scores), n + 1
    exact = [sum(ranked[j - 1] * comb(n - j, k - 1) / comb(n, k) for j in range(1, n)) for k in range(2, n + 1)]
    assert math.isnan(curve.mean[0])
    np.testing.assert_allclose(curve.mean[1:], exact, atol=0.05)


# --- bad input --------------------------------------------------------------------------------

def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganbench: error: "), err
    return lines[0]


@pytest.mark.parametrize("args, named", [
    (["--budget", "3", "--set", "lr=loguniform(1e-3,1e-5)"], "loguniform(1e-05,0.001)"),
    (["--budget", "3", "--set", "lr=loguniform(0,1e-3)"], "above 0"),
    (["--budget", "3", "--set", "lr=logunifrom(1e-5,1e-3)"], "did you mean loguniform"),
    (["--budget", "3", "--set", "lr=uniform(1e-5)"], "two bounds"),
    (["--budget", "3", "--set", "lr=uniform(a,b)"], "not a number"),
    (["--budget", "3", "--set", "lr=choice()"], "at least one value"),
    (["--budget", "3", "--set", "n_critic=uniform(1.5,4)"], "whole numbers"),
    (["--budget", "3", "--set", "optimizer=uniform(1,2)"], "choice("),
    (["--budget", "3", "--set", "nosuch=uniform(1,2)"], "not a training hyperparameter"),
    (["--budget", "3", "--set", "modes_samples=uniform(100,200)"], "not a training hyperparameter"),
    (["--set", "lr=loguniform(1e-5,1e-3)"], "add --budget N"),
    (["--budget", "3"], "no --set gives one"),
    (["--budget", "-1", "--set", "lr=loguniform(1e-5,1e-3)"], "--budget -1"),
    (["--winner-seeds", "3"], "add --budget N"),
])
def test_a_bad_search_is_one_line_naming_the_fix_with_exit_code_2(run_cli, tmp_path, args, named):
    code, _, err = run_cli("run", "--archs", "mlp", "--losses", "ns", "--datasets", "ring8", "--metrics", "modes",
                           "--out", "X", *args)
    assert named in one_line_error(code, err)
    assert not (tmp_path / "X").exists(), "nothing is written for a bad search"


def test_a_bad_distribution_from_the_console_script_is_one_line_and_exit_2(tmp_path, cache_dir):
    result = subprocess.run([str(GANBENCH), "run", "--archs", "mlp", "--datasets", "ring8", "--budget", "2",
                             "--set", "lr=loguniform(1e-3,1e-5)"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert "low bound must be below the high one" in one_line_error(result.returncode, result.stderr)


def test_a_grid_file_searches_like_the_flags(tmp_path):
    path = tmp_path / "search.toml"
    path.write_text('archs = ["mlp"]\nlosses = ["ns", "lsgan"]\ndatasets = ["ring8"]\nmetrics = ["none"]\n'
                    f'budget = 3\nsearch_seed = 0\n\n[set]\nlr = "{LR}"\n')
    registry = get_registry()
    from_file = plan_runs(load_grid_file(path), registry)
    assert [r.run_id for r in from_file.runs] == [r.run_id for r in plan_runs(search_grid(3), registry).runs]


# --- the CLI's two stages and the report, with a fake trainer ---------------------------------

def fake_score(spec) -> float | None:
    """modes_covered as a known function of the learning rate; None: diverged (lr above 4e-4)."""
    lr = spec.params["lr_g"]
    if lr > 4e-4:
        return None
    return 8.0 - 2.0 * abs(math.log10(lr) + 4.0) + (0.25 if spec.loss == "ns" else 0.0) + 0.01 * spec.seed


@pytest.fixture
def fake_training(monkeypatch):
    """``run_grid`` replaced by one that writes each run's ledger with :func:`fake_score`; returns the specs seen."""
    trained = []

    def fake_run_grid(specs, registry, options, console):
        summary = runner_module.GridSummary()
        for spec in specs:
            directory = run_directory(options.out, spec)
            if directory.status()["status"] in ("done", "diverged"):
                summary.skipped += 1
            else:
                trained.append(spec)
                score = fake_score(spec)
                if score is None:
                    directory.write_status("diverged", step=7, wall_seconds=0.5, error="loss is nan at step 7")
                else:
                    directory.write_status("done", step=spec.steps, wall_seconds=1.0,
                                           metrics={"modes_covered": score, "images_per_second": 1000.0})
            summary.statuses[spec.run_id] = directory.status()["status"]
        write_results(options.out)
        return summary

    monkeypatch.setattr(runner_module, "run_grid", fake_run_grid)
    return trained


def test_winners_are_rerun_with_new_seeds_and_the_report_shows_curve_winners_and_divergence(
        run_cli, tmp_path, fake_training):
    command = ["run", "--archs", "mlp", "--losses", "ns,lsgan", "--datasets", "ring8", "--steps", "100",
               "--metrics", "modes", "--set", f"lr={LR}", "--out", "X", "--quiet"]
    code, out, err = run_cli(*command, "--budget", "6", "--winner-seeds", "3")
    assert code in (0, 1), out + err  # 1: some settings diverged, as the fake intends
    search_runs = fake_training[:12]
    assert len(fake_training) == 12 + 2 * 3
    # the winners, computed here from the fake's known scores
    winners = {}
    for loss in ("ns", "lsgan"):
        scored = [r for r in search_runs if r.loss == loss and fake_score(r) is not None]
        winners[loss] = max(scored, key=fake_score)
    second = fake_training[12:]
    assert sorted((r.loss, r.seed) for r in second) == sorted((loss, s) for loss in winners for s in (1, 2, 3))
    for run in second:
        assert run.params == winners[run.loss].params and run.steps == 100

    report = read_json(tmp_path / "X" / "report" / "report.json")
    cells = {cell["label"]: cell for cell in report["search"]}
    assert set(cells) == {"mlp/ns", "mlp/lsgan"}
    for loss, winner in winners.items():
        cell = cells[f"mlp/{loss}"]
        assert cell["metric"] == "modes_covered" and cell["distributions"] == {"lr": "loguniform(1e-05,0.001)"}
        assert cell["winner"]["values"] == {"lr": winner.params["lr_g"]}
        assert cell["winner"]["search_score"] == pytest.approx(fake_score(winner))
        assert cell["winner"]["second_stage_seeds"] == [1, 2, 3]
        rerun = [fake_score(r) for r in second if r.loss == loss]
        assert cell["winner"]["second_stage"]["mean"] == pytest.approx(np.mean(rerun))
        assert cell["winner"]["second_stage"]["values"] == pytest.approx(rerun)
        scores = [fake_score(r) for r in search_runs if r.loss == loss]
        assert [s["score"] is None for s in cell["settings"]] == [score is None for score in scores]
        assert [s["score"] for s in cell["settings"] if s["score"] is not None] == pytest.approx(
            [score for score in scores if score is not None])
        curve = best_so_far([math.nan if s is None else s for s in scores], "higher")
        assert cell["best_so_far"]["mean"] == pytest.approx([None if math.isnan(v) else v for v in curve.mean])
        assert cell["best_so_far"]["mean"][-1] == pytest.approx(fake_score(winner))
        diverged = sum(score is None for score in scores)
        assert sum(s["counts"]["diverged"] for s in cell["settings"]) == diverged
    best = max(cells.values(), key=lambda c: c["winner"]["second_stage"]["mean"])
    other = min(cells.values(), key=lambda c: c["winner"]["second_stage"]["mean"])
    assert best["winner"]["verdict"] == "best" and other["winner"]["verdict"] in ("worse", "tied")

    markdown = (tmp_path / "X" / "report" / "report.md").read_text()
    assert "### ring8: tuning budget (random search)" in markdown
    assert "![ring8: best modes_covered against the budget](plots/best_so_far_ring8.png)" in markdown
    assert (tmp_path / "X" / "report" / "plots" / "best_so_far_ring8.png").stat().st_size > 0
    assert "#### ring8: tuned winners" in markdown and "#### ring8: divergence per setting" in markdown
    ns_row = next(line for line in markdown.splitlines() if line.startswith("| mlp/ns | "))
    assert f"lr={winners['ns'].params['lr_g']:g}" in ns_row and "| 1,2,3 |" in ns_row
    assert cells["mlp/ns"]["winner"]["verdict"] in ns_row
    assert cells["mlp/ns"]["winner"]["command"] in markdown
    assert "--seeds 1,2,3" in cells["mlp/ns"]["winner"]["command"]
    html = (tmp_path / "X" / "report" / "report.html").read_text()
    assert 'id="search-ring8"' in html and "tuned winners" in html and "divergence per setting" in html
    assert html.count("data:image/png;base64,") >= 2

    # the same command again trains nothing; a larger budget only its new settings
    trained = len(fake_training)
    code, out, err = run_cli(*command, "--budget", "6", "--winner-seeds", "3")
    assert len(fake_training) == trained
    code, out, err = run_cli(*command, "--budget", "8")
    assert sorted(r.loss for r in fake_training[trained:]) == ["lsgan", "lsgan", "ns", "ns"]
    assert all(r.seed == 0 for r in fake_training[trained:])
    draws = read_json(tmp_path / "X" / "search.json")["runs"]  # kept across the commands, one record per draw
    assert sorted((d["loss"], d["draw"]) for d in draws.values()) == sorted(
        (loss, i) for loss in ("ns", "lsgan") for i in range(8))
    assert {d["search_seed"] for d in draws.values()} == {0} and {d["seed"] for d in draws.values()} == {0}


def test_a_search_without_second_stage_prints_the_command_that_runs_it(run_cli, tmp_path, fake_training):
    code, out, err = run_cli("run", "--archs", "mlp", "--losses", "ns", "--datasets", "ring8", "--steps", "50",
                             "--metrics", "modes", "--set", "lr=loguniform(1e-5,3e-4)", "--budget", "3",
                             "--out", "X", "--quiet")
    assert code == 0, out + err
    cell, = read_json(tmp_path / "X" / "report" / "report.json")["search"]
    assert cell["winner"]["second_stage_seeds"] == [] and cell["winner"]["second_stage"]["n"] == 0
    command = cell["winner"]["command"]
    assert "--seeds 1,2,3,4,5" in command and "--steps 50" in command
    markdown = (tmp_path / "X" / "report" / "report.md").read_text()
    assert "to re-run it with 5 new seeds" in markdown and command in markdown
    # the printed command trains exactly the winner's setting with the new seeds
    fake_training.clear()
    code, out, err = run_cli(*command.split()[1:], "--out", "X", "--quiet")
    assert code == 0, out + err
    assert sorted(r.seed for r in fake_training) == [1, 2, 3, 4, 5]
    winner_lr = cell["winner"]["values"]["lr"]
    assert {r.params["lr_g"] for r in fake_training} == {winner_lr}
    cell, = read_json(tmp_path / "X" / "report" / "report.json")["search"]
    assert cell["winner"]["second_stage_seeds"] == [1, 2, 3, 4, 5]


# --- real training: the example, smaller ----------------------------------------------

def test_real_search_trains_distinct_rates_in_range_and_reports_them(run_cli, tmp_path):
    # Real training, once (the fake-trainer tests above cover re-runs and a growing budget).
    code, out, err = run_cli("run", "--archs", "mlp", "--losses", "ns,lsgan", "--datasets", "ring8", "--set", f"lr={LR}",
                             "--steps", "20", "--batch-size", "64", "--metrics", "modes", "--set", "modes_samples=200",
                             "--budget", "2", "--out", "X", "--quiet", "--workers", "2")
    assert code == 0, out + err
    configs = [read_json(path) for path in (tmp_path / "X" / "runs").glob("*/config.json")]
    assert len(configs) == 4 and all(c["steps"] == 20 for c in configs)
    rates = [c["params"]["lr_g"] for c in configs]
    assert len(set(rates)) == 4 and all(1e-5 <= rate <= 1e-3 for rate in rates)
    assert all(c["params"]["lr_d"] == c["params"]["lr_g"] for c in configs)
    expected = {r.run_id: r.params["lr_g"] for r in plan_runs(
        GridSpec(archs=["mlp"], losses=["ns", "lsgan"], datasets=["ring8"], metrics=["modes"], steps=20,
                 batch_size=64, budget=2, sets={"lr": [LR], "modes_samples": ["200"]}), get_registry()).runs}
    assert {c["run_id"]: c["params"]["lr_g"] for c in configs} == expected  # what was planned is what trained
    assert set(read_json(tmp_path / "X" / "search.json")["runs"]) == set(expected)
    cells = read_json(tmp_path / "X" / "report" / "report.json")["search"]
    assert sorted(cell["label"] for cell in cells) == ["mlp/lsgan", "mlp/ns"]
    assert all(len(cell["settings"]) == 2 and len(cell["best_so_far"]["mean"]) == 2 for cell in cells)


def test_an_unfinished_setting_is_left_out_of_the_curve_until_it_ends(run_cli, tmp_path, fake_training):
    code, out, err = run_cli("run", "--archs", "mlp", "--losses", "ns", "--datasets", "ring8", "--steps", "50",
                             "--metrics", "modes", "--set", "lr=loguniform(1e-5,3e-4)", "--budget", "4",
                             "--out", "X", "--quiet")
    assert code == 0, out + err
    worst = min(fake_training, key=fake_score)
    status = tmp_path / "X" / "runs" / worst.run_id / "status.json"
    status.write_text(json.dumps({"status": "interrupted", "step": 10}))
    code, out, err = run_cli("report", "X")
    assert code == 0, out + err
    cell, = read_json(tmp_path / "X" / "report" / "report.json")["search"]
    scores = sorted(fake_score(r) for r in fake_training if r is not worst)
    assert len(cell["best_so_far"]["mean"]) == 3 and cell["best_so_far"]["mean"][-1] == pytest.approx(scores[-1])
    assert [s["score"] for s in cell["settings"]].count(None) == 1
    assert "| mlp/ns | 3/3 (1 unfinished) | 0/4 |" in (tmp_path / "X" / "report" / "report.md").read_text()
