"""Re-score finished runs from their checkpoints with other metrics or another protocol.

``ganbench eval OUT_OR_RUN --metrics fid,kid --set fid_samples=50000`` rebuilds each run's
generator from ``checkpoint.pt``, evaluates it, appends the figures to ``metrics.jsonl``
(``"kind": "rescore"``), merges them into ``status.json`` and rebuilds ``results.csv``.
Nothing is trained again and the run's id does not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ganbench.api import DataRequest
from ganbench.config import RunSpec
from ganbench.devices import device_description
from ganbench.errors import UserError
from ganbench.evaluation import EvaluationContext, run_metrics
from ganbench.grid import coerce
from ganbench.ledger import RunDirectory, write_results
from ganbench.registry import Registry
from ganbench.storage import append_jsonl, read_json
from ganbench.train import load_checkpoint, load_real_data


def find_run_directories(path: Path) -> list[RunDirectory]:
    """The run directories at ``path``: one run (``OUT/runs/<id>``) or every run of ``OUT``."""
    path = Path(path)
    if (path / "config.json").exists():
        return [RunDirectory(path)]
    runs = sorted(config.parent for config in (path / "runs").glob("*/config.json"))
    if not runs:
        raise UserError(f"{path} holds no ganbench runs; give an output directory or OUT/runs/<id>.")
    return [RunDirectory(run) for run in runs]


def rescore_run(directory: RunDirectory, metric_names: list[str], overrides: Mapping[str, Any], *,
                registry: Registry, device: torch.device, data_dir: str | None, cache_dir: Path) -> dict[str, float]:
    """Evaluate one run's checkpointed generator with ``metric_names``; record and return the figures."""
    spec = RunSpec.from_json(read_json(directory.config))
    metrics = {name: registry.get("metric", name) for name in metric_names}
    dataset = registry.get("dataset", spec.dataset)
    settings = {key: value for metric in metrics.values() for key, value in metric.defaults.items()}
    for key, value in overrides.items():
        if key not in settings:
            raise UserError(f"--set {key}: not a setting of {', '.join(metric_names)}; "
                            f"known: {', '.join(sorted(settings))}.")
        settings[key] = coerce(key, value, settings[key])
    checkpoint = load_checkpoint(directory)
    if checkpoint is None:
        raise UserError(f"run {directory.path.name} has no readable checkpoint; train it first.")
    real = load_real_data(dataset, spec, data_dir, cache_dir)
    data_shape = tuple(real.samples.shape[1:])
    generator, _ = registry.get("architecture", spec.architecture).build(data_shape, spec.params)
    generator.load_state_dict(checkpoint["generator"])
    generator.to(device)
    context = EvaluationContext(
        generator=generator, latent_dim=int(spec.params["latent_dim"]), data_shape=data_shape,
        dataset_name=spec.dataset, dataset=dataset, real=real, settings=settings, device=device,
        cache_dir=cache_dir, seed=spec.seed, step=int(checkpoint["step"]), run_dir=directory.path,
        training={"device_name": device_description(device)},
        load_split=lambda split: dataset.load(DataRequest(data_dir=data_dir, cache_dir=str(cache_dir / "data"),
                                                          split=split, seed=spec.seed, params=spec.params)))
    evaluation = run_metrics(metrics, context)
    append_jsonl(directory.metrics, [{"step": context.step, "kind": "rescore", **evaluation.values}])
    status = directory.status()
    directory.write_status(status["status"], metrics={**status.get("metrics", {}), **evaluation.values},
                           protocol={**status.get("protocol", {}), **evaluation.protocol_columns()})
    return evaluation.values


def rescore(path: Path, metric_names: list[str], overrides: Mapping[str, Any], *, registry: Registry,
            device: torch.device, data_dir: str | None, cache_dir: Path,
            on_run=lambda directory, values: None) -> int:
    """Re-score every finished run under ``path``; return how many were scored."""
    scored = 0
    directories = find_run_directories(path)
    for directory in directories:
        if directory.status().get("status") != "done":
            continue
        values = rescore_run(directory, metric_names, overrides, registry=registry, device=device,
                             data_dir=data_dir, cache_dir=cache_dir)
        on_run(directory, values)
        scored += 1
    out = directories[0].path.parent.parent
    if (out / "runs").is_dir():
        write_results(out)
    return scored
