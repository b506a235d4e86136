"""The report as one self-contained HTML page: no scripts, no external files, pictures inline as base64 PNG."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from ganbench.ledger.storage import atomic_write
from ganbench.report.aggregate import Comparison
from ganbench.report.caveats import MARK
from ganbench.report.files import overview_lines
from ganbench.report.plots import Picture
from ganbench.report.search import html_section as search_html
from ganbench.report.table import dataset_table, legend, protocol_rows, settings_rows, versions_rows

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1rem; color: #222; background: #fff; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.5rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { padding: 0.25rem 0.45rem; border-bottom: 1px solid #e5e5e5; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
table.text td, table.text th { text-align: left; }
table.comparison td { white-space: normal; }
.table-wrap { overflow-x: auto; max-width: 100%; }
tr.verdict-best { background: #e8f5e9; } tr.verdict-tied { background: #f7fbf2; }
tr.verdict-worse td { color: #555; }
.legend, .caption, .overview { color: #555; font-size: 0.85rem; }
img.plot { max-width: 100%; border: 1px solid #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: 1rem; }
figure.sample { margin: 0; width: 340px; } figure.sample img { width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.8rem; color: #444; }
pre { background: #f6f8fa; padding: 0.5rem; overflow-x: auto; font-size: 0.8rem; white-space: pre-wrap; }
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _header(text: str) -> str:
    """A header cell's HTML; long metric names may break after their underscores."""
    return escape(text).replace("_", "_<wbr>")


def _table(headers: list[str], rows: list[list[str]], css: str = "", row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_header(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        css_row = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css_row}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return (f'<div class="table-wrap"><table class="{css}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _plot(picture: Picture) -> str:
    return (f'<figure><img class="plot" alt="{escape(picture.title)}" src="{data_uri(picture.png)}">'
            f'<figcaption>{escape(picture.caption)}</figcaption></figure>')


def render_html(comparison: Comparison, pictures: list[Picture], report_dir: Path | None = None) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>ganbench comparison report</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>ganbench comparison report</h1>",
             *[f'<p class="overview">{escape(line)}</p>' for line in overview_lines(comparison)]]
    for dataset in comparison.datasets:
        table = dataset_table(comparison, dataset)
        rows = [[f"<strong>{escape(c.text)}</strong>" if c.bold else escape(c.text) for c in row]
                for row in table.rows]
        parts += [f'<section class="dataset" id="dataset-{escape(dataset)}">', f"<h2>{escape(table.title)}</h2>",
                  _table(table.headers, rows, f"comparison dataset-{escape(dataset)}",
                         [f"verdict-{v.replace(' ', '-').replace(chr(39), '')}" if v else "" for v in table.verdicts]),
                  f'<p class="legend">{escape(legend(comparison))}</p>']
        if table.marks:
            parts += [f'<p class="marks"><strong>{escape(MARK.capitalize())}:</strong></p><ul class="marks">',
                      *[f"<li>{escape(line)}</li>" for line in table.marks], "</ul>"]
        parts += [_plot(p) for p in pictures if p.dataset == dataset and not p.config_id]
        samples = [p for p in pictures if p.dataset == dataset and p.config_id]
        if samples:
            parts += [f"<h3>{escape(dataset)}: samples (last picture of the first seed)</h3>", '<div class="gallery">']
            parts += [f'<figure class="sample"><img alt="{escape(p.title)}" src="{data_uri(p.png)}">'
                      f"<figcaption>{escape(p.title)} ({escape(p.caption)})</figcaption></figure>" for p in samples]
            parts.append("</div>")
        parts.append(f"<h3>{escape(dataset)}: reproduce</h3>")
        parts += [f"<p>{escape(c.label)}</p><pre><code>{escape(c.command)}</code></pre>"
                  for c in comparison.in_dataset(dataset)]
        if report_dir is not None:  # a --budget search's figure, winners and divergence (ganbench.report.search)
            parts += search_html(comparison, dataset, report_dir)
        parts.append("</section>")
    for picture in pictures:
        if not picture.dataset and not picture.config_id:
            parts += [f'<section id="{escape(picture.name)}"><h2>{escape(picture.title)}</h2>', _plot(picture),
                      "</section>"]
    protocol = [[escape(cell) for cell in row] for row in protocol_rows(comparison)] or [["(none recorded)", "", ""]]
    parts += ['<section id="protocol"><h2>Protocol</h2>',
              _table(["metric", "datasets", "protocol"], protocol, "text protocol"),
              _table(["dataset", "config", "training settings and hyperparameters", "evaluation"],
                     [[escape(cell) for cell in row] for row in settings_rows(comparison)], "text settings"),
              _table(["version", "used for"], [[escape(cell) for cell in row] for row in versions_rows(comparison)],
                     "text versions"),
              "</section>"]
    if comparison.notes:
        parts += ['<section id="notes"><h2>Notes</h2><ul>',
                  *[f"<li>{escape(note)}</li>" for note in comparison.notes], "</ul></section>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(comparison: Comparison, pictures: list[Picture], report_dir: Path) -> Path:
    path = report_dir / "report.html"
    text = render_html(comparison, pictures, report_dir)
    atomic_write(path, lambda handle: handle.write(text), binary=False)
    return path
