"""Plugin discovery and safety: broken, incompatible and conflicting plugins are reported and
skipped, the rest keep working. Fake plugins are real distributions (a dist-info folder on
``sys.path``, see ``conftest.fake_distributions``), found through their entry points."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ganbench import __version__
from ganbench.cli import _add_plugin_commands, cli, main
from ganbench.errors import UserError
from ganbench.registry import build_registry
from ganbench.registry.loader import build_plugin_manager, canonical_name

BUILTIN_PLUGINS = ["ganbench:ganbench.architectures", "ganbench:ganbench.datasets",
                   "ganbench:ganbench.losses", "ganbench:ganbench.metrics"]


def loss_plugin(loss_name: str, extra: str = "") -> str:
    """Source of a plugin module registering one valid loss called ``loss_name``."""
    return f"""
        from ganbench import Loss, hookimpl

        class FakeLoss(Loss):
            name = "{loss_name}"
            description = "A fake loss for tests"

            def discriminator_loss(self, real_logits, fake_logits, params):
                return fake_logits.mean() - real_logits.mean()

            def generator_loss(self, fake_logits, real_logits, params):
                return -fake_logits.mean()

        @hookimpl
        def register_losses(register):
            register(FakeLoss())
        {extra}
    """


def run_cli(*args: str):
    result = CliRunner(env={"COLUMNS": "300"}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def info_of(infos, name):
    return next(info for info in infos if info.name == name)


def test_builtins_load_as_entry_points_of_the_ganbench_distribution(fake_distributions):
    _, infos = build_plugin_manager()
    builtins = [info for info in infos if info.builtin]
    assert [info.name for info in builtins] == BUILTIN_PLUGINS
    for info in builtins:
        assert info.error is None and info.version == __version__
        assert info.module.startswith("ganbench_plugins.")
    assert info_of(infos, "ganbench:ganbench.losses").hooks == ["register_losses"]


def test_a_plugin_that_fails_to_import_is_skipped_with_the_reason_and_the_others_work(fake_distributions):
    fake_distributions("fake-broken", {"fake_broken_plugin": "raise ImportError('needs libfoo [gpu build]')"},
                       {"broken": "fake_broken_plugin"})
    fake_distributions("fake-good", {"fake_good_plugin": loss_plugin("good-loss")}, {"good": "fake_good_plugin"})
    registry = build_registry()
    broken = info_of(registry.plugins, "fake-broken:broken")
    assert broken.error == "failed to load: ImportError: needs libfoo [gpu build]"
    assert registry.get("loss", "good-loss").description == "A fake loss for tests"
    assert "ns" in registry.names("loss") and "mlp" in registry.names("architecture")
    output = run_cli("plugins")
    # The reason is shown verbatim: rich must not take "[gpu build]" for markup.
    assert "skipped plugin fake-broken:broken (1.0): failed to load: ImportError: needs libfoo [gpu build]" in output
    assert "good-loss" in output


def test_a_register_hook_that_raises_withdraws_everything_its_plugin_registered(fake_distributions):
    source = loss_plugin("half-loss", extra="""
        import click
        from ganbench import Architecture

        class FakeArchitecture(Architecture):
            name = "half-arch"
            description = "registered before the plugin fails"
            defaults = {"latent_dim": 2}

            def build(self, data_shape, params):
                raise NotImplementedError

        @hookimpl
        def register_architectures(register):
            register(FakeArchitecture())

        @hookimpl
        def register_datasets(register):
            raise RuntimeError("dataset index [v2] is corrupt")

        @hookimpl
        def register_commands(cli):
            @cli.command(name="half-command")
            def half_command():
                pass
    """)
    fake_distributions("fake-half", {"fake_half_plugin": source}, {"half": "fake_half_plugin"})
    registry = build_registry()
    info = info_of(registry.plugins, "fake-half:half")
    assert info.error == "register_datasets raised RuntimeError: dataset index [v2] is corrupt"
    assert "half-arch" not in registry.names("architecture")
    assert "half-loss" not in registry.names("loss")
    _add_plugin_commands(registry)
    try:
        assert "half-command" not in cli.commands
    finally:
        cli.commands.pop("half-command", None)
    assert "register_datasets raised RuntimeError: dataset index [v2] is corrupt" in run_cli("plugins")


def test_an_invalid_object_is_reported_with_the_sentence_that_names_the_problem(fake_distributions):
    fake_distributions("fake-invalid", {"fake_invalid_plugin": loss_plugin("Bad_Name")}, {"bad": "fake_invalid_plugin"})
    info = info_of(build_registry().plugins, "fake-invalid:bad")
    assert info.error.startswith("register_losses raised ValueError: invalid loss: loss name 'Bad_Name'")
    assert "is not kebab-case" in info.error


def test_a_misspelled_hook_is_reported_with_the_hook_it_probably_meant(fake_distributions):
    source = loss_plugin("never-registered").replace("def register_losses", "def register_loss")
    fake_distributions("fake-typo", {"fake_typo_plugin": source}, {"typo": "fake_typo_plugin"})
    registry = build_registry()
    info = info_of(registry.plugins, "fake-typo:typo")
    assert info.error == "implements unknown hook register_loss (did you mean register_losses?)"
    assert "never-registered" not in registry.names("loss")
    assert "implements unknown hook register_loss (did you mean register_losses?)" in run_cli("plugins")


def test_one_name_from_two_plugins_is_an_error_naming_both(fake_distributions, tmp_path, capsys):
    fake_distributions("fake-a", {"fake_a_plugin": loss_plugin("twin")}, {"a": "fake_a_plugin"})
    fake_distributions("fake-b", {"fake_b_plugin": loss_plugin("twin")}, {"b": "fake_b_plugin"})
    registry = build_registry()
    assert [(kind, name) for kind, name, _ in registry.conflicts()] == [("loss", "twin")]
    with pytest.raises(UserError) as error:
        registry.get("loss", "twin")
    assert "loss 'twin' is registered by both fake-a (fake-a:a) and fake-b (fake-b:b)" in str(error.value)
    assert "conflict: loss 'twin' is registered by fake-a:a and fake-b:b" in run_cli("plugins")

    with pytest.raises(SystemExit) as exit_:
        main(["run", "--losses", "twin", "--archs", "mlp", "--datasets", "ring8", "--steps", "1",
              "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "fake-a (fake-a:a) and fake-b (fake-b:b)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_second_entry_point_with_the_same_name_in_one_distribution_is_reported(fake_distributions):
    fake_distributions("fake-twice", {"fake_once_plugin": loss_plugin("once")},
                       [("same", "fake_once_plugin"), ("same", "fake_once_plugin")])
    registry = build_registry()
    first, second = [info for info in registry.plugins if info.name == "fake-twice:same"]
    assert first.error is None and "second entry point with this name" in second.error
    assert registry.get("loss", "once")


def test_a_plugin_for_another_ganbench_version_is_skipped_without_being_imported(fake_distributions):
    never_import = "raise RuntimeError('an incompatible plugin must not be imported')"
    fake_distributions("fake-future", {"fake_future_plugin": never_import}, {"future": "fake_future_plugin"},
                       requires=("ganbench>=99",))
    fake_distributions("fake-extra", {"fake_extra_plugin": loss_plugin("extra-loss")}, {"extra": "fake_extra_plugin"},
                       requires=('ganbench>=99; extra == "docs"', "ganbench>=0.1,<1"))
    registry = build_registry()
    assert info_of(registry.plugins, "fake-future:future").error == (
        f"requires ganbench>=99 but ganbench {__version__} is installed; upgrade the plugin or ganbench")
    assert info_of(registry.plugins, "fake-extra:extra").error is None  # a requirement under a marker is ignored
    assert "extra-loss" in registry.names("loss")
    assert f"skipped plugin fake-future:future (1.0): requires ganbench>=99 but ganbench {__version__}" in run_cli("plugins")


def test_an_empty_allowlist_loads_only_the_builtins(fake_distributions, monkeypatch):
    fake_distributions("fake-a", {"fake_a_plugin": loss_plugin("loss-a")}, {"a": "fake_a_plugin"})
    monkeypatch.setenv("GANBENCH_LOAD_PLUGINS", "")
    registry = build_registry()
    assert [info.name for info in registry.plugins] == BUILTIN_PLUGINS
    assert "loss-a" not in registry.names("loss") and "ns" in registry.names("loss")


def test_the_allowlist_loads_only_the_distributions_it_names(fake_distributions, monkeypatch):
    fake_distributions("fake-a", {"fake_a_plugin": loss_plugin("loss-a")}, {"a": "fake_a_plugin"})
    fake_distributions("fake-b", {"fake_b_plugin": loss_plugin("loss-b")}, {"b": "fake_b_plugin"})
    monkeypatch.setenv("GANBENCH_LOAD_PLUGINS", " Fake_A ")  # case and _/- do not matter
    registry = build_registry()
    assert "loss-a" in registry.names("loss") and "loss-b" not in registry.names("loss")
    assert "fake-b:b" not in [info.name for info in registry.plugins]
    output = run_cli("plugins")
    assert "loss-a" in output and "loss-b" not in output


@pytest.mark.parametrize("disabled", ["fake-a", "fake-a:a", "a", "FAKE_A"])
def test_disable_plugin_leaves_it_out_by_distribution_plugin_or_entry_point_name(fake_distributions, disabled):
    fake_distributions("fake-a", {"fake_a_plugin": loss_plugin("loss-a")}, {"a": "fake_a_plugin"})
    fake_distributions("fake-b", {"fake_b_plugin": loss_plugin("loss-b")}, {"b": "fake_b_plugin"})
    output = run_cli("--disable-plugin", disabled, "plugins")
    assert "loss-a" not in output and "loss-b" in output and "wgan-gp" in output


def test_disable_plugin_also_removes_a_builtin(fake_distributions):
    registry = build_registry(disabled=("ganbench.losses",))
    assert registry.names("loss") == []
    assert "mlp" in registry.names("architecture")
    output = run_cli("--disable-plugin", "ganbench:ganbench.losses", "plugins")
    assert "wgan-gp" not in output and "dcgan" in output


def test_an_unknown_name_gets_a_suggestion_and_the_list(fake_distributions):
    registry = build_registry()
    with pytest.raises(UserError) as error:
        registry.get("loss", "wgan_gp")
    assert str(error.value) == ("unknown loss 'wgan_gp'. Did you mean 'wgan-gp'? Available losses: "
                                "hinge, lsgan, minimax, ns, wgan, wgan-gp.")
    with pytest.raises(UserError) as error:
        registry.get("architecture", "transformer")
    assert "Did you mean" not in str(error.value)
    assert str(error.value).endswith("Available architectures: dcgan, mlp, pacgan.")


def test_plugins_verbose_shows_each_plugins_distribution_version_module_and_hooks(fake_distributions):
    source = loss_plugin("verbose-loss", extra="""
        @hookimpl
        def register_commands(cli):
            pass
    """)
    fake_distributions("fake-verbose", {"fake_verbose_plugin": source}, {"verbose": "fake_verbose_plugin"},
                       version="2.3.4")
    output = run_cli("plugins", "--verbose")
    row = next(line for line in output.splitlines() if "fake-verbose:verbose" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells == ["fake-verbose:verbose", "fake-verbose", "2.3.4", "fake_verbose_plugin",
                     "register_commands, register_losses", "ok"]
    builtin = next(line for line in output.splitlines() if "ganbench:ganbench.losses" in line)
    assert "ganbench_plugins.losses" in builtin and "register_losses" in builtin
    assert "verbose-loss" in output and "fake-verbose 2.3.4" in output
    assert "fake_verbose_plugin" not in run_cli("plugins")  # modules and hooks only with --verbose


def test_a_disabled_plugin_adds_no_command(fake_distributions, capsys):
    source = loss_plugin("commanding-loss", extra="""
        @hookimpl
        def register_commands(cli):
            @cli.command(name="commanding-hello")
            def hello():
                print("hello from a plugin command")
    """)
    fake_distributions("fake-commanding", {"fake_commanding_plugin": source}, {"commanding": "fake_commanding_plugin"})
    try:
        for disabled in (["--disable-plugin", "fake-commanding"], ["--disable-plugin=fake-commanding:commanding"]):
            with pytest.raises(SystemExit) as exited:
                main([*disabled, "commanding-hello"])
            assert exited.value.code == 2
            assert "No such command 'commanding-hello'" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exited:
            main(["commanding-hello"])
        assert exited.value.code == 0 and "hello from a plugin command" in capsys.readouterr().out
    finally:
        cli.commands.pop("commanding-hello", None)


def test_a_run_naming_an_object_of_a_skipped_plugin_says_which_plugin_and_why(fake_distributions):
    source = loss_plugin("half-loss", extra="""
        @hookimpl
        def register_datasets(register):
            raise RuntimeError("dataset index is corrupt")
    """)
    fake_distributions("fake-half", {"fake_half_plugin": source}, {"half": "fake_half_plugin"})
    registry = build_registry()
    with pytest.raises(UserError, match=r"loss 'half-loss' is in plugin fake-half:half \(fake-half\), which was "
                                        r"skipped: register_datasets raised RuntimeError: dataset index is corrupt"):
        registry.get("loss", "half-loss")


def test_an_unknown_name_also_lists_the_plugins_that_failed_to_load(fake_distributions):
    fake_distributions("fake-broken", {"fake_broken_plugin": "raise ImportError('needs libfoo')"},
                       {"broken": "fake_broken_plugin"})
    with pytest.raises(UserError, match=r"unknown loss 'brokens-loss'.*Skipped plugins, which may hold it: "
                                        r"fake-broken:broken: failed to load: ImportError: needs libfoo"):
        build_registry().get("loss", "brokens-loss")


def test_disable_plugin_after_the_subcommand_is_moved_before_it(fake_distributions, capsys):
    from ganbench.cli import hoist_disable_plugin

    assert hoist_disable_plugin(["run", "--steps", "5", "--disable-plugin", "x", "--disable-plugin=y:z"]) == [
        "--disable-plugin", "x", "--disable-plugin=y:z", "run", "--steps", "5"]
    fake_distributions("fake-later", {"fake_later_plugin": loss_plugin("later-loss")}, {"later": "fake_later_plugin"})
    with pytest.raises(SystemExit):
        main(["plugins"])
    assert "later-loss" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["plugins", "--disable-plugin", "fake-later"])
    assert exited.value.code == 0
    assert "later-loss" not in capsys.readouterr().out


def test_one_rule_compares_distribution_names_for_the_loader_and_the_kit():
    assert canonical_name(" Ganbench_Example.-Plugin ") == "ganbench-example-plugin"  # PEP 503
    assert canonical_name("ganbench:ganbench.losses") == canonical_name("ganbench:ganbench-losses")
