"""Packing: runs trained together as one stacked model train what each trains alone.

Each test trains the same runs twice, alone (``execute_run``) and packed
(``execute_pack``), and compares the files they leave: every weight, buffer (BatchNorm
statistics) and optimiser moment must agree to floating-point rounding, which only a
run that kept its own seed, data and noise streams, learning rates, optimiser state and
global RNG (WGAN-GP draws its interpolation weights from it) can do.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest
import torch

from ganbench.api import Loss
from ganbench.errors import Interrupted
from ganbench.execution.executors.base import GridState, RunOptions, WorkerResult
from ganbench.execution.recording import execute_pack, execute_run
from ganbench.ledger.runs import results_rows
from ganbench.ledger.storage import read_json, read_jsonl
from ganbench.planning.grid import GridSpec, expand
from ganbench.planning.spec import RunSpec
from ganbench.registry import build_registry
from ganbench.ledger.runs import run_directory
from ganbench.training import loop, packing
from ganbench.training.loop import gan_step, train_step, train_to_end
from ganbench.training.packing import Stacked, plan_packs, train_together
from ganbench.training.state import RunState

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def grid_runs(registry, architecture: str = "mlp", loss: str = "ns", dataset: str = "ring8", seeds=(0, 1, 2),
              steps: int = 12, **sets) -> list[RunSpec]:
    # float32 images: under precision=auto a CPU with native bfloat16 (AVX512-BF16, AMX) trains
    # images in bfloat16, whose rounding (not packing) would then set how far the two agree.
    small = {"mlp": {"mlp_width": [32], "mlp_depth": [2]},
             "dcgan": {"dcgan_width": [8], "precision": ["fp32"]}}[architecture]
    if dataset == "ring8":
        small["num_points"] = [2000]
    grid = GridSpec(archs=[architecture], losses=[loss], datasets=[dataset], seeds=list(seeds), steps=steps,
                    batch_size=16, metrics=["none"], checkpoint_every=5, sample_every=1000, log_every=2,
                    sets={**small, **{key: list(values) for key, values in sets.items()}})
    return expand(grid, registry)


def train_alone(specs, out: Path, registry, cache_dir, data_dir=None) -> dict:
    return {spec.run_id: execute_run(spec, out, registry=registry, device=CPU, data_dir=data_dir,
                                     cache_dir=cache_dir) for spec in specs}


def train_packed(specs, out: Path, registry, cache_dir, data_dir=None, should_stop=lambda: False) -> dict:
    return execute_pack(specs, out, registry=registry, device=CPU, data_dir=data_dir, cache_dir=cache_dir,
                        should_stop=should_stop)


def checkpoint(out: Path, spec: RunSpec) -> dict:
    return torch.load(out / "runs" / spec.run_id / "checkpoint.pt", map_location="cpu", weights_only=True)


def tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) checkpoint, by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        return {key: value for name, item in state.items() for key, value in tensors(item, f"{prefix}/{name}").items()}
    if isinstance(state, (list, tuple)):
        return {key: value for i, item in enumerate(state) for key, value in tensors(item, f"{prefix}/{i}").items()}
    return {}


def assert_same_training(alone: dict, packed: dict, tolerance: float) -> None:
    """Models and optimiser states agree to ``tolerance`` (relative to each tensor's scale)."""
    for part in ("generator", "discriminator", "optimizer_g", "optimizer_d"):
        first, second = tensors(alone[part]), tensors(packed[part])
        assert first.keys() == second.keys()
        for key, value in first.items():
            other = second[key]
            if not value.is_floating_point():
                assert torch.equal(value, other), f"{part}{key} differs"
                continue
            scale = value.abs().max().item() or 1.0
            gap = (value - other).abs().max().item()
            assert gap <= tolerance * scale, f"{part}{key}: packed differs by {gap:.3g} (scale {scale:.3g})"
    assert alone["step"] == packed["step"]


def train_losses(out: Path, spec: RunSpec) -> list[float]:
    """d_loss, g_loss and penalty of every logged step, in order."""
    records, _ = read_jsonl(out / "runs" / spec.run_id / "metrics.jsonl")
    return [r[key] for r in records if r["kind"] == "train" for key in ("d_loss", "g_loss", "penalty")]


def test_runs_that_differ_in_seed_or_learning_rate_are_packed_together_and_nothing_else(registry):
    runs = expand(GridSpec(archs=["mlp"], losses=["ns", "lsgan"], datasets=["ring8"], seeds=[0, 1, 2],
                           steps=10, metrics=["none"], sets={"lr": [1e-4, 2e-4]}), registry)
    packs = plan_packs(runs, 4)

    assert sorted(spec.run_id for pack in packs for spec in pack) == sorted(spec.run_id for spec in runs)
    assert [len(pack) for pack in packs] == [4, 2, 4, 2]
    for pack in packs:
        assert len({spec.loss for spec in pack}) == 1
    assert {spec.params["lr_g"] for spec in packs[0]} == {1e-4, 2e-4}, "learning rates may differ within a pack"
    assert plan_packs(runs, 1) == [(spec,) for spec in runs]


@pytest.mark.parametrize("architecture,loss,dataset,sets,tolerance", [
    ("mlp", "ns", "ring8", {"lr": [1e-4, 3e-4]}, 1e-4),  # different learning rates in one pack
    ("mlp", "wgan", "ring8", {}, 1e-4),  # RMSprop, 5 critic steps, weight clipping after each
    # convolutions and BatchNorm statistics. Grouped (stacked) and single convolutions round
    # differently, and Adam turns a rounding-level change of a near-zero gradient into a
    # change of its step: seen up to 1.6e-4 of the scale after 6 steps on an AVX512 Xeon
    # (2e-5 on an AVX2 EPYC); a run that trained on another stream differs by ~1e-2.
    ("dcgan", "lsgan", "mnist", {}, 3e-4),
    ("dcgan", "wgan-gp", "mnist", {}, 1e-3),  # a gradient penalty drawing from the global RNG
])
def test_packed_runs_train_what_each_run_trains_alone(tmp_path, registry, cache_dir, shared_data_dir, architecture,
                                                      loss, dataset, sets, tolerance):
    specs = grid_runs(registry, architecture, loss, dataset, steps=6 if architecture == "dcgan" else 12, **sets)
    data_dir = str(shared_data_dir / "mnist")
    alone = train_alone(specs, tmp_path / "alone", registry, cache_dir, data_dir)
    packed = train_packed(specs, tmp_path / "packed", registry, cache_dir, data_dir)

    assert {outcome.status for outcome in alone.values()} == {outcome.status for outcome in packed.values()} == {"done"}
    for spec in specs:
        assert_same_training(checkpoint(tmp_path / "alone", spec), checkpoint(tmp_path / "packed", spec), tolerance)
        assert train_losses(tmp_path / "packed", spec) == pytest.approx(train_losses(tmp_path / "alone", spec),
                                                                         rel=1e-3, abs=1e-5)
        status = read_json(tmp_path / "packed" / "runs" / spec.run_id / "status.json")
        assert f"{len(specs)} runs as one stacked model" in status["protocol"]["training_packing"]
        assert status["placement"]["pack"] == len(specs)
    first, second = (checkpoint(tmp_path / "packed", spec)["generator"] for spec in specs[:2])
    assert any(not torch.equal(first[key], second[key]) for key in first), "each run keeps its own seed"


def test_models_vmap_cannot_stack_train_one_after_another_exactly_as_alone(tmp_path, registry, cache_dir,
                                                                           shared_data_dir):
    specs = grid_runs(registry, "dcgan", "hinge", "mnist", seeds=(0, 1), steps=3, dcgan_spectral_norm=[True])
    data_dir = str(shared_data_dir / "mnist")
    train_alone(specs, tmp_path / "alone", registry, cache_dir, data_dir)
    outcomes = train_packed(specs, tmp_path / "packed", registry, cache_dir, data_dir)

    assert {outcome.status for outcome in outcomes.values()} == {"done"}
    for spec in specs:
        assert_same_training(checkpoint(tmp_path / "alone", spec), checkpoint(tmp_path / "packed", spec), 0.0)
        log = (tmp_path / "packed" / "runs" / spec.run_id / "log.txt").read_text()
        assert "trained alone: vmap cannot stack dcgan's modules" in log
        protocol = read_json(tmp_path / "packed" / "runs" / spec.run_id / "status.json")["protocol"]
        assert protocol["training_packing"].startswith("asked to pack, trained alone")


def test_an_interrupted_pack_resumes_to_what_an_uninterrupted_pack_trains(tmp_path, registry, cache_dir):
    specs = grid_runs(registry, steps=12)
    train_packed(specs, tmp_path / "whole", registry, cache_dir)
    first_metrics = tmp_path / "resumed" / "runs" / specs[0].run_id / "metrics.jsonl"

    def stop_once_step_six_is_logged() -> bool:
        return any(record["step"] >= 6 for record in read_jsonl(first_metrics)[0])

    with pytest.raises(Interrupted):
        train_packed(specs, tmp_path / "resumed", registry, cache_dir, should_stop=stop_once_step_six_is_logged)
    for spec in specs:
        assert read_json(tmp_path / "resumed" / "runs" / spec.run_id / "status.json")["status"] == "interrupted"
        assert checkpoint(tmp_path / "resumed", spec)["step"] == 6, "every run of the pack checkpointed at the stop"
    train_packed(specs, tmp_path / "resumed", registry, cache_dir)

    for spec in specs:
        assert_same_training(checkpoint(tmp_path / "whole", spec), checkpoint(tmp_path / "resumed", spec), 0.0)
        assert train_losses(tmp_path / "resumed", spec) == train_losses(tmp_path / "whole", spec)


def test_runs_resumed_at_different_steps_catch_up_before_training_together(tmp_path, registry, cache_dir):
    specs = grid_runs(registry, seeds=(0, 1), steps=12)
    train_alone(specs, tmp_path / "alone", registry, cache_dir)
    metrics = tmp_path / "packed" / "runs" / specs[0].run_id / "metrics.jsonl"

    with pytest.raises(Interrupted):  # the first run alone reaches step 4 and checkpoints there
        execute_run(specs[0], tmp_path / "packed", registry=registry, device=CPU, data_dir=None, cache_dir=cache_dir,
                    should_stop=lambda: any(record["step"] >= 4 for record in read_jsonl(metrics)[0]))
    assert checkpoint(tmp_path / "packed", specs[0])["step"] == 4
    outcomes = train_packed(specs, tmp_path / "packed", registry, cache_dir)

    assert {outcome.status for outcome in outcomes.values()} == {"done"}
    for spec in specs:
        assert_same_training(checkpoint(tmp_path / "alone", spec), checkpoint(tmp_path / "packed", spec), 1e-4)


class NanForOneLearningRate(Loss):
    """The non-saturating loss, NaN for the run whose ``lr_d`` is 0.0007 from its 5th step on."""

    name = "nan-for-one-lr"
    description = "Test loss that diverges for one learning rate"
    defaults = {"n_critic": 1}

    def __init__(self):
        self.calls: dict[float, int] = {}

    def discriminator_loss(self, real_logits, fake_logits, params):
        count = self.calls[params["lr_d"]] = self.calls.get(params["lr_d"], 0) + 1
        value = torch.nn.functional.softplus(-real_logits).mean() + torch.nn.functional.softplus(fake_logits).mean()
        return value * float("nan") if params["lr_d"] == 0.0007 and count >= 5 else value

    def generator_loss(self, fake_logits, real_logits, params):
        return torch.nn.functional.softplus(-fake_logits).mean()


def test_a_run_that_diverges_leaves_the_pack_and_the_others_finish(tmp_path, registry_with, cache_dir):
    registry = registry_with(("loss", NanForOneLearningRate()))
    specs = grid_runs(registry, loss="nan-for-one-lr", seeds=(0,), steps=12, lr_d=[0.0002, 0.0007, 0.0003])
    outcomes = train_packed(specs, tmp_path, registry, cache_dir)

    by_lr = {spec.params["lr_d"]: outcomes[spec.run_id] for spec in specs}
    assert by_lr[0.0007].status == "diverged" and "non-finite loss at step 5" in by_lr[0.0007].error
    assert by_lr[0.0002].status == by_lr[0.0003].status == "done"
    rows = {row["run_id"]: row for row in results_rows(tmp_path)}
    assert sorted(row["status"] for row in rows.values()) == ["diverged", "done", "done"]


def test_a_pack_whose_worker_died_retries_only_the_runs_that_did_not_report_an_end(tmp_path, registry):
    specs = grid_runs(registry)
    reported = []

    class Reporter:
        def started(self, spec, where): pass

        def progress(self, spec, step, total, rate): pass

        def warning(self, spec, message): pass

        def finished(self, spec, status, error):
            reported.append((spec.run_id, status))

    state = GridState(specs, RunOptions(out=tmp_path, cache_dir=tmp_path / "cache", pack=3, retries=1), Reporter())
    pack, attempt = state.next()
    assert pack == tuple(specs) and attempt == 1
    died = WorkerResult(ends={specs[0].run_id: {"status": "done", "recorded": True}}, exit_code=-9)
    state.settle(pack, attempt, died, stopping=False)

    assert reported == [(specs[0].run_id, "done")]
    again, attempt = state.next()
    assert again == tuple(specs[1:]) and attempt == 2


def test_ganbench_run_pack_trains_a_grid_in_packs_through_the_worker_processes(tmp_path, cache_dir, capsys):
    from ganbench.cli import main

    def ganbench(*arguments: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main(list(arguments))
        out, err = capsys.readouterr()
        return exited.value.code, out, err

    arguments = ["run", "--archs", "mlp", "--losses", "ns,lsgan", "--datasets", "ring8", "--seeds", "0,1",
                 "--steps", "20", "--batch-size", "16", "--metrics", "modes", "--set", "mlp_width=32",
                 "--set", "num_points=2000", "--set", "modes_samples=500", "--out", str(tmp_path / "out"),
                 "--cache-dir", str(cache_dir), "--quiet"]
    code, out, err = ganbench(*arguments, "--pack", "2")
    assert code == 0, out + err
    assert ("--pack trains on the CPU here" in out) == (not torch.cuda.is_available())  # a note on CPUs only

    rows = results_rows(tmp_path / "out")
    assert len(rows) == 4 and {row["status"] for row in rows} == {"done"}
    assert all(float(row["modes_covered"]) >= 0 for row in rows)
    statuses = [read_json(tmp_path / "out" / "runs" / row["run_id"] / "status.json") for row in rows]
    assert {status["placement"]["pack"] for status in statuses} == {2}
    outputs = [(tmp_path / "out" / "runs" / row["run_id"] / "output.txt").read_text() for row in rows]
    assert sum("packed with" in text and "the worker's output is in" in text for text in outputs) == 2

    code, out, err = ganbench(*arguments, "--pack", "2")
    assert code == 0 and "4 of 4 runs already finished" in out
    code, out, err = ganbench(*arguments, "--pack", "0")
    assert code == 2 and err.strip() == "ganbench: error: --pack 0: give 1 (no packing) or more."


LOOP_PIECES = {"should_stop": "should_stop", "stop": "stop", "_stop": "stop",
               "set_learning_rates": "set_learning_rates", "learning_rate_factor": "learning_rate_factor",
               "start_timing": "start_timing", "train_step": "step", "gan_step": "step", "record": "record",
               "after": "Due.after", "pause_timing": "pause_timing", "at_boundary": "at_boundary", "finish": "finish"}
"""What ``loop_pieces`` reports a call of each name as (the two loops' own names for one piece made one)."""


def loop_pieces(function) -> list[str]:
    """The training loop's pieces that ``function`` calls, in the order of its source (either step is "step")."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    calls = sorted((node for node in ast.walk(tree) if isinstance(node, ast.Call)),
                   key=lambda call: (call.lineno, call.col_offset))
    names = [call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "") for call in calls]
    return [LOOP_PIECES[name] for name in names if name in LOOP_PIECES]


def test_a_pack_trains_with_the_pieces_of_the_loop_of_one_run_in_the_same_order():
    alone = loop_pieces(train_to_end)
    assert alone == ["should_stop", "stop", "set_learning_rates", "learning_rate_factor", "start_timing", "step",
                     "record", "Due.after", "pause_timing", "at_boundary", "finish"]
    assert loop_pieces(train_together) == alone


class RecordingLoss(Loss):
    """The non-saturating loss that records every hook call: which run (by ``lr_d``), the D
    module it got, the logits' shape, and a draw from torch's global RNG."""

    name = "recording"
    description = "Test loss that records its hooks' calls"
    defaults = {"n_critic": 2}
    generator_needs_real_logits = True

    def __init__(self):
        self.calls: list[tuple] = []

    def _record(self, hook, params, discriminator=None, logits=None):
        self.calls.append((params["lr_d"], hook, id(discriminator) if discriminator is not None else None,
                           None if logits is None else tuple(logits.shape), torch.rand(()).item()))

    def penalty(self, discriminator, real, fake, params):
        self._record("penalty", params, discriminator)
        return None

    def discriminator_loss(self, real_logits, fake_logits, params):
        self._record("discriminator_loss", params, logits=real_logits)
        return torch.nn.functional.softplus(-real_logits).mean() + torch.nn.functional.softplus(fake_logits).mean()

    def after_discriminator_step(self, discriminator, params):
        self._record("after_discriminator_step", params, discriminator)

    def generator_loss(self, fake_logits, real_logits, params):
        assert real_logits is not None and real_logits.shape == fake_logits.shape
        self._record("generator_loss", params, logits=fake_logits)
        return torch.nn.functional.softplus(-fake_logits).mean()


def test_the_step_calls_a_loss_plugins_hooks_in_the_documented_order_alone_and_packed(tmp_path, registry_with,
                                                                                      cache_dir):
    # gan_step's docstring is what a plugin author reads: per D step penalty, discriminator_loss,
    # after_discriminator_step; then generator_loss. Packed, each run's hooks get its own D module,
    # its own logits ([batch], as alone) and its own state of torch's global RNG (the draws).
    loss = RecordingLoss()
    registry = registry_with(("loss", loss))
    specs = [spec for spec in grid_runs(registry, loss="recording", seeds=(0, 1), lr_d=[0.0002, 0.0003])
             if (spec.seed, spec.params["lr_d"]) in ((0, 0.0002), (1, 0.0003))]  # own seeds: own global RNGs

    def build(spec, name):
        return RunState(spec, run_directory(tmp_path / name, spec), registry=registry, device=CPU, data_dir=None,
                        cache_dir=cache_dir)

    def hooks_of(run, calls):
        own = [call for call in calls if call[0] == run.params["lr_d"]]
        assert all(call[2] in (None, id(run.discriminator)) for call in own)
        return [(hook, shape, draw) for _, hook, _, shape, draw in own]

    alone = {}
    for spec in specs:
        run = build(spec, "alone")
        loss.calls.clear()
        for _ in range(2):
            train_step(run)
        alone[spec.run_id] = hooks_of(run, loss.calls)
    one_step = ["penalty", "discriminator_loss", "after_discriminator_step"] * 2 + ["generator_loss"]
    assert [hook for hook, _, _ in alone[specs[0].run_id]] == one_step * 2
    assert {shape for _, shape, _ in alone[specs[0].run_id] if shape} == {(16,)}

    runs = [build(spec, "packed") for spec in specs]
    loss.calls.clear()
    group = Stacked(runs)
    for _ in range(2):
        assert len(gan_step(group)) == 2
    for run in runs:
        assert hooks_of(run, loss.calls) == alone[run.spec.run_id]


def test_the_steps_arithmetic_is_written_once():
    """Only the loop's two steps (:func:`gan_step`, and :func:`simultaneous_step` for
    ``updates=simultaneous``) call a loss plugin's step hooks or an optimiser's step; packing has no copy."""
    hooks = {"penalty", "discriminator_loss", "generator_loss", "after_discriminator_step", "step"}
    callers = set()
    for module in (loop, packing):
        for function in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(function, ast.FunctionDef):
                for call in ast.walk(function):
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in hooks:
                        callers.add(f"{module.__name__}.{function.name}")
    assert callers == {"ganbench.training.loop.gan_step", "ganbench.training.loop.simultaneous_step"}
