"""Published figures beside ganbench's: the side-by-side table of a reproduction.

A *reference* is a TOML file of a paper's table: where it comes from, which statistic its
error bars are, and one ``[[row]]`` per table row with the runs it corresponds to
(``match``: dataset, architecture, loss or any hyperparameter) and its figures as
``column = [mean, error]`` in ganbench's column names::

    source = "PacGAN (Lin et al. 2018), Table 1"
    statistic = "standard error"   # the only one compared so far
    trials = 10

    [[row]]
    label = "GAN"
    match = { dataset = "ring8", pac = 1 }
    modes_covered = [6.3, 0.5]

``ganbench report OUT --reference NAME`` (a shipped reference such as ``pacgan-table1``,
or a path) computes, for every row, the mean and standard error over the matching finished
runs (one per seed) and says whether the two agree within two combined standard errors,
``|ours - theirs| <= 2 * sqrt(se_ours^2 + se_theirs^2)``: about a 95% test of equal means
when both are roughly normal. With fewer than two runs there is no error bar and no verdict.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ganbench.errors import UserError
from ganbench.ledger.statuses import RunStatus
from ganbench.ledger.storage import atomic_write
from ganbench.report.caveats import MARK, SHORT_MARK, as_figures, marks_of
from ganbench.report.runs import RunSet, distinguishing

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

AGREEMENT_STANDARD_ERRORS = 2.0
"""Figures agree when they differ by at most this many combined standard errors."""
RUN_FIELDS = ("dataset", "architecture", "loss", "split", "steps", "batch_size")


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published table: which runs it matches and its figures ``column -> (mean, error)``."""

    label: str
    match: Mapping[str, Any]
    figures: Mapping[str, tuple[float, float]]


@dataclass(frozen=True)
class Reference:
    """A published table to compare with."""

    name: str
    source: str
    statistic: str
    trials: int | None
    rows: tuple[PublishedRow, ...]
    notes: str = ""


@dataclass
class Figure:
    """One cell of the side-by-side table."""

    column: str
    published: tuple[float, float]
    mean: float = math.nan
    standard_error: float = math.nan
    runs: int = 0
    verdict: str = "no runs"
    not_meaningful: list[str] = field(default_factory=list)
    """The metric's reason for each of these runs whose figure it marks not meaningful."""

    def shown_verdict(self) -> str:
        """The verdict, with the not-meaningful mark when any of the runs carries it."""
        if not self.not_meaningful:
            return self.verdict
        return (f"{self.verdict}; {MARK} in {len(self.not_meaningful)} of {self.runs} runs "
                f"({self.not_meaningful[0]})")


@dataclass
class ComparedRow:
    label: str
    match: Mapping[str, Any]
    runs: int
    figures: list[Figure] = field(default_factory=list)


