"""The import graph of the library and the trainer, read from the source: the model names no
feature, and no module imports itself through a loop (function-local imports count; imports
under `if TYPE_CHECKING:` do not run and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("lumina", "train")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, typing_only: bool = False):
    """(node, under TYPE_CHECKING) for every import statement, however deeply nested."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, typing_only
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), typing_only)
        else:
            yield from _import_nodes(node, typing_only)


def imports_of(path: Path, modules: set[str]) -> list[tuple[str, bool]]:
    """(imported module of `modules`, typing only) for every import in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, typing_only in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one, else names of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:  # `import lumina.model.rope` → the module itself
                target = target.rpartition(".")[0]
            if target:
                found.append((target, typing_only))
    return found


def import_graph(include_typing: bool = False) -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    graph = {}
    for path in files:
        graph[module_name(path)] = {t for t, typing_only in imports_of(path, modules) if include_typing or not typing_only}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop (a list of modules ending where it started), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_model_imports_no_feature():
    graph = import_graph(include_typing=True)
    offenders = {m: sorted(t for t in targets if t.startswith("lumina.features"))
                 for m, targets in graph.items() if m.startswith("lumina.model")}
    assert not {m: t for m, t in offenders.items() if t}, "lumina/model must name no feature (use lumina.model.hooks)"


def test_the_sampler_imports_no_feature():
    graph = import_graph(include_typing=True)
    assert not [t for t in graph["lumina.sampling"] if t.startswith("lumina.features")]


def test_the_library_never_imports_comfyui_nodes_or_train():
    graph = import_graph(include_typing=True)
    for module, targets in graph.items():
        if module.startswith("lumina"):
            assert not [t for t in targets if t.split(".")[0] in ("nodes", "train", "tools")], module


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    graph = {m: {t for t in targets if t.split(".")[0] == package} for m, targets in import_graph().items()
             if m.split(".")[0] == package}
    assert find_cycle(graph) is None, f"import cycle: {' → '.join(find_cycle(graph))}"


def test_the_cycle_finder_sees_a_loop_and_the_reader_sees_local_imports(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "lumina" / "x.py"
    source.parent.mkdir()
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .y import Y\n"
        "def f():\n    from . import z\n    import lumina.w.v\n"
    )
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        found = imports_of(source, {"lumina", "lumina.x", "lumina.y", "lumina.z", "lumina.w", "lumina.w.v"})
    finally:
        REPO = saved
    assert sorted(found) == [("lumina.w.v", False), ("lumina.y", True), ("lumina.z", False)]
