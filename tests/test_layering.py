"""The layering of the packages, read from the source: who may import whom.

pipeline/ (sept.pipeline) and trainer/ (sept.trainer) share only sept.clap, sept.neighbor_store,
sept.prompts (and sept's small shared modules); neither imports the other or sept.flows. Every
project import goes through the `sept.` namespace: a bare `import trainer` would only work from
a checkout and would collide with other installed top-level packages.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("pipeline", "trainer", "flows", "prompts", "neighbor_store", "sept")
BARE = {"pipeline", "trainer", "flows", "prompts", "neighbor_store"}
FORBIDDEN = {
    "pipeline": ("sept.trainer", "sept.flows"),
    "trainer": ("sept.pipeline", "sept.flows"),
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, function-level ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            # `from sept import trainer` imports sept.trainer as well
            if node.module == "sept":
                out.extend((node.lineno, f"sept.{alias.name}") for alias in node.names)
    return out


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_scan_sees_function_level_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from sept.trainer.train import train\n    from sept import flows\n"
                     "import trainer.config\n")
    assert sorted(imports(probe)) == [(2, "sept.trainer.train"), (3, "sept"), (3, "sept.flows"), (4, "trainer.config")]


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_pipeline_and_trainer_stay_apart(folder):
    files = sources(folder)
    assert len(files) >= 5, f"expected the sources of {folder}/"
    violations = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
                  for path in files for line, module in imports(path)
                  if any(within(module, banned) for banned in FORBIDDEN[folder])]
    assert violations == []


def test_no_bare_top_level_imports_of_project_packages():
    files = [p for folder in FOLDERS for p in sources(folder)] + sorted((ROOT / "tests").rglob("*.py")) \
        + sorted((ROOT / "benchmarks").rglob("*.py")) + sorted((ROOT / "scripts").rglob("*.py"))
    violations = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
                  for path in files for line, module in imports(path)
                  if module.split(".")[0] in BARE]
    assert violations == []