def reference_names() -> list[str]:
    """The references that ship with ganbench (``ganbench/planning/presets/references/NAME.toml``)."""
    folder = resources.files("ganbench.planning.presets").joinpath("references")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_reference(name_or_path: str) -> Reference:
    """A shipped reference by name, or a reference TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            text, name = path.read_text(), path.stem
        except OSError as error:
            raise UserError(f"--reference {name_or_path}: cannot read it ({error.strerror}).") from None
    elif name_or_path in reference_names():
        text = resources.files("ganbench.planning.presets").joinpath("references", f"{name_or_path}.toml").read_text()
        name = name_or_path
    else:
        raise UserError(f"unknown reference '{name_or_path}'; shipped references: {', '.join(reference_names())} "
                        "(or give the path of a reference .toml file).")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"reference {name_or_path} is not valid TOML ({error}).") from None
    return _reference_from(name, data, name_or_path)


def _reference_from(name: str, data: Mapping[str, Any], origin: str) -> Reference:
    if data.get("statistic") != "standard error":
        raise UserError(f"reference {origin}: statistic must be \"standard error\" (the only one compared), "
                        f"not {data.get('statistic')!r}.")
    rows = []
    for number, row in enumerate(data.get("row", []), start=1):
        label, match = row.get("label"), row.get("match")
        if not isinstance(label, str) or not isinstance(match, dict) or not match:
            raise UserError(f"reference {origin}: row {number} needs a label and a match table.")
        figures = {}
        for column, value in row.items():
            if column in ("label", "match"):
                continue
            if (not isinstance(value, list) or len(value) != 2
                    or not all(isinstance(v, (int, float)) for v in value)):
                raise UserError(f"reference {origin}: row {label!r}, {column} must be [mean, error].")
            figures[column] = (float(value[0]), float(value[1]))
        rows.append(PublishedRow(label, dict(match), figures))
    if not rows:
        raise UserError(f"reference {origin} has no [[row]] tables.")
    return Reference(name, str(data.get("source", "")), data["statistic"], data.get("trials"), tuple(rows),
                     str(data.get("notes", "")))


def _matches(config: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    params = config.get("params") or {}
    for key, wanted in match.items():
        value = config.get(key) if key in RUN_FIELDS else params.get(key)
        if value != wanted:
            return False
    return True


def compare(reference: Reference, runs: RunSet, judges: Sequence[Any] = ()) -> list[ComparedRow]:
    """Every published row beside the mean and standard error of its finished runs.

    The runs of a row are the seeds of one config: when several configs with finished runs
    match a row (say ``pac = 1`` run with two learning rates), each gets its own line,
    labelled by what tells them apart, so no mean pools runs of different settings.
    ``judges`` are metrics (:meth:`ganbench.Metric.not_meaningful`): a figure they mark for
    any of a row's runs carries the mark beside its verdict, in every format.
    """
    frame = runs.frame[runs.frame["status"] == RunStatus.DONE]
    compared = []
    for row in reference.rows:
        finished = set(frame["config_id"])
        matched = {cid: config for cid, config in runs.configs.items()
                   if cid in finished and _matches(config, row.match)}
        apart = distinguishing(matched)
        lines = [(f"{row.label} [{extra}]" if extra else row.label, [cid]) for cid, extra in apart.items()]
        for label, config_ids in lines or [(row.label, [])]:
            compared.append(_compare_row(label, row, frame[frame["config_id"].isin(config_ids)], runs, judges))
    return compared


def _compare_row(label: str, row: PublishedRow, selected: "pd.DataFrame", runs: RunSet,
                 judges: Sequence[Any]) -> ComparedRow:
    """One line of the side-by-side table: ``row``'s published figures beside the ``selected`` runs'."""
    result = ComparedRow(label, row.match, len(selected))
    for column, published in row.figures.items():
        figure = Figure(column, published)
        values = selected[column].dropna().to_numpy() if column in selected else []
        figure.runs = len(values)
        if figure.runs:
            figure.mean = float(values.mean())
        if figure.runs >= 2:
            figure.standard_error = float(values.std(ddof=1) / math.sqrt(figure.runs))
            gap = abs(figure.mean - published[0])
            allowed = AGREEMENT_STANDARD_ERRORS * math.hypot(figure.standard_error, published[1])
            figure.verdict = "agrees" if gap <= allowed else "differs"
        elif figure.runs == 1:
            figure.verdict = "can't tell (1 run)"
        if figure.runs:  # each run judged as the report judges it (ganbench.report.caveats)
            for record in selected[selected[column].notna()].to_dict("records"):
                figures = as_figures({name: record.get(name) for name in runs.metric_columns})
                reason = marks_of(figures, judges, []).get(column)
                if reason:
                    figure.not_meaningful.append(reason)
        result.figures.append(figure)
    return result


def _cell(mean: float, error: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(error) else f"{mean:.{digits}f} ± {error:.{digits}f}"


def _digits(column: str) -> int:
    """Decimals shown: three for a KL in nats (published as 0.06 +- 0.003), one for counts and percentages."""
    return 3 if column.endswith(("kl", "kl_nats")) else 1


def markdown(reference: Reference, compared: list[ComparedRow]) -> str:
    """The side-by-side table as Markdown, with the source and the agreement rule."""
    columns = list(dict.fromkeys(f.column for row in compared for f in row.figures))
    lines = [f"## Published vs ganbench: {reference.name}", "",
             f"Published: {reference.source} ({reference.trials or '?'} trials, mean ± {reference.statistic}).",
             "ganbench: mean ± standard error over the finished runs (one per seed) that match each row.",
             f"Agreement: |ganbench − published| ≤ {AGREEMENT_STANDARD_ERRORS:g} × sqrt(SE_ganbench² + SE_published²).",
             ""]
    if reference.notes:
        lines += [reference.notes.strip(), ""]
    header = ["row", "runs"] + [f"{c} ({who})" for c in columns for who in ("published", "ganbench")] + \
             [f"{c}: verdict" for c in columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in compared:
        figures = {f.column: f for f in row.figures}
        cells = [row.label + " (" + ", ".join(f"{k}={v}" for k, v in row.match.items()) + ")", str(row.runs)]
        for column in columns:
            figure = figures.get(column)
            if figure is None:
                cells += ["–", "–"]
                continue
            digits = _digits(column)
            cells += [_cell(*figure.published, digits), _cell(figure.mean, figure.standard_error, digits)]
        cells += [figures[c].shown_verdict() if c in figures else "–" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


VERDICT_MARKS = {"agrees": "agrees", "differs": "DIFFERS"}


def terminal_table(reference: Reference, compared: list[ComparedRow]) -> "Table":
    """The side-by-side table for a terminal: one line per published row, ``ours vs theirs verdict`` per column."""
    from rich.markup import escape
    from rich.table import Table

    columns = list(dict.fromkeys(f.column for row in compared for f in row.figures))
    table = Table(title=f"{reference.source}: ganbench vs published (mean ± SE)", title_justify="left")
    table.add_column("row", overflow="fold")
    table.add_column("runs", justify="right")
    for column in columns:
        table.add_column(column.removeprefix("modes_"))
    for row in compared:
        figures = {f.column: f for f in row.figures}
        where = " ".join(f"{k}={v}" for k, v in row.match.items() if k != "dataset")
        label = f"{row.match.get('dataset', '')} {where} {row.label}".strip()
        cells = []
        for column in columns:
            figure = figures.get(column)
            if figure is None:
                cells.append("–")
                continue
            digits = _digits(column)
            cells.append(f"{_cell(figure.mean, figure.standard_error, digits)} vs "
                         f"{_cell(*figure.published, digits)} {VERDICT_MARKS.get(figure.verdict, '?')}"
                         + (f" {SHORT_MARK}" if figure.not_meaningful else ""))
        table.add_row(escape(label), str(row.runs), *cells)  # labels are text ("DCGAN [g_steps=2]"), not markup
    table.caption = (f"agrees: within {AGREEMENT_STANDARD_ERRORS:g} combined standard errors; ?: fewer than 2 runs"
                     + "".join(f"\n{SHORT_MARK} = {MARK}: {escape(row.label)} {f.column}: {escape(f.not_meaningful[0])} "
                               f"({len(f.not_meaningful)} of {f.runs} runs)"
                               for row in compared for f in row.figures if f.not_meaningful))
    return table


def to_json(reference: Reference, compared: list[ComparedRow]) -> dict[str, Any]:
    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {"reference": reference.name, "source": reference.source, "statistic": reference.statistic,
            "trials": reference.trials, "agreement_standard_errors": AGREEMENT_STANDARD_ERRORS,
            "rows": [{"label": row.label, "match": dict(row.match), "runs": row.runs,
                      "figures": [{"column": f.column, "published_mean": f.published[0],
                                   "published_error": f.published[1], "ganbench_mean": finite(f.mean),
                                   "ganbench_standard_error": finite(f.standard_error), "ganbench_runs": f.runs,
                                   "verdict": f.verdict, "not_meaningful_runs": len(f.not_meaningful),
                                   "not_meaningful_reasons": f.not_meaningful}
                                  for f in row.figures]} for row in compared]}


def write_reference_comparison(reference: Reference, runs: RunSet, report_dir: Path,
                               judges: Sequence[Any] = ()) -> tuple[Path, "Table"]:
    """Write ``reference-<name>.md`` and ``.json`` into ``report_dir``; return the Markdown path and a terminal table.

    ``judges``: the installed metrics, which mark figures not meaningful (see :func:`compare`)."""
    compared = compare(reference, runs, judges)
    text = markdown(reference, compared)
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / f"reference-{reference.name}.md"
    atomic_write(path, lambda handle: handle.write(text.encode()))
    payload = json.dumps(to_json(reference, compared), indent=2)
    atomic_write(report_dir / f"reference-{reference.name}.json", lambda handle: handle.write(payload.encode()))
    return path, terminal_table(reference, compared)
