"""The package's imports point one way (docs/design.md, the map): command lines → the config reader → the
library → the leaves. Read from the source with ``ast``, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sla_jax"
LEAVES = {
    "sla_jax.transforms",
    "sla_jax.jitter",
    "sla_jax.common.settings",
    "sla_jax.labels",
    "sla_jax.density",
    "sla_jax.localization",
    "sla_jax.metrics",
    "sla_jax.common.runtime",
}  # runtime: the platform's defaults; settings: the sections' base; both standard library only
# Besides the command lines, only these may touch a ConfigDict: the defaults build one (every config file
# starts from ``sla_jax.defaults.base_config``), the experiment package checks and reads one.
CONFIG_READERS = {"sla_jax.defaults", "sla_jax.experiment"}  # and its modules
# The top level holds the command lines (``python -m sla_jax.<command>``), the helper they share, the base
# config that config files import, and the pure leaves whose functions are the public names
# (docs/design.md); the rest of the library lives in sub-packages by concern (common, data, training,
# scoring, experiment, outputs).
TOP_LEVEL_LIBRARY = {
    "sla_jax.cli",
    "sla_jax.defaults",
    "sla_jax.transforms",
    "sla_jax.jitter",
    "sla_jax.labels",
    "sla_jax.density",
    "sla_jax.localization",
    "sla_jax.metrics",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def imports(tree: ast.Module, *, known: set[str]) -> tuple[set[str], set[str]]:
    """(sla_jax modules imported anywhere in the file, top-level names of the other packages imported)."""
    ours, others = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.startswith("sla_jax") else others).add(
                    alias.name if alias.name.startswith("sla_jax") else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("sla_jax"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    ours.add(candidate if candidate in known else node.module)
            else:
                others.add(node.module.split(".")[0])
    return ours, others


def is_command_line(tree: ast.Module) -> bool:
    """A module with an ``if __name__ == "__main__":`` block is a command line."""
    return any(
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        for node in tree.body
    )


def graph():
    trees = modules()
    known = set(trees)
    edges, foreign = {}, {}
    for name, tree in trees.items():
        ours, others = imports(tree, known=known)
        edges[name] = {m for m in ours if m != name and m != "sla_jax"}
        foreign[name] = others
    commands = {name for name, tree in trees.items() if is_command_line(tree)}
    return edges, foreign, commands


def test_there_is_no_import_circle():
    edges, _, _ = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_leaves_and_models_import_no_config_and_no_library_module():
    edges, foreign, _ = graph()
    for name in sorted(LEAVES | {"sla_jax.training.models"}):
        assert "ml_collections" not in foreign[name], f"{name} imports ml_collections"
        assert edges[name] <= LEAVES, f"{name} imports {sorted(edges[name] - LEAVES)}, which are not leaves"


def test_no_module_imports_a_command_line():
    edges, _, commands = graph()
    assert {"sla_jax.train", "sla_jax.evaluate", "sla_jax.predict", "sla_jax.analyze"} <= commands
    for name, targets in sorted(edges.items()):
        assert not targets & commands, f"{name} imports the command line(s) {sorted(targets & commands)}"


def test_only_the_config_reader_reads_configs():
    _, foreign, commands = graph()
    readers = {name for name, others in foreign.items() if "ml_collections" in others}
    readers = {name for name in readers if not name.startswith("sla_jax.experiment.")}  # the reader's modules
    assert readers <= CONFIG_READERS | commands, f"{sorted(readers - CONFIG_READERS - commands)} import ml_collections"


def test_the_top_level_holds_only_command_lines_their_helper_and_the_public_leaves():
    edges, _, commands = graph()
    top = {name for name in edges if name.count(".") == 1 and not (PACKAGE / name.split(".")[1]).is_dir()}
    assert {"sla_jax.train", "sla_jax.evaluate", "sla_jax.predict", "sla_jax.export"} <= commands
    assert top - commands == TOP_LEVEL_LIBRARY, f"library modules at the top level: {sorted(top - commands)}"
    assert TOP_LEVEL_LIBRARY - {"sla_jax.cli", "sla_jax.defaults"} <= LEAVES


MAX_LINES = 350  # a module longer than this holds more than one concern: split it by concern


def test_no_library_module_is_longer_than_the_limit():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
