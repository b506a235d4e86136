"""A run's real data: loaded once per process and kept in memory (grids reuse it across runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ganbench.api import DataRequest, LoadedData
from ganbench.planning.spec import RunSpec

_data_cache: dict[tuple, LoadedData] = {}


def load_real_data(dataset: Any, spec: RunSpec, data_dir: str | None, cache_dir: Path) -> LoadedData:
    """Load a run's dataset once per process (grids reuse it across runs)."""
    keys = tuple(sorted((k, spec.params[k]) for k in dataset.defaults))
    cache_key = (spec.dataset, spec.split, data_dir, str(cache_dir), spec.seed, keys)
    if cache_key not in _data_cache:
        request = DataRequest(data_dir=data_dir, cache_dir=str(cache_dir / "data"), split=spec.split,
                              seed=spec.seed, params=spec.params)
        _data_cache.clear()
        _data_cache[cache_key] = dataset.load(request)
    return _data_cache[cache_key]
