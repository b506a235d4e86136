"""The ``ganbench`` command. User errors are one line on stderr and exit code 2."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ganbench import __version__
from ganbench.api import PLUGIN_KINDS
from ganbench.errors import UserError
from ganbench.planning.defaults import FAST_PATH_DEFAULTS, FAST_PATH_OFF, PRECISIONS
from ganbench.planning.search import looks_like_distribution
from ganbench.registry import get_registry


def _list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


def _seeds(text: str | None) -> list[int] | None:
    items = _list(text)
    if items is None:
        return None
    try:
        return [int(item) for item in items]
    except ValueError:
        raise UserError(f"--seeds {text!r}: give whole numbers separated by commas, like 0,1,2.") from None


def _sets(pairs: tuple[str, ...]) -> dict[str, list[str]]:
    sets = {}
    for pair in pairs:
        key, equals, values = pair.partition("=")
        if not equals or not key.strip() or not values.strip():
            raise UserError(f"--set {pair!r}: write key=value or key=v1,v2 (for example --set lr=1e-4,2e-4).")
        # a distribution (loguniform(1e-5,1e-3)) is one value, commas and all: ganbench.planning.search parses it
        sets[key.strip()] = [values.strip()] if looks_like_distribution(values) else _list(values)
    return sets


def _setting(value: object) -> str:
    """A fast-path setting as its ``--set`` text (``true``/``false`` for booleans)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _naming(key: str, text: str, flag: str) -> str:
    """``flag`` for an error message, with the setting it implies where the flag does not show it."""
    return f"{flag} (which sets {key}={text})" if flag == "--no-fast-path" else flag


def _fast_path_sets(sets: dict[str, list[str]], flags: dict) -> dict[str, list[str]]:
    """``sets`` (from ``--set``) plus the fast-path flags, each exactly its ``--set key=value``.

    A flag that contradicts ``--no-fast-path`` or a ``--set`` of the same setting is a
    UserError naming both; agreeing ones are accepted.
    """
    from ganbench.planning.grid import parse_value

    chosen: dict[str, tuple[str, str]] = {}  # key -> (value as --set text, the flag that chose it)
    if flags.get("no_fast_path"):
        chosen = {key: (_setting(value), "--no-fast-path") for key, value in FAST_PATH_OFF.items()}
    specific = {"precision": (flags.get("precision"), f"--precision {flags.get('precision')}"),
                "channels_last": (flags.get("channels_last"),
                                  "--channels-last" if flags.get("channels_last") else "--no-channels-last"),
                "compile": (True if flags.get("compile") else None, "--compile"),
                "tf32": (True if flags.get("tf32") else None, "--tf32")}
    for key, (value, flag) in specific.items():
        if value is None:
            continue
        text = _setting(value)
        if key in chosen and parse_value(chosen[key][0]) != parse_value(text):
            raise UserError(f"{flag} conflicts with {_naming(key, *chosen[key])}; give one of them.")
        chosen[key] = (text, flag)
    merged = dict(sets)
    for key, (text, flag) in chosen.items():
        if key in sets and [parse_value(v) for v in sets[key]] != [parse_value(text)]:
            raise UserError(f"{_naming(key, text, flag)} conflicts with --set {key}={','.join(sets[key])}; "
                            f"give one of them.")
        merged[key] = [text]
    return merged


def _gpus_visible() -> bool:
    from ganbench.execution.devices import visible_gpus

    return bool(visible_gpus())


def _gpu_list(text: str | None) -> list[int] | None:
    items = _list(text)
    if not items:
        return None
    try:
        return [int(item) for item in items]
    except ValueError:
        raise UserError(f"--gpus {text!r}: give GPU indices separated by commas, like 0,2.") from None


def _data_dir(flag: str | None) -> str | None:
    """``--data-dir``, else ``GANBENCH_DATA_DIR``, else None; a folder named that does not exist is an error."""
    named, value = ("--data-dir", flag) if flag else ("GANBENCH_DATA_DIR", os.environ.get("GANBENCH_DATA_DIR"))
    if value and not Path(value).expanduser().is_dir():
        raise UserError(f"{named} {value}: no such directory; give the folder that holds the datasets, "
                        f"or leave it out to use the built-in and cached ones.")
    return value or None


