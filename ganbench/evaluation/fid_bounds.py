"""Where an FID lies: the floor (real data against real data) and the ceiling (an untrained generator).

An FID means little on its own: its scale depends on the extractor, the data and the sample
counts. Two figures measured the same way place it:

* **floor**: the FID between two disjoint random halves of the reference images, what a
  generator indistinguishable from the data would score (at half the reference count, so
  slightly above the floor at the full count);
* **ceiling**: the FID of the run's architecture with its untrained weights (built with seed
  0, the same hyperparameters), i.e. where training started from.

The fid metric writes both into its protocol. The floor costs nothing (the reference
features are already there); the ceiling samples the untrained generator once per
architecture, hyperparameters, extractor and count, and is cached as JSON under
``<cache_dir>/fid-bounds/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from ganbench.evaluation.context import EvaluationContext
from ganbench.evaluation.extractors import Extractor
from ganbench.evaluation.features import RealStatistics, generated_features
from ganbench.evaluation.fidelity import fid_statistics, frechet_distance
from ganbench.evaluation.hashing import content_hash
from ganbench.ledger.storage import atomic_write

FLOOR_SPLIT_SEED = 0
"""Seed of the permutation that splits the reference images into two halves."""
CEILING_SEED = 0
"""torch's seed when the untrained generator is built (the same for every run, so one cache entry)."""
BOUNDS_FORMAT = "ganbench-fid-bounds-v1"


def fid_floor(real: RealStatistics) -> tuple[float, int]:
    """Return ``(FID between two disjoint random halves of the reference features, half size)``.

    NaN when a half has no more images than the features have dimensions (its covariance
    would be singular, and the FID would measure that rather than the data).
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    half = real.count // 2
    if half <= real.features.shape[1]:
        return math.nan, half
    order = torch.randperm(real.count, generator=torch.Generator().manual_seed(FLOOR_SPLIT_SEED))
    first, second = real.features[order[:half]], real.features[order[half:2 * half]]
    (mu_1, sigma_1), (mu_2, sigma_2) = fid_statistics(first), fid_statistics(second)
    result = fid_statistics_to_metric({"mu": mu_1, "sigma": sigma_1}, {"mu": mu_2, "sigma": sigma_2}, False)
    return float(result[KEY_METRIC_FID]), half


def untrained_generator(context: EvaluationContext) -> tuple[torch.nn.Module, str, str] | None:
    """The run's architecture with fresh weights, its name and a key of what decides those weights.

    Read from the run's ``config.json``; None when the context has no run directory (an
    evaluation outside a run) or its architecture is not installed.
    """
    from ganbench.planning.spec import RunSpec
    from ganbench.registry import get_registry

    config = Path(context.run_dir) / "config.json" if context.run_dir else None
    if config is None or not config.is_file():
        return None
    spec = RunSpec.from_json(json.loads(config.read_text()))
    try:
        architecture = get_registry().get("architecture", spec.architecture)
    except Exception:  # uninstalled or disabled since the run: no ceiling, the FID still stands
        return None
    params = {key: spec.params[key] for key in sorted(architecture.defaults) if key in spec.params}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CEILING_SEED)
        generator, _ = architecture.build(tuple(context.data_shape), dict(spec.params))
    identity = [spec.architecture, spec.versions.get(f"architecture:{spec.architecture}", ""),
                list(context.data_shape), params]
    latent = context.params.get("latent", "normal")
    if latent != "normal":  # sampled from another z distribution (keys of N(0, I) ceilings stay as they were)
        identity.append(latent)
    key = json.dumps(identity, sort_keys=True, default=str)
    return generator.to(context.device), spec.architecture, key


def fid_ceiling(context: EvaluationContext, extractor: Extractor, real: RealStatistics,
                count: int) -> tuple[float, str]:
    """Return ``(FID of the run's untrained generator, what it was)``, from the cache when measured before.

    ``(nan, reason)`` when the run's architecture cannot be rebuilt here.
    """
    built = untrained_generator(context)
    if built is None:
        return math.nan, "not measured (no run configuration to rebuild the generator from)"
    generator, name, identity = built
    description = f"{name} untrained (seed-{CEILING_SEED} weights), {count} samples"
    key = content_hash(BOUNDS_FORMAT, identity, extractor.identity, extractor.fid_layer, real.path.stem, count)
    path = Path(context.cache_dir) / "fid-bounds" / f"{key[:32]}.json"
    if path.exists():
        return float(json.loads(path.read_text())["fid"]), description
    untrained = dataclasses.replace(context, generator=generator, memo={})
    features = generated_features(untrained, extractor, count)[extractor.fid_layer]
    value = frechet_distance(real, features)
    atomic_write(path, lambda file: file.write(json.dumps({"fid": value, "what": description}).encode()))
    return value, description


def bounds_protocol(context: EvaluationContext, extractor: Extractor, real: RealStatistics,
                    count: int) -> dict[str, str]:
    """The floor and ceiling as protocol entries (``fid_floor``, ``fid_ceiling``)."""
    floor, half = fid_floor(real)
    ceiling, description = fid_ceiling(context, extractor, real, count)
    floor_text = (f"{floor:.4g} (two disjoint random halves of the {real.count} reference images, "
                  f"{half} vs {half})" if math.isfinite(floor)
                  else f"not measured (halves of {half} images: too few for {real.features.shape[1]}-d features)")
    ceiling_text = f"{ceiling:.4g} ({description})" if math.isfinite(ceiling) else description
    return {"fid_floor": floor_text, "fid_ceiling": ceiling_text}
