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
