"""scripts/fastpath_equivalence.py: its statistics, and a tiny run of it through the real CLI."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fastpath_equivalence.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("fastpath_equivalence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_welch_interval_and_p_value_match_the_textbook(script):
    off, on = np.array([510.0, 540.0, 498.0, 530.0, 521.0]), np.array([500.0, 560.0, 505.0, 551.0, 532.0, 515.0])
    difference, low, high, p = script.welch(off, on)
    var_off, var_on = off.var(ddof=1) / len(off), on.var(ddof=1) / len(on)
    dof = (var_off + var_on) ** 2 / (var_off ** 2 / (len(off) - 1) + var_on ** 2 / (len(on) - 1))
    half = stats.t.ppf(0.975, dof) * math.sqrt(var_off + var_on)
    assert difference == pytest.approx(on.mean() - off.mean())
    assert (low, high) == pytest.approx((difference - half, difference + half))
    assert p == pytest.approx(stats.ttest_ind(on, off, equal_var=False).pvalue)
    # no spread anywhere: equal means tie, different means differ; one seed: no test
    assert script.welch(np.array([8.0, 8.0]), np.array([8.0, 8.0])) == (0.0, 0.0, 0.0, 1.0)
    assert script.welch(np.array([8.0, 8.0]), np.array([7.0, 7.0]))[3] == 0.0
    assert math.isnan(script.welch(np.array([8.0]), np.array([7.0, 8.0]))[3])


def _results(config: str, fids: list[float], covered: list[float]) -> pd.DataFrame:
    rows = [{"benchmark": "dcgan-mnist", "dataset": "mnist", "architecture": "dcgan", "loss": "ns", "steps": 300,
             "batch_size": 64, "status": "done", "seed": seed, "fid10k_classifier": fid, "config": config}
            for seed, fid in enumerate(fids)]
    rows += [{"benchmark": "mlp-2d", "dataset": "ring8", "architecture": "mlp", "loss": "ns", "steps": 2000,
              "batch_size": 256, "status": "done", "seed": seed, "modes_covered": value, "config": config}
             for seed, value in enumerate(covered)]
    return pd.DataFrame(rows)


def test_comparison_rows_and_verdicts(script):
    results = pd.concat([_results("off", [500.0, 520.0, 510.0], [8.0, 7.0, 8.0]),
                         _results("on", [505.0, 515.0, 512.0], [8.0, 7.0, 8.0]),
                         _results("bf16", [900.0, 910.0, 905.0], [8.0, 7.0, 8.0])], ignore_index=True)
    comparison = script.compare(results)
    assert list(zip(comparison["benchmark"], comparison["metric"], comparison["config"])) == [
        ("dcgan-mnist", "fid10k_classifier", "on"), ("dcgan-mnist", "fid10k_classifier", "bf16"),
        ("mlp-2d", "modes_covered", "on"), ("mlp-2d", "modes_covered", "bf16")]
    verdicts = dict(zip(comparison["benchmark"] + "/" + comparison["config"], comparison["verdict"]))
    assert verdicts["dcgan-mnist/on"] == "indistinguishable at alpha 0.05"
    assert verdicts["dcgan-mnist/bf16"] == "different"
    assert verdicts["mlp-2d/on"] == "indistinguishable at alpha 0.05"
    modes = comparison[comparison["metric"] == "modes_covered"].iloc[0]
    assert (modes["same_per_seed"], modes["paired_seeds"], modes["p_welch"]) == (3, 3, 1.0)
    table = script.markdown(comparison, results)
    assert "**dcgan-mnist — mnist — `fid10k_classifier`**" in table
    assert "| bf16 | 3, 3 | 510.0 ± 10.00 | 905.0 ± 5.00 | 395.0 [" in table


def test_quick_run_through_the_cli_writes_the_tables(tmp_path):
    """The whole script on a tiny grid (mlp on ring8, 2 seeds, 5 steps, off vs on): ~20 s on 2 cores."""
    out = tmp_path / "out"
    completed = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only", "mlp-2d", "--parallel", "2",
                                "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    comparison = pd.read_csv(out / "comparison.csv")
    rows = comparison[comparison["metric"].isin(["modes_covered", "modes_high_quality_percent"])]
    assert sorted(zip(rows["dataset"], rows["metric"], rows["config"])) == [
        ("ring8", "modes_covered", "on"), ("ring8", "modes_high_quality_percent", "on")]
    numbers = rows[["mean_baseline", "mean_config", "sd_baseline", "sd_config", "difference", "ci95_low",
                    "ci95_high", "p_welch"]].to_numpy(dtype=float)
    assert np.isfinite(numbers).all()
    assert (rows["n_baseline"] == 2).all() and (rows["n_config"] == 2).all()
    # on the CPU "on" differs from "off" only in the optimiser kernels for an mlp: the same numbers
    assert (rows["same_per_seed"] == 2).all()
    assert set(rows["verdict"]) == {"indistinguishable at alpha 0.05"}
    tables = (out / "tables.md").read_text()
    assert "**mlp-2d — ring8 — `modes_covered`**" in tables and "| on | 2, 2 |" in tables
    assert len(pd.read_csv(out / "mlp-2d" / "off" / "results.csv")) == 2
