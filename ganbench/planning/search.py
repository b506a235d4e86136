"""Random search: hyperparameter distributions as axes, drawn reproducibly under a budget.

``--set 'lr=loguniform(1e-5,1e-3)'`` makes ``lr`` a distribution instead of a list of
values; ``--budget N`` then draws N settings of every distribution per (architecture, loss,
dataset) cell. Plain comma lists stay grid axes and are crossed with the draws, as are the
seeds. Each drawn setting expands through :func:`ganbench.planning.grid.expand` like a hand-written
``--set``, so a run's id is the content hash of its resolved values and nothing else.

Draw ``i`` of key ``k`` in a cell comes from its own random stream, seeded by the search
seed, the cell's names, ``i`` and ``k``. So the first N draws are the same whatever the
budget (raising it from N to M trains only the M - N new settings), adding a distribution
for one key leaves the draws of the others unchanged, and ``--search-seed`` gives a new,
equally reproducible search.

Lucic et al. 2018 ("Are GANs Created Equal?") is the protocol: random settings from fixed
distributions, the best score as a function of the budget, then the best setting of each
model re-run with many seeds (``--winner-seeds K``; the report shows both stages).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ganbench.errors import UserError
from ganbench.ledger.storage import read_json, write_json
from ganbench.planning.spec import RunSpec

SIGNIFICANT_DIGITS = 4
"""Drawn real numbers are rounded to this many significant digits: readable labels and
commands, and far finer than any difference a GAN's score can resolve."""
SEARCH_FILE = "search.json"
"""``OUT/search.json``: which runs are search draws, from which distributions (read by the report)."""
SCHEMA = "ganbench-search/1"
EXAMPLES = "uniform(low,high), loguniform(low,high) or choice(a,b,...)"
_CALL = re.compile(r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_-]*)\s*\((?P<arguments>.*)\)\s*$", re.DOTALL)


