"""Re-score finished runs from their checkpoints with other metrics or another protocol.

``ganbench eval OUT_OR_RUN --metrics fid,kid --set fid_samples=50000`` rebuilds each run's
generator from ``checkpoint.pt``, evaluates it, appends the figures to ``metrics.jsonl``
(``"kind": "rescore"``), merges them into ``status.json`` and rebuilds ``results.csv``.
Nothing is trained again and the run's id does not change.

What it promises:

* It holds ``OUT/.lock`` (no ``ganbench run`` can write OUT meanwhile) and each run's lock.
* Every metric is checked against every run's dataset before anything is scored, with
  the one-line error ``ganbench run`` gives.
* A figure eval could not compute (NaN: the training loop's images/s, which only training
  measures) never replaces one the run recorded.
* Each re-scored column's protocol records ``scored_step``, the checkpoint's step. When
  ``checkpoint.pt`` is damaged and the previous checkpoint is scored instead, the console
  says so and the protocol names the checkpoint and the run's final step.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from ganbench.api import DataRequest
from ganbench.errors import UserError
from ganbench.evaluation.context import Evaluation, EvaluationContext, run_metrics
from ganbench.ledger.runs import RunBusy, RunDirectory, lock_output, write_results
from ganbench.ledger.statuses import RunStatus
from ganbench.ledger.storage import append_jsonl, read_json
from ganbench.planning.grid import coerce
from ganbench.planning.spec import RunSpec
from ganbench.registry import Registry
from ganbench.training.hardware import device_description
from ganbench.training.checkpoint import load_checkpoint
from ganbench.training.data import load_real_data

Warn = Callable[[str], None]


def find_run_directories(path: Path) -> list[RunDirectory]:
    """The run directories at ``path``: one run (``OUT/runs/<id>``) or every run of ``OUT``."""
    path = Path(path)
    if (path / "config.json").exists():
        return [RunDirectory(path)]
    runs = sorted(config.parent for config in (path / "runs").glob("*/config.json"))
    if not runs:
        raise UserError(f"{path} holds no ganbench runs; give an output directory or OUT/runs/<id>.")
    return [RunDirectory(run) for run in runs]


def output_directory_of(directories: list[RunDirectory]) -> Path | None:
    """The ``OUT`` the runs belong to (``OUT/runs/<id>``), or None for a run directory found elsewhere."""
    parent = directories[0].path.parent
    return parent.parent if parent.name == "runs" else None


def read_spec(directory: RunDirectory) -> RunSpec:
    """The run's RunSpec; a UserError naming the file when config.json is missing or damaged."""
    config = read_json(directory.config)
    try:
        return RunSpec.from_json(config)
    except Exception:
        raise UserError(f"{directory.config} is missing or damaged; restore it (or leave the run out by "
                        f"giving another run directory) and run eval again.") from None


def check_metrics_apply(specs: list[RunSpec], metric_names: list[str], registry: Registry) -> None:
    """Raise the UserError ``ganbench run`` gives when a metric does not apply to a run's dataset."""
    metrics = {name: registry.get("metric", name) for name in metric_names}
    for spec in specs:
        dataset = registry.get("dataset", spec.dataset)
        shape = dataset.data_shape(spec.params)
        for name, metric in metrics.items():
            reason = metric.unsupported_reason(dataset, shape)
            if reason:
                raise UserError(f"metric '{name}' does not apply to dataset '{spec.dataset}': {reason}")


