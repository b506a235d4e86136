"""The ``ganbench`` command. User errors are one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ganbench import __version__
from ganbench.errors import UserError
from ganbench.registry import KINDS, PLURAL, get_registry

GRID_AXES = ("archs", "losses", "datasets", "seeds", "metrics")


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
        sets[key.strip()] = _list(values)
    return sets


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
              help="A hyperparameter axis (e.g. --set lr=1e-4,2e-4); repeatable.")
@click.option("--steps", type=int, help="Generator steps per run.")
@click.option("--batch-size", type=int, help="Real samples per discriminator step.")
@click.option("--split", help="Dataset split to train on (train or test).")
@click.option("--metrics", help="Metrics, comma-separated; 'auto' = every one that applies, 'none' = none.")
@click.option("--eval-every", type=int, help="Also evaluate every N steps (default: only at the end).")
@click.option("--save-samples", is_flag=True, default=None, help="Keep the final evaluation's samples (npz).")
@click.option("--out", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Output directory.")
@click.option("--data-dir", type=click.Path(), default=None,
              help="Where datasets are read from (default: GANBENCH_DATA_DIR, else download to the cache).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Downloads, extractors and real-data statistics (default: ~/.cache/ganbench).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--quiet", is_flag=True, help="Plain log lines instead of live progress.")
@click.pass_context
def run(context: click.Context, grid_file: str | None, preset: str | None, sets: tuple[str, ...],
        out: str, data_dir: str | None, cache_dir: str | None, device: str, quiet: bool, **flags) -> None:
    """Train and evaluate every run of a grid; finished runs are skipped, unfinished ones resume.

    With no grid file, preset or axis flags this runs the offline `quickstart` preset.
    Each flag replaces its axis of the grid file or preset.
    """
    from ganbench.grid import expand, load_grid_file, load_preset
    from ganbench.runner import RunOptions, iter_statuses, run_grid

    if grid_file and preset:
        raise UserError("give either a grid file or --preset, not both.")
    if grid_file:
        grid = load_grid_file(grid_file)
    elif preset:
        grid = load_preset(preset)
    else:
        grid = load_preset("quickstart")
    grid = grid.replace(
        archs=_list(flags["archs"]), losses=_list(flags["losses"]), datasets=_list(flags["datasets"]),
        seeds=_seeds(flags["seeds"]), metrics=_list(flags["metrics"]), steps=flags["steps"],
        batch_size=flags["batch_size"], split=flags["split"], eval_every=flags["eval_every"],
        save_samples=flags["save_samples"])
    grid.sets = {**grid.sets, **_sets(sets)}
    registry = _registry(context)
    runs = expand(grid, registry)
    console = Console(stderr=False)
    options = RunOptions(out=Path(out), cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                         data_dir=data_dir or os.environ.get("GANBENCH_DATA_DIR") or None,
                         device=device, quiet=quiet)
    console.print(f"ganbench {__version__}: {len(runs)} run(s) -> {options.out}")
    summary = run_grid(runs, registry, options, console)
    counts = ", ".join(f"{count} {status}" for status, count in iter_statuses(summary))
    console.print(f"results: {options.out / 'results.csv'} ({counts})")
    if summary.interrupted:
        console.print("interrupted: run the same command again to resume from the last checkpoints.")
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
    for kind in KINDS:
        table = Table(title=PLURAL[kind].capitalize(), title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        if kind == "dataset":
            table.add_column("source")
        table.add_column("from")
        for entry in registry.all(kind):
            row = [entry.name, entry.obj.description]
            if kind == "dataset":
                row.append(entry.obj.source)
            row.append(f"{entry.plugin.distribution} {entry.plugin.version}")
            table.add_row(*row)
        console.print(table)
    for kind, name, entries in registry.conflicts():
        owners = " and ".join(e.plugin.name for e in entries)
        console.print(f"[red]conflict:[/red] {kind} '{name}' is registered by {owners}")
    broken = [info for info in registry.plugins if info.error]
    for info in broken:
        console.print(f"[red]skipped plugin {info.name} ({info.version}):[/red] {info.error}")
    if verbose:
        table = Table(title="Plugins", title_justify="left")
        for column in ("plugin", "distribution", "version", "module", "hooks", "status"):
            table.add_column(column)
        for info in registry.plugins:
            table.add_row(info.name, info.distribution, info.version, info.module,
                          ", ".join(info.hooks), "error" if info.error else "ok")
        console.print(table)


def _add_plugin_commands(registry) -> None:
    for impl in registry.manager.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as error:  # a broken plugin must not take the CLI down
            print(f"ganbench: warning: plugin {impl.plugin_name} failed to add commands: {error}",
                  file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    try:
        _add_plugin_commands(get_registry())
        result = cli.main(args=argv, prog_name="ganbench", standalone_mode=False)
    except UserError as error:
        print(f"ganbench: error: {error}", file=sys.stderr)
        sys.exit(2)
    except click.UsageError as error:
        print(f"ganbench: error: {error.format_message()} (see ganbench {error.ctx.command.name if error.ctx else ''} --help)"
              .replace("ganbench ganbench", "ganbench").replace("  ", " "), file=sys.stderr)
        sys.exit(2)
    except click.ClickException as error:
        print(f"ganbench: error: {error.format_message()}", file=sys.stderr)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, click.Abort):
        print("ganbench: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
