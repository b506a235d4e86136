"""The report in the terminal: one rich table per dataset, commands, protocol and where the files are."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ganbench.report.aggregate import Comparison
from ganbench.report.significance import BEST, TIED, WORSE
from ganbench.report.table import dataset_table, legend, protocol_rows, versions_rows

ROW_STYLES = {BEST: "bold green", TIED: "green", WORSE: "dim"}


def print_report(comparison: Comparison, console: Console, report_dir: Path | None = None) -> None:
    """Print every dataset's table, the reproduce commands and the protocol to ``console``."""
    for dataset in comparison.datasets:
        table_data = dataset_table(comparison, dataset)
        table = Table(title=table_data.title, title_justify="left", caption_justify="left")
        for index, header in enumerate(table_data.headers):
            table.add_column(header, justify="left" if index == 0 else "right", overflow="fold")
        for row, verdict in zip(table_data.rows, table_data.verdicts):
            table.add_row(*[Text(cell.text, style="bold" if cell.bold else "") for cell in row],
                          style=ROW_STYLES.get(verdict, ""))
        console.print(table)
    console.print(Text(legend(comparison), style="dim"))
    console.print(Text(f"hardware: {comparison.hardware} ({comparison.hardware_source})", style="dim"))
    console.print("[bold]reproduce[/bold]")
    for config in comparison.configs:
        console.print(Text(f"  {config.dataset} {config.label}: ", style="dim") + Text(config.command),
                      soft_wrap=True)
    protocol = Table(title="protocol", title_justify="left", show_header=True)
    for header in ("metric", "datasets", "protocol"):
        protocol.add_column(header, overflow="fold")
    for row in protocol_rows(comparison):
        protocol.add_row(*row)
    if protocol.row_count:
        console.print(protocol)
    for version, components in versions_rows(comparison):
        console.print(Text(f"version {version}: {components}", style="dim"))
    for note in comparison.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if report_dir is not None:
        console.print(f"report: {report_dir}/report.html (also .md, .csv, .json, .tex; plots in {report_dir}/plots)")
