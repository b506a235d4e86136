"""ganbench's layout: no import cycle between its modules, read from their source with ``ast``.

An import cycle makes a module's meaning depend on which of its partners was imported first,
and it hides the layering the folders are meant to show (see /work/shared/STYLE.md, "Layout").
The check reads the imports a module runs when it is imported: the statements at module level
(inside ``if`` and ``try`` too, and class bodies), not those inside functions and not those
under ``if TYPE_CHECKING:``, which never run. Between folders (planning, training, evaluation,
execution, ledger, registry, report, and the top-level modules) imports inside functions count
too: the folders form layers, and no folder reaches back up to one that uses it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "ganbench"


def module_names(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """``{dotted module name: source file}`` of every module under ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_at_import(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements of ``body`` that run when the module is imported (functions' bodies excluded)."""
    statements = []
    for node in body:
        statements.append(node)
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                statements += _run_at_import(node.body)
            statements += _run_at_import(node.orelse)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            for block in (node.body, node.orelse, node.finalbody, *(handler.body for handler in node.handlers)):
                statements += _run_at_import(block)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            statements += _run_at_import(node.body)
        elif isinstance(node, ast.ClassDef):
            statements += _run_at_import(node.body)
    return statements


def _every_import(tree: ast.Module) -> list[ast.stmt]:
    """Every import statement of ``tree``, in functions too, except under ``if TYPE_CHECKING:``."""
    guards = [block for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)]
    never_run = {id(node) for block in guards for statement in block.body for node in ast.walk(statement)}
    return [node for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in never_run]


def imports_at_import_time(name: str, path: Path, modules: dict[str, Path], *,
                           in_functions: bool = False) -> set[str]:
    """The ganbench modules that importing ``name`` imports directly (``in_functions``: or may import later)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in _every_import(tree) if in_functions else _run_at_import(tree.body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from package import module` imports the module
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph(package_dir: Path = PACKAGE_DIR, *, in_functions: bool = False) -> dict[str, set[str]]:
    """``{module: modules it imports at import time}`` for every module of the package."""
    modules = module_names(package_dir)
    return {name: imports_at_import_time(name, path, modules, in_functions=in_functions)
            for name, path in modules.items()}


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen from the folders: ``ganbench.training.loop`` counts as ``ganbench.training``."""
    def folder(module: str) -> str:
        return ".".join(module.split(".")[:2])

    folders: dict[str, set[str]] = {}
    for module, targets in graph.items():
        folders.setdefault(folder(module), set()).update(folder(target) for target in targets
                                                         if folder(target) != folder(module))
    return folders


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph has none."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        trail.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_inside_ganbench():
    graph = import_graph()
    assert len(graph) > 40 and "ganbench.evaluation.features" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_folders_are_layers_even_counting_imports_inside_functions():
    folders = folder_graph(import_graph(in_functions=True))
    assert {"ganbench.planning", "ganbench.training", "ganbench.evaluation", "ganbench.execution"} <= set(folders)
    cycle = find_cycle(folders)
    assert cycle is None, "folders importing each other: " + " -> ".join(cycle)
    assert "ganbench.training" in folders["ganbench.execution"]  # the arrows point down, as STYLE.md draws them
    assert not folders["ganbench.ledger"] - {"ganbench.errors"}


def test_the_cycle_finder_finds_a_cycle_and_reads_imports_as_python_runs_them(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
                                          "def late():\n    from pkg import a\n")
    (package / "sub" / "c.py").write_text("try:\n    from ..a import late\nexcept ImportError:\n    pass\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == set()  # TYPE_CHECKING and function-level imports never run on import
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert find_cycle(graph) is None
    later = import_graph(package, in_functions=True)
    assert later["pkg.sub.b"] == {"pkg.a"}  # the import inside late(), still not the TYPE_CHECKING one
    assert folder_graph(later) == {"pkg.a": {"pkg.sub"}, "pkg.sub": {"pkg.a"}, "pkg": set()}
    assert find_cycle(folder_graph(later)) == ["pkg.a", "pkg.sub", "pkg.a"]
    (package / "sub" / "b.py").write_text("import pkg.sub.c\n")
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]