def looks_like_distribution(text: Any) -> bool:
    """Whether a ``--set`` value is written as a call, ``name(...)`` (a distribution, good or bad)."""
    return isinstance(text, str) and _CALL.match(text) is not None


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's search distribution, parsed from ``uniform(a,b)``, ``loguniform(a,b)``
    or ``choice(a,b,...)``."""

    kind: str
    """``uniform``, ``loguniform`` or ``choice``."""
    arguments: tuple
    """``(low, high)`` for the continuous kinds, the values for ``choice``."""

    @property
    def text(self) -> str:
        """The canonical spelling (recorded in ``search.json`` and shown in the report)."""
        return f"{self.kind}({','.join(_spell(a) for a in self.arguments)})"

    def draw(self, rng: np.random.Generator, key: str, like: Any) -> Any:
        """One value for hyperparameter ``key``, whose default is ``like`` (its type decides the draw).

        Integer hyperparameters get whole numbers: ``uniform(1,5)`` is one of 1..5 with equal
        chance, ``loguniform(1,16)`` the floor of a log-uniform draw on [1, 17). Real ones are
        rounded to :data:`SIGNIFICANT_DIGITS` and kept within [low, high].
        """
        if self.kind == "choice":
            return self.arguments[int(rng.integers(len(self.arguments)))]
        low, high = self.arguments
        if isinstance(like, bool) or not isinstance(like, (int, float)):
            raise UserError(f"--set {key}={self.text}: {key} is a {type(like).__name__} setting, not a number; "
                            f"use choice(...), like choice({_spell(like)},...).")
        if isinstance(like, int):
            if not (float(low).is_integer() and float(high).is_integer()):
                raise UserError(f"--set {key}={self.text}: {key} takes whole numbers; give whole-number bounds, "
                                f"like {self.kind}({math.ceil(low)},{math.floor(high)}).")
            low, high = int(low), int(high)
            if self.kind == "uniform":
                return int(rng.integers(low, high + 1))
            return min(high, int(math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1))))))
        if self.kind == "uniform":
            value = rng.uniform(low, high)
        else:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        return min(high, max(low, float(f"{value:.{SIGNIFICANT_DIGITS}g}")))


def _spell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(text: str, key: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--set {key}={whole}: {text.strip()!r} is not a number; write it like "
                        f"loguniform(1e-5,1e-3).") from None
    if not math.isfinite(value):
        raise UserError(f"--set {key}={whole}: the bounds must be finite numbers.")
    return value


def parse_distribution(key: str, text: str) -> Distribution:
    """The distribution written as ``text`` for ``key``; a UserError naming the fix if it is bad."""
    from ganbench.planning.grid import parse_value

    match = _CALL.match(text)
    if match is None:
        raise UserError(f"--set {key}={text}: not a distribution; write {EXAMPLES}.")
    name = match["name"].lower()
    arguments = [argument.strip() for argument in match["arguments"].split(",")]
    if arguments == [""]:
        arguments = []
    if name not in ("uniform", "loguniform", "choice"):
        close = difflib.get_close_matches(name, ["uniform", "loguniform", "choice"], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"--set {key}={text}: unknown distribution '{match['name']}'; {hint}write {EXAMPLES}.")
    if "" in arguments:
        raise UserError(f"--set {key}={text}: an empty argument; separate the values by single commas.")
    if name == "choice":
        if not arguments:
            raise UserError(f"--set {key}={text}: choice needs at least one value, like choice(1,5).")
        return Distribution(name, tuple(parse_value(argument) for argument in arguments))
    if len(arguments) != 2:
        raise UserError(f"--set {key}={text}: {name} takes two bounds, low and high, like {name}(1e-5,1e-3); "
                        f"got {len(arguments)}.")
    low, high = (_number(argument, key, text) for argument in arguments)
    if not low < high:
        raise UserError(f"--set {key}={text}: the low bound must be below the high one, like "
                        f"{name}({_spell(min(low, high))},{_spell(max(low, high))}).")
    if name == "loguniform" and low <= 0:
        raise UserError(f"--set {key}={text}: loguniform needs bounds above 0 (it is uniform in log); "
                        f"use uniform({_spell(low)},{_spell(high)}) for a range that includes 0.")
    return Distribution(name, (low, high))


def distributions_of(sets: Mapping[str, list]) -> dict[str, Distribution]:
    """The ``--set`` axes written as distributions, parsed; the others are grid axes."""
    found = {}
    for key, values in sets.items():
        calls = [value for value in values if looks_like_distribution(value)]
        if not calls:
            continue
        if len(values) != 1:
            raise UserError(f"--set {key}: a distribution is the whole axis; give either {calls[0]} "
                            f"or a list of values, not both.")
        found[key] = parse_distribution(key, calls[0])
    return found


def _word(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def draw_stream(search_seed: int, architecture: str, loss: str, dataset: str, index: int,
                key: str) -> np.random.Generator:
    """The random stream of draw ``index`` of ``key`` in one cell: the same whatever the budget."""
    entropy = [search_seed, _word(architecture), _word(loss), _word(dataset), index, _word(key)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


@dataclass(frozen=True)
class Draw:
    """One search run: which cell, which draw, the values drawn (``search.json`` holds these)."""

    run_id: str
    architecture: str
    loss: str
    dataset: str
    seed: int
    draw: int
    """The draw's index in its cell, from 0."""
    search_seed: int
    values: Mapping[str, Any]
    """``--set`` key -> the value drawn (keys that do not apply to the cell are left out)."""
    distributions: Mapping[str, str]
    """``--set`` key -> the distribution's text."""

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("run_id")
        return data


@dataclass
class SearchPlan:
    """The runs of a grid, and which of them are search draws (none for a plain grid)."""

    runs: list[RunSpec]
    draws: list[Draw]


