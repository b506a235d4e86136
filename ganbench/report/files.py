"""The report files: Markdown, CSV, JSON and LaTeX (the HTML page is in :mod:`ganbench.report.html`).

* ``report.csv``: one row per config and metric, columns :data:`CSV_COLUMNS` (stable).
* ``report.json``: everything, keys documented in ``docs/report.md`` (schema ``ganbench-report/1``).
* ``report.md``: the tables, plots, sample pictures, commands and protocol.
* ``report.tex``: one booktabs table per dataset, mean ± std, best in bold.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from ganbench.ledger.storage import atomic_write
from ganbench.report.aggregate import CONFIDENCE, Comparison, ConfigSummary, Summary
from ganbench.report.caveats import MARK
from ganbench.report.directions import direction_of
from ganbench.report.plots import Picture
from ganbench.report.search import markdown_section as search_markdown
from ganbench.report.search import search_json
from ganbench.report.significance import METHOD, TIED
from ganbench.report.table import (MISSING, best_means, dataset_table, hardware_keys, header_of, legend,
                                   mean_std, protocol_rows, settings_rows, versions_rows)

SCHEMA = "ganbench-report/1"
CSV_COLUMNS = ("dataset", "config_id", "config", "architecture", "loss", "split", "steps", "batch_size",
               "params", "seeds", "runs", "done", "diverged", "failed", "unfinished", "metric", "direction",
               "primary", "n", "mean", "std", "ci95_low", "ci95_high", "median", "best", "min", "max",
               "verdict", "p_value", "p_holm", "images_per_second_mean", "wall_seconds_mean", "command",
               "not_meaningful")
"""``not_meaningful``: empty, or why the metric says the row's figure describes nothing for some seeds."""


def _write_text(path: Path, text: str) -> Path:
    atomic_write(path, lambda handle: handle.write(text), binary=False)
    return path


def _finite(value: Any) -> Any:
    """NaN and infinities become None (JSON null, empty CSV cell)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_json(summary: Summary) -> dict[str, Any]:
    return {"direction": summary.direction.better or None, "kind": summary.direction.kind or None,
            "n": summary.n, "mean": _finite(summary.mean), "std": _finite(summary.std),
            "ci95_low": _finite(summary.ci_low), "ci95_high": _finite(summary.ci_high),
            "median": _finite(summary.median), "best": _finite(summary.best), "min": _finite(summary.minimum),
            "max": _finite(summary.maximum), "values": summary.values, "seeds": summary.seeds}


def _mark(config: ConfigSummary, column: str | None) -> str | None:
    """Why ``column``'s figure is not meaningful for ``config`` (see ganbench.report.caveats), or None."""
    mark = config.not_meaningful.get(column) if column else None
    return mark.describe() if mark else None


def config_json(config: ConfigSummary, primary: str | None, samples: dict[str, Picture],
                report_dir: Path) -> dict[str, Any]:
    spec = config.config
    verdict = config.verdict
    picture = samples.get(config.config_id)
    return {
        "config_id": config.config_id, "dataset": config.dataset, "label": config.label,
        "architecture": spec["architecture"], "loss": spec["loss"], "split": spec["split"],
        "steps": spec["steps"], "batch_size": spec["batch_size"], "params": spec.get("params", {}),
        "metrics_selected": list(spec.get("metrics", [])), "evaluation": spec.get("evaluation", {}),
        "versions": spec.get("versions", {}), "seeds": config.seeds, "run_ids": config.run_ids,
        "run_dirs": config.run_locations, "counts": config.counts,
        "wall_seconds": summary_json(config.wall_seconds),
        "metrics": {column: {**summary_json(s), "not_meaningful": _mark(config, column)}
                    for column, s in sorted(config.metrics.items())},
        "significance": {"metric": primary, "verdict": verdict.label if verdict else None,
                         "not_meaningful": _mark(config, primary),
                         "p_value": _finite(verdict.p_value) if verdict else None,
                         "p_holm": _finite(verdict.p_adjusted) if verdict else None,
                         "versus": verdict.versus if verdict else None},
        "protocol": config.protocol, "hardware": config.hardware, "command": config.command,
        "errors": config.errors,
        "sample_picture": os.path.relpath(picture.png, report_dir) if picture else None,
    }


