"""``ganbench report OUT [OUT2 ...]`` and :func:`write_report`, which ``ganbench run`` calls at its end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import click
from rich.console import Console

from ganbench.errors import UserError
from ganbench.report.significance import ALPHA


def _hardware_here() -> str:
    from ganbench.execution.devices import resolve_device
    from ganbench.training.hardware import device_description

    return device_description(resolve_device("auto"))


def _registry(disabled: Sequence[str] = ()):
    """The installed plugins, to leave their defaults out of the commands; None if they cannot load."""
    try:
        from ganbench.registry import get_registry

        return get_registry(tuple(disabled))
    except Exception:  # the report must not depend on every plugin importing
        return None


def write_report(out_dirs: Sequence[str | Path], console: Console, sort: str | None = None, *,
                 report_dir: str | Path | None = None, alpha: float = ALPHA, registry=None) -> Path:
    """Compare the runs of ``out_dirs``, print the tables to ``console`` and write every file.

    ``out_dirs`` are output directories of ``ganbench run`` or ``runs.jsonl`` files of run
    records (:mod:`ganbench.ledger.records`). Files go to ``report_dir`` (default
    ``<first out dir>/report``): report.md, .csv, .json, .tex, .html, plots/ (PNG and SVG),
    samples/ and runs.jsonl (the records of every run compared). ``sort`` is the primary metric
    (a column name or its prefix, e.g. ``fid``); by default each dataset's first of fid,
    kid, is, modes_covered... Return the report directory.
    """
    from ganbench.ledger.records import RECORDS_FILE, write_run_records
    from ganbench.report.aggregate import aggregate
    from ganbench.report.files import write_csv, write_json, write_latex, write_markdown
    from ganbench.report.html import write_html
    from ganbench.report.plots import write_plots
    from ganbench.report.runs import load_runs
    from ganbench.report.terminal import print_report

    if not 0 < alpha < 1:
        raise UserError(f"--alpha {alpha}: give a significance level between 0 and 1, like 0.05.")
    out_dirs = [Path(out) for out in out_dirs]
    if report_dir is None and out_dirs and out_dirs[0].is_file():
        raise UserError(f"{out_dirs[0]} is a file of run records: say where the report goes with -o DIR.")
    runs = load_runs(out_dirs)
    comparison = aggregate(runs, sort=sort, alpha=alpha, registry=registry if registry is not None else _registry(),
                           generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), hardware_fallback=_hardware_here)
    target = Path(report_dir) if report_dir else out_dirs[0] / "report"
    target.mkdir(parents=True, exist_ok=True)
    pictures = write_plots(comparison, target)
    write_markdown(comparison, pictures, target)
    write_csv(comparison, target)
    write_json(comparison, pictures, target)
    write_latex(comparison, target)
    write_html(comparison, pictures, target)
    write_run_records([Path(run_dir) for run_dir in runs.frame["run_dir"]], target / RECORDS_FILE)
    print_report(comparison, console, target)
    return target


@click.command("report")
@click.argument("out_dirs", nargs=-1, required=True, type=click.Path(), metavar="OUT|RUNS.jsonl [...]")
@click.option("--sort", metavar="METRIC",
              help="Primary metric to sort and test on: a column or its prefix (e.g. fid, modes_covered).")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Where to write the report files (default: OUT/report of the first OUT).")
@click.option("--alpha", type=float, default=ALPHA, show_default=True,
              help="Significance level of the comparison with the best config.")
@click.option("--reference", "references", multiple=True, metavar="NAME_OR_FILE",
              help="A published table to set beside the runs (a shipped one such as pacgan-table1, or a TOML file).")
@click.pass_context
def report_command(context: click.Context, out_dirs: tuple[str, ...], sort: str | None, output: str | None,
                   alpha: float, references: tuple[str, ...]) -> None:
    """Compare the runs of one or more output directories across seeds: tables, plots, files.

    A source may also be the runs.jsonl an earlier report wrote (its runs' configs, statuses
    and histories), to re-analyse a published report or add later seeds to it.

    Runs are grouped by their config without the seed; each metric gets mean, std, a 95%
    confidence interval, median and best over seeds, and each config a verdict against the
    best of its dataset (Welch's t-test). Writes Markdown, CSV, JSON, LaTeX, HTML and the
    runs' records (runs.jsonl) to OUT/report/.
    """
    from ganbench.report.caveats import judges_of
    from ganbench.report.reference import load_reference, write_reference_comparison
    from ganbench.report.runs import load_runs

    published = [load_reference(name) for name in references]  # a bad name fails before any work
    disabled = tuple((context.obj or {}).get("disabled", ()))
    console = Console()
    registry = _registry(disabled)
    target = write_report(out_dirs, console, sort, report_dir=output, alpha=alpha, registry=registry)
    judges, _ = judges_of(registry)
    for reference in published:
        path, table = write_reference_comparison(reference, load_runs([Path(out) for out in out_dirs]), target,
                                                 judges)
        console.print(table)
        console.print(f"side by side with {reference.source}: {path}")
