"""Fixtures shared by several test modules."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def fake_distributions(tmp_path, monkeypatch):
    """Install small distributions for one test, the way pip lays them out.

    ``install(name, modules, entry_points, version="1.0", requires=("ganbench>=0.1",))``
    writes each module (``{module name: source}``) and a ``<name>-<version>.dist-info``
    folder (METADATA with the ``requires`` lines, entry_points.txt with
    ``{entry point name: module}`` in the ``ganbench`` group) into a folder on ``sys.path``,
    so ganbench discovers them through ``importlib.metadata`` like any installed plugin.
    ``entry_points`` may also be a list of pairs (to repeat a name). After the test the
    folder leaves ``sys.path``, the modules leave ``sys.modules`` and the process's cached
    registry is dropped, so nothing of them outlives the test.
    """
    from ganbench.registry import _cached_registry

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("GANBENCH_LOAD_PLUGINS", raising=False)
    created: list[str] = []
    _cached_registry.cache_clear()

    def install(name: str, modules: dict[str, str], entry_points, version: str = "1.0",
                requires: tuple[str, ...] = ("ganbench>=0.1",)) -> Path:
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        metadata += [f"Requires-Dist: {line}" for line in requires]
        (info / "METADATA").write_text("\n".join(metadata) + "\n")
        pairs = entry_points.items() if isinstance(entry_points, dict) else entry_points
        (info / "entry_points.txt").write_text("[ganbench]\n" + "".join(f"{k} = {v}\n" for k, v in pairs))
        importlib.invalidate_caches()
        return info

    yield install
    for module in created:
        sys.modules.pop(module, None)
    _cached_registry.cache_clear()
    importlib.invalidate_caches()


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
GUIDE_FILE = re.compile(r"<!-- file: (?P<path>\S+) -->\n```[a-z]*\n(?P<text>.*?)```\n", re.DOTALL)


@pytest.fixture(scope="session")
def guide_files() -> dict[str, str]:
    """``{path: text}`` of every code block in docs/plugins.md marked ``<!-- file: PATH -->``.

    The guide's examples are complete files; the tests build packages from them, so the
    guide cannot drift from what works.
    """
    files = {match["path"]: match["text"] for match in GUIDE_FILE.finditer(GUIDE.read_text())}
    assert files, f"no <!-- file: PATH --> code blocks in {GUIDE}"
    return files


# --- grid, CLI and training tests ----------------------------------------------------

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``../shared/data`` from the checkout; ``mnist/`` below it holds the real MNIST test split."""


@pytest.fixture
def shared_data_dir() -> Path:
    """The folder to pass as ``--data-dir`` for real MNIST (present on every test machine)."""
    assert (SHARED_DATA / "mnist").is_dir(), f"the real MNIST files belong in {SHARED_DATA / 'mnist'}"
    return SHARED_DATA


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty ganbench cache for one test; ``GANBENCH_CACHE_DIR`` points at it."""
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setenv("GANBENCH_CACHE_DIR", str(path))
    monkeypatch.delenv("GANBENCH_DATA_DIR", raising=False)
    return path


@pytest.fixture
def single_thread():
    """Train on one torch thread: on two shared cores a larger pool oversubscribes and runs
    several times slower (losses are compared only between runs made the same way)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def registry_with():
    """``registry_with((kind, obj), ...)``: a fresh registry holding the built-ins plus test objects,
    validated and attributed to the built-in plugin as a registering plugin's would be."""
    from ganbench.api import validate
    from ganbench.registry import Entry, build_registry

    def build(*extra):
        registry = build_registry()
        owner = registry.entry("loss", "ns").plugin
        for kind, obj in extra:
            validate(kind, obj)
            registry.entries[kind].setdefault(obj.name, []).append(Entry(kind, obj, owner))
        return registry

    return build


# --- the command line in this process ----------------------------------------------------

@pytest.fixture
def run_cli(capsys, monkeypatch, tmp_path, cache_dir):
    """``run_cli(*args) -> (exit code, stdout, stderr)``: ``ganbench`` in this process, from ``tmp_path``."""
    from ganbench.cli import main

    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        return exited.value.code, out, err

    return invoke


@pytest.fixture
def captured_runs(monkeypatch) -> list:
    """The runs the CLI hands to the runner, recorded instead of trained."""
    from ganbench.execution import runner as runner_module

    runs = []

    def record(specs, registry, options, console):
        runs.extend(specs)
        return runner_module.GridSummary()

    monkeypatch.setattr(runner_module, "run_grid", record)
    return runs
