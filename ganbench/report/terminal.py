"""The report in the terminal: per dataset, the few columns a person decides from.

Each dataset gets one table, one line per config: ``config``, ``seeds`` (finished/runs),
the ranking metric as mean ± half the width of its 95% confidence interval, ``vs best``
(the significance verdict), training ``images/s`` and ``flags`` (``n/m``: the ranking
figure is not meaningful for some seed, explained under the table; diverged, failed and
unfinished seeds; ``on H2`` when the runs trained on different hardware, the keys listed on
the ``hardware:`` line). Everything else (median, best seed, every metric, protocol, reproduce
commands) is in report.md and report.html, whose path ends the output.

On a terminal the table fits its width (80 columns included) by cutting long config
labels with "…"; off a terminal (a log, a pipe), where rich would assume 80 columns, it
takes the width it needs instead, so a line is never wrapped either way.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ganbench.report.aggregate import Comparison, ConfigSummary
from ganbench.report.caveats import MARK, SHORT_MARK
from ganbench.report.directions import THROUGHPUT, direction_of
from ganbench.report.significance import BEST, METHOD, TIED, WORSE
from ganbench.report.table import MISSING, hardware_keys, mark_lines, mean_ci, number

ROW_STYLES = {BEST: "bold green", TIED: "green", WORSE: "dim"}
HEADERS = ("config", "seeds", "mean ± CI", "vs best", "images/s", "flags")


def flags(config: ConfigSummary, primary: str | None, hardware: str | None = None) -> str:
    """The row's flags: ``n/m`` (ranking figure not meaningful), diverged, failed, unfinished seeds,
    then ``hardware`` (the keys of its runs' hardware, when the runs differ: ``H1``, ``H2``...)."""
    counts = config.counts
    found = [SHORT_MARK] if config.primary_not_meaningful(primary) else []
    found += [f"{counts[key]} {key}" for key in ("diverged", "failed", "unfinished") if counts.get(key)]
    found += [f"on {hardware}"] if hardware else []
    return ", ".join(found)


def verdict(config: ConfigSummary) -> str:
    """``best``, ``tied p=0.29``, ``worse p<0.001``, ``can't tell``: the verdict, short."""
    if not config.verdict:
        return MISSING
    text = config.verdict.describe()
    return text.replace(" (p", " p").replace(")", "") if config.verdict.p_adjusted is not None else text


def compact_rows(comparison: Comparison, dataset: str) -> list[list[str]]:
    """The terminal table's cells for ``dataset``, one row per config in ranking order (see :data:`HEADERS`)."""
    primary = comparison.primary.get(dataset)
    rows = []
    for config in comparison.in_dataset(dataset):
        counts = config.counts
        throughput = config.metrics.get(THROUGHPUT)
        rows.append([config.label, f"{counts['done']}/{counts['runs']}",
                     mean_ci(config.summary(primary), counts["done"]) if primary else MISSING,
                     verdict(config), number(throughput.mean, 0) if throughput and throughput.n else MISSING,
                     flags(config, primary, hardware_keys(comparison, config))])
    return rows


def title(comparison: Comparison, dataset: str) -> str:
    primary = comparison.primary.get(dataset)
    if not primary:
        return f"{dataset}: no finished run has metrics"
    arrow = direction_of(primary).arrow
    return f"{dataset}: sorted by {primary} {arrow} ({direction_of(primary).better or 'lower'} is better)".replace(
        "  ", " ")


def natural_width(table: Table) -> int:
    """The width ``table`` takes when nothing limits it (a console's measure stops at the console's width)."""
    return Console(width=10_000).measure(table).maximum


MIN_LABEL_WIDTH = 12
"""A config label is never cut below this many characters (``mlp/wgan-gp …``)."""


def compact_table(comparison: Comparison, dataset: str, width: int | None = None) -> Table:
    """One dataset's terminal table: one line per config, no header split inside a word.

    With ``width`` (a terminal's), long config labels are cut in the middle with "…" so the
    table fits; without, every cell is whole and the table as wide as it needs.
    """
    rows, configs = compact_rows(comparison, dataset), comparison.in_dataset(dataset)
    table = _table(title(comparison, dataset), rows, configs)
    if width is not None and natural_width(table) > width:  # only the label column gives way
        labels = max([len(HEADERS[0]), *(len(row[0]) for row in rows)])
        allowed = max(MIN_LABEL_WIDTH, labels - (natural_width(table) - width))
        table = _table(title(comparison, dataset), [[shorten(row[0], allowed), *row[1:]] for row in rows], configs)
    return table


def _table(heading: str, rows: list[list[str]], configs: list[ConfigSummary]) -> Table:
    table = Table(title=heading, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  collapse_padding=True)
    for index, header in enumerate(HEADERS):  # min_width: a header wraps between words, never inside one
        table.add_column(header, justify="left" if index in (0, len(HEADERS) - 1) else "right", no_wrap=True,
                         overflow="ellipsis", min_width=max(len(word) for word in header.split()))
    for row, config in zip(rows, configs):
        label = config.verdict.label if config.verdict else ""
        table.add_row(*[Text(cell) for cell in row], style=ROW_STYLES.get(label, ""))
    return table


def shorten(label: str, width: int) -> str:
    """``label`` cut to ``width`` characters in the middle (``mlp/wgan-…=0.0002``): twins differ at the end."""
    if len(label) <= width:
        return label
    head = (width - 1) * 3 // 5
    return label[:head] + "…" + label[len(label) - (width - 1 - head):]


def _print_table(console: Console, comparison: Comparison, dataset: str) -> None:
    if console.is_terminal:
        console.print(compact_table(comparison, dataset, console.width))
        return
    # Off a terminal (rich assumes 80 columns there) nothing is cut or wrapped: the table is
    # as wide as its widest line.
    table = compact_table(comparison, dataset)
    width = console.width
    console.width = max(width, natural_width(table))
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def print_report(comparison: Comparison, console: Console, report_dir: Path | None = None) -> None:
    """Print each dataset's compact table, the marks and notes, and where the full report is."""
    for dataset in comparison.datasets:
        _print_table(console, comparison, dataset)
        primary = comparison.primary.get(dataset)
        for line in mark_lines(comparison.in_dataset(dataset), [primary] if primary else [], brief=True):
            console.print(Text(f"  {SHORT_MARK} = {MARK}: {line}", style="yellow"), soft_wrap=True)
        console.print()
    console.print(Text(f"mean ± CI: mean over finished seeds ± half the width of its 95% confidence interval "
                       f"(t distribution); vs best: {METHOD}, alpha = {comparison.alpha:g}; images/s: training "
                       f"throughput, mean over seeds, measured by the training loop.", style="dim"), soft_wrap=True)
    console.print(Text(f"hardware: {comparison.hardware} ({comparison.hardware_source})", style="dim"),
                  soft_wrap=True)
    for note in comparison.notes:
        console.print(Text("note: ", style="yellow") + Text(note), soft_wrap=True)
    if report_dir is not None:
        console.print(Text(f"full report (median, best seed, every metric, protocol, commands): "
                           f"{report_dir}/report.md and report.html (also .csv, .json, .tex; plots in "
                           f"{report_dir}/plots)"), soft_wrap=True)