def default_cache_dir() -> Path:
    """``GANBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/ganbench``, else ``~/.cache/ganbench``."""
    if os.environ.get("GANBENCH_CACHE_DIR"):
        return Path(os.environ["GANBENCH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ganbench"


@click.group()
@click.version_option(__version__, prog_name="ganbench")
@click.option("--disable-plugin", "disabled", multiple=True, metavar="NAME",
              help="Leave out a plugin (entry point, dist:name or distribution); repeatable.")
@click.pass_context
def cli(context: click.Context, disabled: tuple[str, ...]) -> None:
    """Benchmark GAN losses, architectures and datasets on a grid."""
    context.obj = {"disabled": disabled}


def _registry(context: click.Context):
    return get_registry(tuple(context.obj.get("disabled", ())) if context.obj else ())


@cli.command()
@click.argument("grid_file", required=False, type=click.Path(dir_okay=False))
@click.option("--preset", help="A named grid that ships with ganbench (e.g. quickstart).")
@click.option("--archs", help="Architectures, comma-separated (e.g. mlp,dcgan).")
@click.option("--losses", help="Losses, comma-separated (e.g. minimax,lsgan,wgan-gp).")
@click.option("--datasets", help="Datasets, comma-separated (e.g. ring8,mnist).")
@click.option("--seeds", help="Seeds, comma-separated (e.g. 0,1,2).")
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2",
              help="A hyperparameter axis (e.g. --set lr=1e-4,2e-4) or distribution (--set 'lr=loguniform(1e-5,1e-3)', "
                   "uniform(a,b), choice(a,b,c): needs --budget); repeatable.")
@click.option("--budget", type=int, default=None, metavar="N",
              help="Random search: draw N settings per architecture, loss and dataset from the --set distributions "
                   "(docs/search.md).")
@click.option("--search-seed", type=int, default=None, metavar="S",
              help="Seed of the --budget draws (default 0); the same seed draws the same settings.")
@click.option("--winner-seeds", type=int, default=None, metavar="K",
              help="After a --budget search, re-run each cell's best setting with K new seeds.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help=f"Training precision; auto: bf16 autocast on images where the device computes bf16 "
                   f"natively, else fp32 (default {FAST_PATH_DEFAULTS['precision']}).")
@click.option("--channels-last/--no-channels-last", default=None,
              help=f"NHWC layout for convolutional models and image data "
                   f"(default {'on' if FAST_PATH_DEFAULTS['channels_last'] else 'off'}).")
@click.option("--compile", is_flag=True, default=None,
              help=f"torch.compile the models; pays only in long runs "
                   f"(default {'on' if FAST_PATH_DEFAULTS['compile'] else 'off'}).")
@click.option("--tf32", is_flag=True, default=None,
              help=f"TF32 matmuls and convolutions while training on CUDA "
                   f"(default {'on' if FAST_PATH_DEFAULTS['tf32'] else 'off'}).")
@click.option("--no-fast-path", is_flag=True, default=None,
              help="Every fast-path setting off: the plain fp32 loop. A fast-path flag or --set that "
                   "contradicts it is an error, not an override.")
@click.option("--steps", type=int, help="Generator steps per run.")
@click.option("--batch-size", type=int, help="Real samples per discriminator step.")
@click.option("--split", help="Dataset split to train on (train or test).")
@click.option("--metrics", help="Metrics, comma-separated; 'auto' = every one that applies, 'none' = none.")
@click.option("--eval-every", type=int, help="Also evaluate every N steps (default: only at the end).")
@click.option("--save-samples", is_flag=True, default=None, help="Keep the final evaluation's samples (npz).")
@click.option("--out", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Output directory.")
@click.option("--data-dir", type=click.Path(), default=None,
              help="Where datasets are read from (default: GANBENCH_DATA_DIR, else download to the cache).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Downloads, extractors and real-data statistics (default: ~/.cache/ganbench).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: worker processes on this machine; ray: Ray tasks (pip install 'ganbench[ray]').")
@click.option("--address", default=None, metavar="ADDRESS",
              help="Ray cluster to use with --executor ray (default: start a local Ray instance).")
@click.option("--workers", type=int, default=None, metavar="N",
              help="CPU runs at once, the cores divided between them (default: as many as pay, from the "
                   "cores, the runs and the models' size, said in the first line; Ray: 1 CPU per run).")
@click.option("--gpus", default=None, metavar="0,2", help="GPUs to use (default: every visible GPU).")
@click.option("--runs-per-gpu", type=int, default=1, show_default=True, metavar="K",
              help="Worker processes sharing each GPU.")
@click.option("--pack", type=int, default=1, show_default=True, metavar="N",
              help="Train up to N runs that differ only in seed or learning rate as one stacked model "
                   "per worker (torch.func.vmap).")
@click.option("--retries", type=int, default=1, show_default=True, metavar="N",
              help="Times a run is tried again when its worker process dies (not on Python errors).")
@click.option("--quiet", is_flag=True, help="Plain log lines instead of live progress (for CI and batch jobs).")
@click.pass_context
def run(context: click.Context, grid_file: str | None, preset: str | None, sets: tuple[str, ...],
        out: str, data_dir: str | None, cache_dir: str | None, device: str, executor: str,
        address: str | None, workers: int | None, gpus: str | None, runs_per_gpu: int, retries: int,
        pack: int, quiet: bool, **flags) -> None:
    """Train and evaluate every run of a grid; finished runs are skipped, unfinished ones resume.

    With no grid file, preset or axis flags this runs the offline `quickstart` preset.
    Each flag replaces its axis of the grid file or preset. Each run trains in its own
    worker process; Ctrl-C checkpoints the running runs (twice: stop at once), and the
    same command again resumes them.

    The fast-path flags (--precision to --no-fast-path) are the same as their --set
    (--tf32 is --set tf32=true) and give the same run ids; a flag and a --set that
    disagree on a setting are an error.
    """
    from ganbench.execution.runner import RunOptions, choose_workers, iter_statuses, run_grid
    from ganbench.ledger.storage import ensure_writable_directory
    from ganbench.planning.grid import GridSpec, load_grid_file, load_preset, without_keys
    from ganbench.planning.search import plan_runs, record_draws

    if grid_file and preset:
        raise UserError("give either a grid file or --preset, not both.")
    if grid_file:
        grid = load_grid_file(grid_file)
    elif preset:
        grid = load_preset(preset)
    else:
        grid = load_preset("quickstart")
        if flags["archs"] or flags["datasets"]:
            # The quickstart's hyperparameters, batch and schedule are tuned for its mlp on ring8;
            # other models and data start from the generic defaults, keeping its losses and seeds.
            grid = GridSpec(losses=grid.losses, seeds=grid.seeds)
    grid = grid.replace(
        archs=_list(flags["archs"]), losses=_list(flags["losses"]), datasets=_list(flags["datasets"]),
        seeds=_seeds(flags["seeds"]), metrics=_list(flags["metrics"]), steps=flags["steps"],
        batch_size=flags["batch_size"], split=flags["split"], eval_every=flags["eval_every"],
        save_samples=flags["save_samples"], budget=flags["budget"], search_seed=flags["search_seed"],
        winner_seeds=flags["winner_seeds"])
    command_line_sets = _fast_path_sets(_sets(sets), flags)
    grid.sets = {**grid.sets, **command_line_sets}
    grid.per_plugin = without_keys(grid.per_plugin, command_line_sets)  # --set wins over [loss.NAME] tables
    registry = _registry(context)
    plan = plan_runs(grid, registry)  # a plain grid, or --budget draws (ganbench.planning.search)
    runs = plan.runs
    if grid.winner_seeds and not plan.draws:
        raise UserError("--winner-seeds re-runs the best settings of a search; add --budget N and a "
                        "--set distribution, like --set 'lr=loguniform(1e-5,1e-3)'.")
    console = Console(stderr=False, soft_wrap=quiet)  # --quiet: one line per message, never wrapped
    if retries < 0:
        raise UserError(f"--retries {retries}: give 0 or more.")
    if pack < 1:
        raise UserError(f"--pack {pack}: give 1 (no packing) or more.")
    if address and executor != "ray":
        raise UserError("--address names a Ray cluster; add --executor ray.")
    options = RunOptions(out=Path(out), cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                         data_dir=_data_dir(data_dir),
                         device=device, quiet=quiet, executor=executor, address=address, workers=workers,
                         gpus=_gpu_list(gpus), runs_per_gpu=runs_per_gpu, retries=retries,
                         pack=pack, disabled=tuple(context.obj.get("disabled", ())) if context.obj else ())
    workers_chosen = choose_workers(runs, registry, options)  # without --workers: as many as pay
    console.print(f"ganbench {__version__}: {len(runs)} run(s) -> {options.out}"
                  + (f"; {workers_chosen}" if workers_chosen else ""), highlight=False)
    if plan.draws:
        console.print(f"random search: {grid.budget} setting(s) drawn per architecture, loss and dataset "
                      f"(search seed {grid.search_seed})", highlight=False)
    if pack > 1 and executor == "local" and (device == "cpu" or not _gpus_visible()):
        console.print("[yellow]note:[/yellow] --pack trains on the CPU here, where stacking runs is rarely "
                      "faster (measured 0.7-1.0x, docs/performance.md); --workers N is the CPU's way.")
    resume = "to resume, run the same command again: " + shlex.join(["ganbench", *sys.argv[1:]])
    try:
        if plan.draws:  # which runs are draws of a search, for the report and the second stage
            record_draws(ensure_writable_directory(options.out), plan.draws)
        summary = run_grid(runs, registry, options, console)
        if grid.winner_seeds > 0 and not summary.interrupted:
            from ganbench.report.search import second_stage_runs

            winners = second_stage_runs(options.out, {(d.architecture, d.loss, d.dataset) for d in plan.draws},
                                        grid.winner_seeds, registry)
            console.print(f"second stage: each cell's best setting with {grid.winner_seeds} new seed(s): "
                          f"{len(winners)} run(s)")
            second = run_grid(winners, registry, options, console) if winners else None
            if second is not None:
                summary.statuses.update(second.statuses)
                summary.interrupted = second.interrupted
    except KeyboardInterrupt:
        print(f"ganbench: stopped at once (the running runs lose the steps since their last "
              f"checkpoint); {resume}", file=sys.stderr)
        context.exit(130)
    counts = ", ".join(f"{count} {status}" for status, count in iter_statuses(summary))
    console.print(f"results: {options.out / 'results.csv'} ({counts})")
    if summary.statuses and not summary.interrupted:
        from ganbench.report import write_report

        try:
            report_dir = write_report([options.out], console)
            console.print(f"report: {report_dir}")
        except Exception as error:  # the results are safe on disk; a report problem must not hide them
            print(f"ganbench: warning: could not write the report ({error}); "
                  f"try: ganbench report {options.out}", file=sys.stderr)
    if summary.interrupted:
        console.print(f"interrupted: the running runs were checkpointed; {resume}", highlight=False)
        context.exit(130)
    if not summary.all_finished:
        context.exit(1)


@cli.command()
@click.option("--verbose", "-v", is_flag=True, help="Also show each plugin's module and hooks.")
@click.pass_context
def plugins(context: click.Context, verbose: bool) -> None:
    """List installed plugins and everything they provide, by kind."""
    registry = _registry(context)
    console = Console()
    for kind in PLUGIN_KINDS:
        table = Table(title=PLUGIN_KINDS[kind].plural.capitalize(), title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        if kind == "dataset":
            table.add_column("source")
        table.add_column("from")
        for entry in registry.all(kind):
            # Plugin-supplied text is escaped: rich would take "[...]" in it for markup.
            row = [entry.name, escape(entry.obj.description)]
            if kind == "dataset":
                row.append(escape(entry.obj.source))
            row.append(f"{entry.plugin.distribution} {entry.plugin.version}")
            table.add_row(*row)
        console.print(table)
    for kind, name, entries in registry.conflicts():
        owners = " and ".join(e.plugin.name for e in entries)
        console.print(f"[red]conflict:[/red] {kind} '{name}' is registered by {escape(owners)}")
    broken = [info for info in registry.plugins if info.error]
    for info in broken:
        console.print(f"[red]skipped plugin {escape(info.name)} ({escape(info.version)}):[/red] {escape(info.error)}")
    if verbose:
        table = Table(title="Plugins", title_justify="left")
        for column in ("plugin", "distribution", "version", "module", "hooks", "status"):
            table.add_column(column)
        for info in registry.plugins:
            table.add_row(escape(info.name), info.distribution, escape(info.version), escape(info.module),
                          ", ".join(info.hooks), "error" if info.error else "ok")
        console.print(table)


@cli.command("eval")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--metrics", required=True, help="Metrics to compute, comma-separated (e.g. fid,kid).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="An evaluation setting (e.g. --set fid_samples=50000); repeatable.")
@click.option("--data-dir", type=click.Path(), default=None, help="Where datasets are read from.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="ganbench's cache.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.pass_context
def eval_command(context: click.Context, path: str, metrics: str, sets: tuple[str, ...],
                 data_dir: str | None, cache_dir: str | None, device: str) -> None:
    """Re-score finished runs (OUT or OUT/runs/<id>) from their checkpoints, without training."""
    from ganbench.execution.devices import resolve_device
    from ganbench.execution.rescore import rescore

    overrides = {}
    for key, values in _sets(sets).items():
        if len(values) != 1:
            raise UserError(f"--set {key}: an evaluation setting takes one value.")
        overrides[key] = values[0]
    console = Console()
    count = rescore(Path(path), _list(metrics) or [], overrides, registry=_registry(context),
                    device=resolve_device(device), data_dir=_data_dir(data_dir),
                    cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                    on_run=lambda directory, values: console.print(
                        f"{directory.path.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())),
                    warn=lambda message: console.print(f"[yellow]warning:[/yellow] {escape(message)}",
                                                       highlight=False))
    console.print(f"re-scored {count} finished run(s) under {path}")


def _add_plugin_commands(registry) -> None:
    skipped = {info.name for info in registry.plugins if info.error}
    for impl in registry.manager.hook.register_commands.get_hookimpls():
        if impl.plugin_name in skipped:  # a plugin reported as skipped adds nothing, commands included
            continue
        try:
            impl.function(cli=cli)
        except Exception as error:  # a broken plugin must not take the CLI down
            print(f"ganbench: warning: plugin {impl.plugin_name} failed to add commands: {error}",
                  file=sys.stderr)


def disabled_plugins(argv: list[str]) -> tuple[str, ...]:
    """The ``--disable-plugin`` values given before the subcommand (read before click parses, so a
    disabled plugin's commands are never added)."""
    disabled = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--disable-plugin":
            disabled.append(next(arguments, ""))
        elif argument.startswith("--disable-plugin="):
            disabled.append(argument.split("=", 1)[1])
        elif not argument.startswith("-"):  # the subcommand: what follows is its own
            break
    return tuple(name for name in disabled if name)


def hoist_disable_plugin(argv: list[str]) -> list[str]:
    """``argv`` with every ``--disable-plugin NAME`` moved before the subcommand, where it belongs.

    ``ganbench run --disable-plugin x`` then means ``ganbench --disable-plugin x run``.
    """
    hoisted, rest = [], []
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--disable-plugin":
            hoisted += [argument, next(arguments, "")]
        elif argument.startswith("--disable-plugin="):
            hoisted.append(argument)
        else:
            rest.append(argument)
    return hoisted + rest


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    argv = hoist_disable_plugin(sys.argv[1:] if argv is None else list(argv))
    try:
        _add_plugin_commands(get_registry(disabled_plugins(argv)))
        result = cli.main(args=argv, prog_name="ganbench", standalone_mode=False)
    except UserError as error:
        print(f"ganbench: error: {error}", file=sys.stderr)
        sys.exit(2)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "ganbench"
        print(f"ganbench: error: {error.format_message()} (see {command} --help)", file=sys.stderr)
        sys.exit(2)
    except click.ClickException as error:
        print(f"ganbench: error: {error.format_message()}", file=sys.stderr)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, click.Abort):
        print("ganbench: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


from ganbench.report import report_command  # noqa: E402  (ganbench.report imports nothing from here)
cli.add_command(report_command)
