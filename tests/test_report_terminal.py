"""The terminal report: one line per config at 80 and 120 columns, headers never split inside a word.

The grid is the quickstart's shape (6 losses on two datasets) plus configs whose labels are
long (a learning-rate axis), with a diverged seed, so every column and flag is exercised.
"""

from __future__ import annotations

import os
import re

import pytest
from rich.console import Console

from ganbench.registry import get_registry
from ganbench.report.aggregate import aggregate
from ganbench.report.runs import load_runs
from ganbench.report.terminal import HEADERS, print_report
from test_report import make_run

REGISTRY = get_registry()
LOSSES = ("minimax", "ns", "lsgan", "wgan", "wgan-gp", "hinge")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("terminal")
    for dataset, modes in (("ring8", 8), ("grid25", 25)):
        for index, loss in enumerate(LOSSES):
            for seed in (0, 1):
                figures = {"modes_covered": float(modes - index - seed), "modes_high_quality_percent": 90.0 - index,
                           "modes_reverse_kl": 0.1 * index, "images_per_second": 4000.0 + 100 * index,
                           "steps_per_second": 60.0, "peak_memory_mb": 900.0, "train_seconds": 20.0,
                           "sampling_samples_per_second": 2e5, "evaluation_seconds": 0.1}
                make_run(out, loss, seed, figures, dataset=dataset, picture=False)
    for lr in (1e-4, 2e-4):  # twins that differ in a hyperparameter: long labels
        for seed in (0, 1):
            make_run(out, "wgan-gp", seed, {"modes_covered": 5.0 + seed, "modes_high_quality_percent": 20.0,
                                            "images_per_second": 3000.0},
                     params={"lr_g": lr, "lr_d": lr, "n_critic": 5}, picture=False)
    make_run(out, "wgan-gp", 2, status="diverged", error="non-finite loss at step 7",
             params={"lr_g": 1e-4, "lr_d": 1e-4, "n_critic": 5}, picture=False)
    return aggregate(load_runs([out]), registry=REGISTRY, hardware_fallback=lambda: "test machine")


def render(comparison, width: int, terminal: bool = True) -> str:
    console = Console(width=width, record=True, force_terminal=terminal, file=open(os.devnull, "w"))
    print_report(comparison, console)
    return console.export_text()


def table_lines(text: str, dataset: str) -> list[str]:
    """The lines of ``dataset``'s table: its title, header, rule and rows (not the flag notes under it)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{dataset}: sorted by"))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip() or lines[i].startswith("  "))
    return lines[start:end]


@pytest.mark.parametrize("width", [80, 120])
def test_each_config_is_one_line_at_80_and_120_columns(comparison, width):
    text = render(comparison, width)
    for dataset in comparison.datasets:
        lines = table_lines(text, dataset)
        configs = comparison.in_dataset(dataset)
        body = lines[3:]  # title, header, rule
        assert len(body) == len(configs), "\n".join(lines)
        for line, config in zip(body, configs):
            shown = line.split("  ")[0].strip()
            head, _, tail = shown.partition("…")  # a long label is cut in the middle
            assert config.label.startswith(head) and config.label.endswith(tail), (line, config.label)
            assert len(shown) >= min(len(config.label), 12)
            assert f"{config.counts['done']}/{config.counts['runs']}" in line
        assert all(len(line) <= width for line in lines)
        labels = [line.split("  ")[0].strip() for line in body]
        assert len(set(labels)) == len(labels), "twins cut alike"


@pytest.mark.parametrize("width", [80, 120])
def test_headers_are_never_split_inside_a_word(comparison, width):
    text = render(comparison, width)
    for dataset in comparison.datasets:
        header = table_lines(text, dataset)[1]
        assert re.split(r"\s{2,}", header.strip()) == list(HEADERS), header


def test_the_diverged_seed_and_the_unmeaningful_ranking_figure_are_flagged(comparison):
    text = render(comparison, 80)
    rows = table_lines(text, "ring8")[3:]
    (diverged,) = [line for line in rows if "1 diverged" in line]
    assert diverged.startswith("mlp/wgan-") and "2/3" in diverged
    assert "n/m" in diverged  # 20% high-quality samples: its mode coverage is marked
    assert sum("n/m" in line for line in rows) == 2
    assert "n/m = not meaningful: mlp/wgan-gp" in text


def test_off_a_terminal_the_compact_table_is_not_cut_or_wrapped(comparison):
    text = render(comparison, 80, terminal=False)
    for dataset in comparison.datasets:
        lines = table_lines(text, dataset)
        labels = [line.split("  ")[0].strip() for line in lines[3:]]
        assert labels == [c.label for c in comparison.in_dataset(dataset)]  # whole labels, no "…"