def plan_runs(grid: Any, registry: Any) -> SearchPlan:
    """Expand ``grid`` (a :class:`ganbench.planning.grid.GridSpec`): a plain grid, or ``grid.budget`` draws per cell.

    A draw whose values equal an earlier draw's (a key that does not apply to the cell, a
    ``choice`` drawn twice) is the same run and is trained once.
    """
    from ganbench.planning.grid import expand

    distributions = distributions_of(grid.sets)
    if grid.winner_seeds < 0:
        raise UserError(f"--winner-seeds {grid.winner_seeds}: give the number of new seeds, like --winner-seeds 5.")
    if grid.budget < 0:
        raise UserError(f"--budget {grid.budget}: give the number of settings to draw per cell, like --budget 20.")
    if not distributions:
        if grid.budget:
            raise UserError(f"--budget {grid.budget} draws settings from distributions, but no --set gives one; "
                            f"add one like --set 'lr=loguniform(1e-5,1e-3)' ({EXAMPLES}).")
        return SearchPlan(expand(grid, registry), [])
    key, distribution = next(iter(distributions.items()))
    if not grid.budget:
        raise UserError(f"--set {key}={distribution.text} is a distribution: add --budget N to draw N settings "
                        f"from it per architecture, loss and dataset.")
    if grid.search_seed < 0:
        raise UserError(f"--search-seed {grid.search_seed}: give a whole number of 0 or more.")
    from ganbench.planning.grid import SHORTCUTS

    fixed = {k: v for k, v in grid.sets.items() if k not in distributions}
    texts = {k: d.text for k, d in distributions.items()}
    runs, draws, seen = [], [], set()
    searched_somewhere, searchable = set(), set(SHORTCUTS)
    for architecture in grid.archs:
        for loss in grid.losses:
            for dataset in grid.datasets:
                cell = dataclasses.replace(grid, archs=[architecture], losses=[loss], datasets=[dataset], sets=fixed)
                resolved = expand(cell, registry)[0].params  # this cell's hyperparameters and their types
                searchable |= set(resolved)
                for index in range(grid.budget):
                    values = {}
                    for key, distribution in sorted(distributions.items()):
                        target = next((t for t in SHORTCUTS.get(key, (key,)) if t in resolved), None)
                        if target is None:
                            continue
                        searched_somewhere.add(key)
                        stream = draw_stream(grid.search_seed, architecture, loss, dataset, index, key)
                        values[key] = distribution.draw(stream, key, resolved[target])
                    drawn = dataclasses.replace(cell, sets={**fixed, **{k: [v] for k, v in values.items()}})
                    for spec in expand(drawn, registry):
                        if spec.run_id in seen:
                            continue
                        seen.add(spec.run_id)
                        runs.append(spec)
                        draws.append(Draw(spec.run_id, architecture, loss, dataset, spec.seed, index,
                                          grid.search_seed, values, texts))
    unused = sorted(set(distributions) - searched_somewhere)
    if unused:
        raise UserError(f"--set {unused[0]}={distributions[unused[0]].text}: {unused[0]} is not a training "
                        f"hyperparameter of any architecture, loss or dataset of this grid, and only those "
                        f"can be searched: {', '.join(sorted(searchable))}.")
    return SearchPlan(runs, draws)


def record_draws(out: Path, draws: list[Draw]) -> Path | None:
    """Add ``draws`` to ``OUT/search.json`` (kept across commands, keyed by run id)."""
    if not draws:
        return None
    path = Path(out) / SEARCH_FILE
    data = read_json(path)
    runs = data.get("runs", {}) if isinstance(data, dict) and data.get("schema") == SCHEMA else {}
    runs.update({draw.run_id: draw.to_json() for draw in draws})
    write_json(path, {"schema": SCHEMA, "runs": runs})
    return path


def load_draws(out: Path) -> dict[str, dict[str, Any]]:
    """``run_id -> draw record`` from ``OUT/search.json``; empty when the directory holds no search."""
    data = read_json(Path(out) / SEARCH_FILE)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("runs"), dict):
        return {}
    return {run_id: record for run_id, record in data["runs"].items() if isinstance(record, dict)}


def winner_runs(winner: RunSpec, search_seeds: list[int], count: int) -> list[RunSpec]:
    """The second stage for one winning setting: ``count`` new seeds after the search's seeds.

    The search's own seeds are left out: their scores chose the winner, so they are biased
    upwards (the winner's curse); only fresh seeds estimate how good the setting is.
    """
    first = max(search_seeds) + 1
    return [dataclasses.replace(winner, seed=seed) for seed in range(first, first + count)]
