"""scripts/eval_curves.py: one metric at every evaluated step of every run, as a Markdown table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_curves.py"


def test_the_table_has_a_row_per_run_and_a_column_per_evaluated_step(tmp_path):
    for run_id, pac, values in (("a", 1, {1000: 10.0, 2000: 55.5}), ("b", 2, {1000: 20.0})):
        folder = tmp_path / "runs" / run_id
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"architecture": "pacgan", "loss": "ns", "dataset": "ring8",
                                                        "seed": 0, "params": {"pac": pac}}))
        lines = [{"step": 500, "kind": "train", "d_loss": 1.0}]
        lines += [{"step": step, "kind": "eval", "modes_high_quality_percent": v} for step, v in values.items()]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "{torn")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()
    assert "| run | 1000 | 2000 |" in table
    assert "| pacgan/ns/ring8 pac=1 seed=0 | 10 | 55.5 |" in table
    assert "| pacgan/ns/ring8 pac=2 seed=0 | 20 | – |" in table


def test_a_reports_run_records_give_the_same_table_as_the_run_directories(tmp_path):
    from ganbench.ledger.records import write_run_records

    for run_id, values in (("a", {1000: 10.0, 2000: 55.5}), ("b", {1000: 20.0})):
        folder = tmp_path / "out" / "runs" / run_id
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"run_id": run_id, "architecture": "pacgan", "loss": "ns",
                                                        "dataset": "grid25", "seed": int(run_id == "b"),
                                                        "params": {"pac": 3}}))
        (folder / "metrics.jsonl").write_text("".join(
            json.dumps({"step": step, "kind": "eval", "modes_high_quality_percent": v}) + "\n"
            for step, v in values.items()))
    write_run_records(sorted((tmp_path / "out" / "runs").iterdir()), tmp_path / "runs.jsonl")
    tables = [subprocess.run([sys.executable, str(SCRIPT), str(source)], capture_output=True, text=True,
                             timeout=60).stdout for source in (tmp_path / "out", tmp_path / "runs.jsonl")]
    assert tables[0] == tables[1]
    assert "| pacgan/ns/grid25 pac=3 seed=1 | 20 | – |" in tables[1].splitlines()
