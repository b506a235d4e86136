"""Print a Markdown table of one metric at every evaluation of each run in OUT (from --eval-every).

    python scripts/eval_curves.py OUT [--column modes_high_quality_percent] [--every 2000]
    python scripts/eval_curves.py results/pacgan-table1/runs.jsonl      # a report's run records

One row per run (its label and hyperparameters that differ between runs), one column per
evaluated step. Use it to see where a figure stops changing before choosing a preset's length.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def histories(out: Path):
    """``(config, history lines)`` of each run in OUT/runs, or in a report's runs.jsonl."""
    if out.is_file():
        from ganbench.ledger.records import read_run_records

        for record in read_run_records(out):
            yield record["config"], record["history"]
        return
    for config_file in sorted((out / "runs").glob("*/config.json")):
        history, metrics = [], config_file.parent / "metrics.jsonl"
        for line in (metrics.read_text() if metrics.exists() else "").splitlines():  # none yet: a run just begun
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        yield json.loads(config_file.read_text()), history


def curves(out: Path, column: str) -> list[tuple[str, dict[int, float]]]:
    rows = []
    for config, history in histories(out):
        values = {}
        for record in history:
            if record.get("kind") in ("eval", "rescore") and record.get(column) is not None:
                values[int(record["step"])] = float(record[column])
        label = (f"{config['architecture']}/{config['loss']}/{config['dataset']} pac={config['params'].get('pac', 1)} "
                 f"seed={config['seed']}")
        rows.append((label, values))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--column", default="modes_high_quality_percent")
    parser.add_argument("--every", type=int, default=0, help="only steps that are multiples of this")
    arguments = parser.parse_args()
    rows = curves(arguments.out, arguments.column)
    steps = sorted({step for _, values in rows for step in values
                    if not arguments.every or step % arguments.every == 0})
    print(f"{arguments.column} at each evaluated step\n")
    print("| run | " + " | ".join(str(step) for step in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for label, values in sorted(rows):
        cells = [f"{values[step]:.4g}" if step in values and math.isfinite(values[step]) else "–" for step in steps]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