def report_json(comparison: Comparison, pictures: list[Picture], report_dir: Path) -> dict[str, Any]:
    samples = {p.config_id: p for p in pictures if p.config_id}
    datasets = {}
    for dataset in comparison.datasets:
        primary = comparison.primary.get(dataset)
        best = comparison.best_config(dataset)
        datasets[dataset] = {"primary_metric": primary,
                             "direction": (direction_of(primary).better or None) if primary else None,
                             "best_config": best.config_id if best else None,
                             "best_config_not_meaningful": _mark(best, primary) if best else None,
                             "configs": [c.config_id for c in comparison.in_dataset(dataset)]}
    return {
        "schema": SCHEMA, "generated": comparison.generated, "ganbench_version": comparison.ganbench_version,
        "sources": [str(s) for s in comparison.sources], "sort": comparison.sort,
        "confidence": CONFIDENCE,
        "significance": {"method": METHOD, "alpha": comparison.alpha},
        "hardware": {"description": comparison.hardware, "source": comparison.hardware_source,
                     "runs": comparison.hardware_use.runs, "unrecorded_runs": comparison.hardware_use.unrecorded},
        "datasets": datasets,
        "configs": [config_json(c, comparison.primary.get(c.dataset), samples, report_dir)
                    for c in comparison.configs],
        "plots": [{"name": p.name, "title": p.title, "png": os.path.relpath(p.png, report_dir),
                   "svg": os.path.relpath(p.svg, report_dir) if p.svg else None} for p in pictures if not p.config_id],
        "notes": comparison.notes,
        "search": search_json(comparison, report_dir),  # a --budget search (ganbench.report.search), else null
    }


def write_json(comparison: Comparison, pictures: list[Picture], report_dir: Path) -> Path:
    data = report_json(comparison, pictures, report_dir)
    return _write_text(report_dir / "report.json", json.dumps(data, indent=2, allow_nan=False) + "\n")


def csv_rows(comparison: Comparison) -> list[dict[str, Any]]:
    rows = []
    for config in comparison.configs:
        primary = comparison.primary.get(config.dataset)
        spec = config.config
        throughput = config.metrics.get("images_per_second")
        base = {"dataset": config.dataset, "config_id": config.config_id, "config": config.label,
                "architecture": spec["architecture"], "loss": spec["loss"], "split": spec["split"],
                "steps": spec["steps"], "batch_size": spec["batch_size"],
                "params": json.dumps(spec.get("params", {}), sort_keys=True),
                "seeds": ",".join(str(s) for s in config.seeds), **config.counts,
                "images_per_second_mean": _finite(throughput.mean) if throughput else None,
                "wall_seconds_mean": _finite(config.wall_seconds.mean), "command": config.command}
        for column, summary in sorted(config.metrics.items(), key=lambda item: (item[0] != primary, item[0])):
            is_primary = column == primary
            verdict = config.verdict if is_primary else None
            rows.append({**base, "metric": column, "direction": summary.direction.better, "primary": is_primary,
                         "n": summary.n, "mean": _finite(summary.mean), "std": _finite(summary.std),
                         "ci95_low": _finite(summary.ci_low), "ci95_high": _finite(summary.ci_high),
                         "median": _finite(summary.median), "best": _finite(summary.best),
                         "min": _finite(summary.minimum), "max": _finite(summary.maximum),
                         "verdict": verdict.label if verdict else "",
                         "p_value": _finite(verdict.p_value) if verdict else None,
                         "p_holm": _finite(verdict.p_adjusted) if verdict else None,
                         "not_meaningful": _mark(config, column) or ""})
        if not config.metrics:  # still one row, so every config appears
            rows.append({**base, "metric": "", "primary": False, "n": 0})
    return rows


