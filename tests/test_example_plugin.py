"""Third-party packages installed for real with pip: the example plugin package, and the
guide's tutorial package built from the code blocks of docs/plugins.md.

pip builds each package from a copy of its source and installs it with ``--target`` into a
temporary folder, which goes on ``PYTHONPATH`` for the ``ganbench`` subprocesses (and on
``sys.path`` for the in-process kit). ganbench then discovers the package through
``importlib.metadata`` and its entry points, exactly as an install into site-packages, but
the shared Python environment is never modified — not even when the test process is killed —
and deleting the folder at the end uninstalls it. Offline: pip builds without build
isolation when setuptools is importable (with ``--no-index``), else with the configured index.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from ganbench.testing import PASSED, SKIPPED, check_distribution

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ganbench-example-plugin"
TUTORIAL = "ganbench-lsgan-symmetric"


def _can_build_offline() -> bool:
    from packaging.version import Version

    try:
        return Version(metadata.version("setuptools")) >= Version("61")
    except metadata.PackageNotFoundError:
        return False


def pip_install(source: Path, work: Path) -> Path:
    """Build ``source`` (a copy, so no build/ appears in the checkout) and install it into ``work/site``."""
    copy, site = work / "src" / source.name, work / "site"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--target", str(site)]
    if _can_build_offline():
        command += ["--no-build-isolation", "--no-index"]
    done = subprocess.run([*command, str(copy)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pip install {source.name} failed:\n{done.stdout}\n{done.stderr}"
    return site


def ganbench(sites: list[Path], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the ``ganbench`` command in a subprocess that sees the packages in ``sites``."""
    script = Path(sys.executable).with_name("ganbench")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from ganbench.cli import main; main()"]
    return subprocess.run([*command, *args], cwd=cwd, env=subprocess_env(sites, cwd), capture_output=True,
                          text=True, timeout=300)


def subprocess_env(sites: list[Path], cwd: Path) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1", "GANBENCH_CACHE_DIR": str(cwd / "cache")}
    env.pop("GANBENCH_LOAD_PLUGINS", None)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    work = tmp_path_factory.mktemp("example-plugin")
    site = pip_install(EXAMPLE, work)
    yield site
    shutil.rmtree(work)  # the uninstall: nothing else was written anywhere


@pytest.fixture(scope="module")
def tutorial_site(tmp_path_factory, guide_files):
    work = tmp_path_factory.mktemp("tutorial")
    written = work / "written"
    for path, text in guide_files.items():
        if path.startswith(f"{TUTORIAL}/"):
            (written / path).parent.mkdir(parents=True, exist_ok=True)
            (written / path).write_text(text)
    site = pip_install(written / TUTORIAL, work)
    yield site
    shutil.rmtree(work)


def test_pip_installs_a_distribution_with_a_ganbench_entry_point_outside_the_environment(example_site):
    (dist,) = metadata.distributions(path=[str(example_site)])
    assert (dist.metadata["Name"], dist.version) == ("ganbench-example-plugin", "0.1.0")
    assert [(ep.group, ep.name, ep.value) for ep in dist.entry_points if ep.group == "ganbench"] == [
        ("ganbench", "example", "ganbench_example_plugin.plugin")]
    assert "ganbench<0.2,>=0.1" in dist.requires
    with pytest.raises(metadata.PackageNotFoundError):  # the running environment is left as found
        metadata.distribution("ganbench-example-plugin")


def test_ganbench_plugins_lists_the_example_and_its_hooks(example_site, tmp_path):
    done = ganbench([example_site], "plugins", "--verbose", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ragan = next(line for line in lines if "│ ragan " in line)
    assert "Relativistic average GAN (RaSGAN) of Jolicoeur-Martineau 2018" in ragan
    assert "ganbench-example-plugin 0.1.0" in ragan
    assert any("│ resmlp " in line and "ganbench-example-plugin 0.1.0" in line for line in lines)
    plugin = next(line for line in lines if "ganbench-example-plugin:example" in line)
    cells = [cell.strip() for cell in plugin.strip("│ ").split("│")]
    assert cells == ["ganbench-example-plugin:example", "ganbench-example-plugin", "0.1.0",
                     "ganbench_example_plugin.plugin", "register_architectures, register_commands, register_losses",
                     "ok"]
    assert "skipped plugin" not in done.stdout and "conflict" not in done.stdout


def test_a_small_grid_trains_with_the_examples_loss_and_architecture(example_site, tmp_path):
    done = ganbench([example_site], "run", "--losses", "ragan", "--archs", "resmlp", "--datasets", "ring8",
                    "--steps", "50", "--metrics", "none", "--out", "out", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert (row["architecture"], row["loss"], row["dataset"], row["status"], row["step"]) == \
        ("resmlp", "ragan", "ring8", "done", "50")
    (config,) = (tmp_path / "out" / "runs").glob("*/config.json")
    versions = json.loads(config.read_text())["versions"]
    assert versions["loss:ragan"] == versions["architecture:resmlp"] == "ganbench-example-plugin==0.1.0"


def softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def test_the_example_adds_a_ganbench_command(example_site, tmp_path):
    done = ganbench([example_site], "example-formula", "--real", "1.5,0.2", "--fake", "-0.3,0.4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "L_G = E_fake[softplus(-(C(x_f) - E_real C(x_r)))]" in done.stdout
    real, fake = [1.5, 0.2], [-0.3, 0.4]
    mean_real, mean_fake = sum(real) / 2, sum(fake) / 2
    expected_d = sum(softplus(mean_fake - r) for r in real) / 2 + sum(softplus(f - mean_real) for f in fake) / 2
    assert f"discriminator_loss = {expected_d:.6f}" in done.stdout


def test_the_example_passes_the_conformance_kit_through_its_entry_point(example_site, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    try:
        report = check_distribution("ganbench-example-plugin")
    finally:
        for module in [name for name in sys.modules if name.startswith("ganbench_example_plugin")]:
            del sys.modules[module]
    outcomes = {(result.subject, result.check): result.outcome for result in report.results}
    assert outcomes[("loss 'ragan'", "generator-loss-direction")] == PASSED
    assert outcomes[("architecture 'resmlp'", "gradients (3, 32, 32)")] == PASSED
    assert outcomes[("architecture 'resmlp'", "shape (3, 64, 64)")] == SKIPPED
    assert outcomes[("distribution", "declares-ganbench-versions")] == PASSED


def test_following_the_guide_a_new_loss_package_installs_lists_and_runs(tutorial_site, tmp_path):
    listed = ganbench([tutorial_site], "plugins", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert any("│ lsgan-symmetric " in line and "ganbench-lsgan-symmetric 0.1.0" in line
               for line in listed.stdout.splitlines())
    done = ganbench([tutorial_site], "run", "--losses", "lsgan-symmetric", "--archs", "mlp", "--datasets", "ring8",
                    "--steps", "20", "--batch-size", "32", "--metrics", "none", "--out", "out", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert (row["loss"], row["status"]) == ("lsgan-symmetric", "done")


def test_the_plugins_own_test_suites_pass_with_the_kit(example_site, tutorial_site, tmp_path):
    """What an author runs: pytest on the package's tests, which call ganbench.testing."""
    example_tests = example_site.parent / "src" / EXAMPLE.name / "tests"
    tutorial_tests = tutorial_site.parent / "src" / TUTORIAL / "tests"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example_tests),
                           str(tutorial_tests)], cwd=tmp_path, env=subprocess_env([example_site, tutorial_site], tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # example: distribution, ragan, resmlp, the formula test; tutorial: distribution, lsgan-symmetric.
    assert "6 passed" in done.stdout
