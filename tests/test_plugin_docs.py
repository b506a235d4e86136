"""The plugin guide keeps up with the code (datasette's meta-tests, for ganbench).

docs/plugins.md is the whole reference a plugin author reads, so everything a plugin can
implement, receive or rely on must be in it: every hook with its argument, every kind of
object, every member of the base classes, everything an EvaluationContext offers, and every
hyperparameter of the training loop with its default. A hook or a default added to the
code without a line in the guide fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

from ganbench import hookspecs
from ganbench.api import PLUGIN_KINDS
from ganbench.evaluation import EvaluationContext
from ganbench.planning.defaults import LOOP_DEFAULTS

GUIDE = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()


def _hooks() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(function) for name, function in vars(hookspecs).items()
            if name.startswith("register_") and callable(function)}


def _section(title: str) -> str:
    """The text of the guide's section ``### title`` or ``## N. title``, up to the next heading of its level."""
    match = re.search(rf"^(#+) (?:\d+\. )?{re.escape(title)}\n(.*?)(?=^\1 |\Z)", GUIDE, re.M | re.S)
    assert match, f"docs/plugins.md has no section '{title}'"
    return match.group(2)


@pytest.mark.parametrize("hook", sorted(_hooks()))
def test_every_hook_is_in_the_guides_table_with_its_argument(hook):
    arguments = ", ".join(_hooks()[hook].parameters)
    assert f"| `{hook}({arguments})` |" in _section("The hooks"), (
        f"add a row for `{hook}({arguments})` to the table in docs/plugins.md, section 3")
    assert (getattr(hookspecs, hook).__doc__ or "").strip(), f"hookspecs.{hook} needs a docstring"


def test_every_kind_of_plugin_object_has_its_hook_and_its_contract_section():
    hooks = _hooks()
    assert set(hooks) == {kind.hook for kind in PLUGIN_KINDS.values()} | {"register_commands"}
    for kind in PLUGIN_KINDS.values():
        assert list(hooks[kind.hook].parameters) == ["register"]
        assert f"ganbench.{kind.base.__name__}" in GUIDE
        _section(kind.plural.capitalize())


def _public_members(cls: type) -> set[str]:
    return {name for name in vars(cls) if not name.startswith("_")}


@pytest.mark.parametrize("kind", sorted(PLUGIN_KINDS))
def test_every_member_of_each_base_class_is_in_its_contract(kind):
    base = PLUGIN_KINDS[kind].base
    documented = _section("The object contracts").split("### ")[0] + _section(PLUGIN_KINDS[kind].plural.capitalize())
    missing = sorted(name for name in _public_members(base) if f"`{name}" not in documented)
    assert not missing, f"docs/plugins.md, section 5 ({PLUGIN_KINDS[kind].plural}), does not describe {missing}"


def test_everything_an_evaluation_context_offers_is_in_the_guide():
    offered = {field.name for field in dataclasses.fields(EvaluationContext)} | _public_members(EvaluationContext)
    table = _section("Metrics")
    missing = sorted(name for name in offered if not name.startswith("_") and f"`{name}" not in table)
    assert not missing, f"the EvaluationContext table in docs/plugins.md does not describe {missing}"


def test_the_helper_layer_of_feature_metrics_is_described_in_the_guide():
    from ganbench.evaluation import features

    missing = sorted(name for name in features.__all__ if f"`{name}" not in _section("Metrics"))
    assert not missing, f"docs/plugins.md, section 5 (metrics), does not describe {missing}"


def _loop_table() -> dict[str, object]:
    """``{key: default}`` from the table that follows "The training loop's own hyperparameters"."""
    start = GUIDE.index("The training loop's own hyperparameters")
    table = GUIDE[GUIDE.index("| key | default | meaning |", start):].split("\n\n")[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \| [^|]+ \|$", table, re.M)
    return {key: json.loads(value) if value[0] in '"tf' else ast.literal_eval(value) for key, value in rows}


def test_every_loop_hyperparameter_and_its_default_is_in_the_guide():
    table = _loop_table()
    documented = {key: table[key] for key in LOOP_DEFAULTS if key in table}
    assert documented == dict(LOOP_DEFAULTS), (
        "the table of the training loop's hyperparameters in docs/plugins.md (section 4) and "
        "ganbench.planning.defaults.LOOP_DEFAULTS differ")
    for key, value in LOOP_DEFAULTS.items():  # types too: 1 is not 1.0, and --set converts to the default's type
        assert type(documented[key]) is type(value), key


def test_the_loop_table_reader_reads_json_and_python_literals():
    assert _loop_table()["lr_g"] == 2e-4 and _loop_table()["channels_last"] is True
    assert _loop_table()["optimizer"] == "adam" and type(_loop_table()["n_critic"]) is int
