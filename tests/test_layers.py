"""Imports only go downward: each module imports from its own layer or the layers below
(docs/architecture.md, "Layers"), so the package has no import cycle between layers."""

from __future__ import annotations

import ast
from pathlib import Path

import workbench

#: Lowest first; a module may import from its own layer and every layer before it.
LAYERS = [
    ("workbench.errors", "workbench._version", "workbench.settings"),
    (
        "workbench.options",
        "workbench.store",
        "workbench.stats",
        "workbench.display",
        "workbench.memory",
    ),
    ("workbench.data",),
    ("workbench.models",),
    ("workbench.sampling",),
    ("workbench.directions", "workbench.trajectories"),
    ("workbench.editing",),
    ("workbench.engines",),
    ("workbench.probes",),
    ("workbench.eval",),
    ("workbench.library",),
    ("workbench.viz",),
    ("workbench.bench", "workbench.train", "workbench.demo", "workbench.sweep"),
    ("workbench.cli",),
    ("workbench",),
]


def layer_of(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best[1])
            ):
                best = (i, name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and the docs"
    return best[0]


def imports(path: Path) -> set[str]:
    """Every ``workbench`` module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "workbench":  # from workbench import x: the submodule x
                found |= {f"workbench.{a.name}" for a in node.names}
            elif node.module.startswith("workbench."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("workbench")}
    return found


def modules() -> list[tuple[Path, str]]:
    """Every module of the package: its file and its dotted name."""
    root = Path(workbench.__file__).parent
    out = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out.append((path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)))
    return out


def test_imports_only_go_downward():
    upward = []
    for path, module in modules():
        own = layer_of(module)
        for target in imports(path):
            if layer_of(target) > own:
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_the_layer_table_catches_an_upward_import(tmp_path):
    """The check itself can fail: an engine importing the explorer is upward."""
    fake = tmp_path / "fake.py"
    fake.write_text("from workbench.viz.explorer import Explorer\n")
    (target,) = imports(fake)
    assert layer_of(target) > layer_of("workbench.engines.fake")


def private_imports(path: Path, module: str) -> list[str]:
    """The private names (``_name``) of other ``workbench`` modules that ``path`` (the
    module ``module``) imports: ``from workbench.x import _name``, or reads as
    ``workbench.x._name`` / ``x._name`` after importing ``x``."""
    found = []
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}  # local name -> the workbench module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("workbench") or node.module == module:
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{module} imports {node.module}.{a.name}")
                elif node.module == "workbench":
                    aliases[a.asname or a.name] = f"workbench.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("workbench.") and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and aliases.get(node.value.id, module) != module
        ):
            found.append(f"{module} reads {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_module_uses_anothers_private_names():
    """What a module does not name publicly it may change: no other module relies on it."""
    found = [line for path, module in modules() for line in private_imports(path, module)]
    assert not found, found


def test_the_private_name_check_catches_both_spellings(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text(
        "from workbench.engines.pullback import _labels, sample_bases\n"
        "import workbench.settings as settings\n"
        "from workbench import store\n"
        "settings._state\nstore._tmp\nsettings.progress\n"
    )
    assert private_imports(fake, "workbench.sweep") == [
        "workbench.sweep imports workbench.engines.pullback._labels",
        "workbench.sweep reads workbench.settings._state",
        "workbench.sweep reads workbench.store._tmp",
    ]