def write_csv(comparison: Comparison, report_dir: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(comparison):
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return _write_text(report_dir / "report.csv", buffer.getvalue())


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def overview_lines(comparison: Comparison) -> list[str]:
    """Where the runs came from, when, and on what (shared by Markdown and HTML)."""
    return [f"Generated {comparison.generated} by ganbench {comparison.ganbench_version} from "
            f"{', '.join(str(s) for s in comparison.sources)}.",
            f"Hardware: {comparison.hardware} ({comparison.hardware_source}).",
            f"Runs: {sum(c.counts['runs'] for c in comparison.configs)} in {len(comparison.configs)} configs; "
            f"{sum(c.counts['diverged'] for c in comparison.configs)} diverged, "
            f"{sum(c.counts['failed'] for c in comparison.configs)} failed, "
            f"{sum(c.counts['unfinished'] for c in comparison.configs)} unfinished."]


def write_markdown(comparison: Comparison, pictures: list[Picture], report_dir: Path) -> Path:
    out = ["# ganbench comparison report", "", *[f"{line}  " for line in overview_lines(comparison)], ""]
    for dataset in comparison.datasets:
        table = dataset_table(comparison, dataset)
        out += [f"## {table.title}", "",
                markdown_table(table.headers, [[f"**{c.text}**" if c.bold else c.text for c in row]
                                               for row in table.rows]), "", f"_{legend(comparison)}_", ""]
        if table.marks:
            out += [f"**{MARK.capitalize()}:**", "", *[f"- {_md(line)}" for line in table.marks], ""]
        for picture in pictures:
            if picture.dataset == dataset and not picture.config_id:
                out += [f"![{picture.title}]({os.path.relpath(picture.png, report_dir)})", "",
                        f"_{picture.caption}_", ""]
        samples = [p for p in pictures if p.dataset == dataset and p.config_id]
        if samples:
            out += [f"### {dataset}: samples", ""]
            out += [f"![{p.title}]({os.path.relpath(p.png, report_dir)}) _{p.title} ({p.caption})_  "
                    for p in samples]
            out.append("")
        out += [f"### {dataset}: reproduce", ""]
        for config in comparison.in_dataset(dataset):
            out += [f"{config.label}:", "", "```sh", config.command, "```", ""]
        out += search_markdown(comparison, dataset, report_dir)  # nothing unless the runs were a --budget search
    for picture in pictures:
        if not picture.dataset and not picture.config_id:
            out += [f"## {picture.title}", "", f"![{picture.title}]({os.path.relpath(picture.png, report_dir)})",
                    "", f"_{picture.caption}_", ""]
    out += ["## Protocol", "", markdown_table(["metric", "datasets", "protocol"],
                                              [list(row) for row in protocol_rows(comparison)]
                                              or [["(none recorded)", "", ""]]), "",
            markdown_table(["dataset", "config", "training settings and hyperparameters", "evaluation"],
                           [list(row) for row in settings_rows(comparison)]), "",
            markdown_table(["version", "used for"], [list(row) for row in versions_rows(comparison)]), ""]
    if comparison.notes:
        out += ["## Notes", "", *[f"- {note}" for note in comparison.notes], ""]
    return _write_text(report_dir / "report.md", "\n".join(out))


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(character, character) for character in str(text))


def _latex_cell(summary: Summary | None, finished: int, bold: bool, dagger: bool = False,
                flagged: bool = False) -> str:
    text = mean_std(summary, " $\\pm$ ", finished).replace(MISSING, "--")
    text = f"\\textbf{{{text}}}" if bold else text
    return text + ("$^\\dagger$" if dagger else "") + ("$^\\ast$" if flagged and summary and summary.n else "")


def latex_table(comparison: Comparison, dataset: str) -> str:
    table = dataset_table(comparison, dataset)
    configs, primary = table.configs, table.primary
    columns = comparison.table_columns(dataset)
    if "images_per_second" not in columns:
        columns = columns + ["images_per_second"]
    best = {column: best_means(configs, column) for column in columns}
    headers = ["Config", "Seeds"] + [latex_escape(header_of(c)).replace("↓", "$\\downarrow$")
                                     .replace("↑", "$\\uparrow$") for c in columns]
    keyed = comparison.hardware_use.keyed
    headers += ["Hardware"] if keyed else []
    lines = [f"% ganbench report: {latex_escape(dataset)}. Needs \\usepackage{{booktabs}}.",
             "\\begin{table}[t]", "\\centering",
             f"\\caption{{{latex_escape(dataset)}: mean $\\pm$ std over seeds. Best mean per column in bold"
             + (f"; $^\\dagger$: not significantly worse than the best on {latex_escape(primary)} "
                f"(Welch's t-test, one-sided, Holm-corrected, $\\alpha={comparison.alpha:g}$)" if primary else "")
             + (f"; $^\\ast$: {MARK} (report.md says why)" if table.marks else "")
             + (f". {latex_escape(comparison.hardware_use.legend())}" if keyed else "")
             + ".}",
             f"\\label{{tab:ganbench-{latex_escape(dataset)}}}",
             "\\begin{tabular}{l" + "r" * (len(headers) - 1) + "}", "\\toprule",
             " & ".join(headers) + " \\\\", "\\midrule"]
    for config in configs:
        cells = [latex_escape(config.label), f"{config.counts['done']}/{config.counts['runs']}"]
        for column in columns:
            summary = config.summary(column)
            if column == primary:
                bold = bool(config.verdict and config.verdict.label == "best")
            else:
                bold = (summary is not None and summary.n > 0 and best[column] is not None
                        and summary.mean == best[column] and len(configs) > 1)
            dagger = column == primary and bool(config.verdict and config.verdict.label == TIED)
            cells.append(_latex_cell(summary, config.counts["done"], bold, dagger, column in config.not_meaningful))
        if keyed:
            cells.append(latex_escape(hardware_keys(comparison, config) or "--"))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def write_latex(comparison: Comparison, report_dir: Path) -> Path:
    text = "\n".join(latex_table(comparison, dataset) for dataset in comparison.datasets)
    return _write_text(report_dir / "report.tex", text)

