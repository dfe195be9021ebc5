"""Every module of sept imports, and sept's own modules import one another without a circle.

The import graph is read from the source with `ast`, over the folders pyproject.toml's
`package-dir` maps to `sept.*`. An edge A -> B means that importing A runs `import B` at
import time: statements of the module body, class bodies and `if`/`try`/`with` blocks count;
`if TYPE_CHECKING:` blocks never do. For `from P import N`, the edge goes to `P.N` when that
is a module, else to `P`. A strongly connected component of more than one module is a circle:
which module works depends on which one a program happened to import first.

A second graph adds the imports deferred into function bodies: a circle closed by a deferred
import does not fail at import time, but it still means two modules each need the other, the
tangle that deferring hides. Both graphs must be free of circles.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """`sept.<name>` -> its folder, from pyproject.toml's [tool.setuptools.package-dir]."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return {name: root / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Module name -> source file, for every .py file inside a package folder (one with
    __init__.py) under each mapped folder; a folder mapped on its own wins over its parent's."""
    out: dict[str, Path] = {}
    for package, folder in sorted(dirs.items(), key=lambda item: len(item[0])):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if not all((folder.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(len(parts))):
                continue    # a script folder inside a package, not a subpackage
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_imports(tree: ast.Module, module: str, is_package: bool,
                        deferred: bool = False) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) of the imports run when `module` is
    imported; with `deferred`, also those inside function bodies."""
    out: list[tuple[int, str, str | None]] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                out.extend((node.lineno, alias.name, None) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                out.extend((node.lineno, base, alias.name) for alias in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if deferred:
                    visit(node.body)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With, ast.AsyncWith, ast.For, ast.While)):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(tree.body)
    return out


def import_graph(sources: dict[str, Path], deferred: bool = False) -> dict[str, dict[str, int]]:
    """Module -> {imported project module: first line}; import-time imports, and with
    `deferred` also the imports of function bodies."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in sources.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for line, target, name in import_time_imports(tree, module, path.name == "__init__.py", deferred):
            if name is not None and f"{target}.{name}" in sources:
                target = f"{target}.{name}"
            if target in sources and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(node: str) -> None:
        # iterative, so a deep graph cannot hit the recursion limit
        work = [(node, iter(sorted(graph.get(node, {}))))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[current])
            if low[current] == index[current]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == current:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return sorted(found)


def describe(component: list[str], graph: dict[str, dict[str, int]], sources: dict[str, Path],
             root: Path = ROOT) -> str:
    members = set(component)
    edges = [f"{sources[a].relative_to(root)}:{line} imports {b}"
             for a in component for b, line in sorted(graph[a].items()) if b in members]
    return "circle among " + ", ".join(component) + ": " + "; ".join(edges)


# ----------------------------------------------------------------------------- the scan itself

def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_scan_finds_circles_with_and_without_deferred_imports(tmp_path):
    _write(tmp_path, {
        "pyproject.toml": '[tool.setuptools.package-dir]\n"sept" = "core"\n"sept.extra" = "extra"\n',
        "core/__init__.py": "",
        "core/a.py": "from sept import b\n",
        "core/b.py": "try:\n    from .c import thing\nexcept ImportError:\n    pass\n",
        "core/c.py": "import sept.a\n",
        "core/d.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sept.e import E\n"
                      "def f():\n    from sept.e import E\n"),
        "core/e.py": "from sept.d import f\nclass E:\n    from sept.extra import tool\n",
        "core/scripts/run.py": "import sept.a\n",             # no __init__.py: not a module
        "extra/__init__.py": "",
        "extra/tool.py": "from ..d import f\n",
    })
    sources = modules(package_dirs(tmp_path))
    assert sorted(sources) == ["sept", "sept.a", "sept.b", "sept.c", "sept.d", "sept.e", "sept.extra", "sept.extra.tool"]
    graph = import_graph(sources)
    assert graph["sept.b"] == {"sept.c": 2}          # relative, inside try
    assert graph["sept.d"] == {}                      # TYPE_CHECKING and function bodies do not count
    assert graph["sept.e"] == {"sept.d": 1, "sept.extra.tool": 3}    # class bodies run at import
    assert graph["sept.extra.tool"] == {"sept.d": 1}
    assert cycles(graph) == [["sept.a", "sept.b", "sept.c"]]
    deferred = import_graph(sources, deferred=True)
    assert deferred["sept.d"] == {"sept.e": 5}        # the function's import; TYPE_CHECKING still not
    assert cycles(deferred) == [["sept.a", "sept.b", "sept.c"], ["sept.d", "sept.e", "sept.extra.tool"]]
    assert "core/a.py:1 imports sept.b" in describe(cycles(graph)[0], graph, sources, tmp_path)


def test_the_scan_sees_the_project():
    sources = modules(package_dirs())
    for expected in ("sept.cli", "sept.clap.factory", "sept.neighbor_store.store", "sept.pipeline.llm.backend",
                     "sept.trainer", "sept.flows"):
        assert expected in sources
    graph = import_graph(sources)
    assert "sept.neighbor_store.margins" in graph["sept.neighbor_store.store"]


# ----------------------------------------------------------------------------- the project

@pytest.mark.parametrize("deferred", [False, True], ids=["import-time", "with-deferred"])
def test_no_import_circle_among_septs_modules(deferred):
    sources = modules(package_dirs())
    graph = import_graph(sources, deferred)
    assert [describe(c, graph, sources) for c in cycles(graph)] == []


def test_every_module_imports():
    """Each module imported in a fresh interpreter of its own would be slow (torch, prefect);
    one interpreter imports them all in name order and reports every failure. `__main__`
    modules are left out: importing one runs the command."""
    names = sorted(name for name in modules(package_dirs()) if not name.endswith(".__main__"))
    script = textwrap.dedent("""
        import importlib, sys, traceback
        failed = []
        for name in sys.argv[1:]:
            try:
                importlib.import_module(name)
            except BaseException:
                failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
    """)
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