def merge_figures(stored: Mapping[str, Any], new: Mapping[str, float]) -> tuple[dict[str, Any], list[str]]:
    """``stored`` updated with ``new``, except where ``new`` is not finite and ``stored`` holds a figure.

    Returns the merged figures and the columns kept from ``stored``.
    """
    merged, kept = dict(stored), []
    for column, value in new.items():
        old = stored.get(column)
        if not _finite(value) and _finite(old):
            kept.append(column)
            continue
        merged[column] = value
    return merged, kept


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rescore_run(directory: RunDirectory, metric_names: list[str], overrides: Mapping[str, Any], *,
                registry: Registry, device: torch.device, data_dir: str | None, cache_dir: Path,
                warn: Warn = lambda message: None) -> dict[str, float]:
    """Evaluate one run's checkpointed generator with ``metric_names``; record and return the figures."""
    directory = RunDirectory(directory.path, on_warning=lambda message: warn(f"{directory.path.name}: {message}"))
    spec = read_spec(directory)
    metrics = {name: registry.get("metric", name) for name in metric_names}
    dataset = registry.get("dataset", spec.dataset)
    settings = {key: value for metric in metrics.values() for key, value in metric.defaults.items()}
    for key, value in overrides.items():
        if key not in settings:
            raise UserError(f"--set {key}: not a setting of {', '.join(metric_names)}; "
                            f"known: {', '.join(sorted(settings))}.")
        settings[key] = coerce(key, value, settings[key])
    status = directory.status()
    final_step = int(status.get("step") or spec.steps)
    newest_exists = directory.checkpoint.exists()
    checkpoint = load_checkpoint(directory)
    if checkpoint is None:
        raise UserError(f"run {directory.path.name} has no readable checkpoint; train it first.")
    step = int(checkpoint["step"])
    scored = {"scored_step": str(step)}
    if step != final_step:
        source = "checkpoint.prev.pt" if newest_exists else "the previous checkpoint"
        scored["scored_checkpoint"] = (f"{source} (step {step}); checkpoint.pt was unreadable and the run "
                                       f"ended at step {final_step}")
        warn(f"{directory.path.name}: checkpoint.pt is unreadable; scored {source} at step {step}, not the "
             f"run's final step {final_step} (recorded as scored_step={step} in the figures' protocol)")
    real = load_real_data(dataset, spec, data_dir, cache_dir)
    data_shape = tuple(real.samples.shape[1:])
    generator, _ = registry.get("architecture", spec.architecture).build(data_shape, spec.params)
    generator.load_state_dict(checkpoint["generator"])
    generator.to(device)
    context = EvaluationContext(
        generator=generator, latent_dim=int(spec.params["latent_dim"]), data_shape=data_shape,
        dataset_name=spec.dataset, dataset=dataset, real=real, settings=settings, device=device,
        cache_dir=cache_dir, seed=spec.seed, step=step, run_dir=directory.path, params=spec.params,
        training={"device_name": device_description(device)},
        load_split=lambda split: dataset.load(DataRequest(data_dir=data_dir, cache_dir=str(cache_dir / "data"),
                                                          split=split, seed=spec.seed, params=spec.params)))
    evaluation = run_metrics(metrics, context)
    evaluation = Evaluation(evaluation.values, {column: {**protocol, **scored}
                                                for column, protocol in evaluation.protocols.items()})
    append_jsonl(directory.metrics, [{"step": step, "kind": "rescore", **evaluation.values}])
    status = directory.status()
    figures, kept = merge_figures(status.get("metrics", {}), evaluation.values)
    protocol = {**status.get("protocol", {}),
                **{column: text for column, text in evaluation.protocol_columns().items() if column not in kept}}
    if kept:
        warn(f"{directory.path.name}: kept the run's recorded {', '.join(kept)} (eval cannot measure "
             f"{'it' if len(kept) == 1 else 'them'}; only training does)")
    directory.write_status(status["status"], metrics=figures, protocol=protocol)
    return {column: value for column, value in evaluation.values.items() if column not in kept}


@contextlib.contextmanager
def _locked(directories: list[RunDirectory]) -> Iterator[None]:
    """Hold OUT's lock (when the runs are in an output directory) for the whole re-scoring."""
    out = output_directory_of(directories)
    if out is None:
        yield
        return
    with lock_output(out):
        yield


def rescore(path: Path, metric_names: list[str], overrides: Mapping[str, Any], *, registry: Registry,
            device: torch.device, data_dir: str | None, cache_dir: Path,
            on_run=lambda directory, values: None, warn: Warn = lambda message: None) -> int:
    """Re-score every finished run under ``path``; return how many were scored.

    ``warn`` is told, one line each, about what the user should know: an older checkpoint
    scored, recorded figures kept, runs skipped.
    """
    if not metric_names:
        raise UserError("--metrics: name at least one metric (e.g. --metrics fid).")
    directories = find_run_directories(path)
    with _locked(directories):
        finished = [d for d in directories if d.status().get("status") == RunStatus.DONE]
        check_metrics_apply([read_spec(d) for d in finished], metric_names, registry)
        scored = 0
        for directory in finished:
            try:
                with directory.lock():
                    values = rescore_run(directory, metric_names, overrides, registry=registry, device=device,
                                         data_dir=data_dir, cache_dir=cache_dir, warn=warn)
            except RunBusy as busy:
                warn(f"skipped: {busy}")
                continue
            on_run(directory, values)
            scored += 1
        out = output_directory_of(directories)
        if out is not None:
            write_results(out, on_warning=warn)
    return scored
