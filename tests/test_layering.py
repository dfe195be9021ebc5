"""The layering of the packages, read from the source: who may import whom.

pipeline/ (sept.pipeline) and trainer/ (sept.trainer) share only sept.clap, sept.neighbor_store,
sept.prompts (and sept's small shared modules); neither imports the other or sept.flows. The
pipeline knows no orchestrator and the store only through its public face (the `Store`, its
records and errors), never its file layout. trainer/ runs one training run: the sweeps over many
runs live in sweeps/ (sept.sweeps), which trainer/ does not import and which knows no
orchestrator either (sept.flows adapts it to Prefect and Ray). neighbor_store/ calls no LLM and
no CLAP. Every project import goes through the `sept.` namespace: a bare `import trainer` would
only work from a checkout and would collide with other installed top-level packages.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("pipeline", "trainer", "flows", "prompts", "neighbor_store", "sweeps", "sept")
BARE = {"pipeline", "trainer", "flows", "prompts", "neighbor_store", "sweeps"}
ORCHESTRATORS = ("prefect", "prefect_ray", "prefect_dask", "ray", "dask")
FORBIDDEN = {
    "pipeline": ("sept.trainer", "sept.flows", "sept.sweeps", *ORCHESTRATORS),
    "trainer": ("sept.pipeline", "sept.flows", "sept.sweeps", *ORCHESTRATORS),
    "sweeps": ("sept.flows", "sept.pipeline", *ORCHESTRATORS),
    # the store holds versions; making neighbors (LLM calls) and encoding text (CLAP) happen elsewhere
    "neighbor_store": ("sept.pipeline", "sept.clap", "sept.trainer", "sept.flows", "sept.sweeps", *ORCHESTRATORS,
                       "openai", "anthropic", "httpx", "vllm", "laion_clap", "transformers", "sentence_transformers"),
}
# What the pipeline may use of the store: its public package, records and errors (and the cost
# summary it prints); any other store module is the store's own layout.
PIPELINE_STORE_FACE = ("sept.neighbor_store", "sept.neighbor_store.records", "sept.neighbor_store.errors",
                       "sept.neighbor_store.cost")


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
def test_packages_import_only_what_their_layer_allows(folder):
    files = sources(folder)
    assert len(files) >= 5, f"expected the sources of {folder}/"
    violations = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
                  for path in files for line, module in imports(path)
                  if any(within(module, banned) for banned in FORBIDDEN[folder])]
    assert violations == []


def test_the_pipeline_sees_the_store_only_through_its_public_face():
    violations = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
                  for path in sources("pipeline") for line, module in imports(path)
                  if within(module, "sept.neighbor_store") and module not in PIPELINE_STORE_FACE]
    assert violations == []


def top_level_names(path: Path) -> set[str]:
    """Public functions and classes a module defines at its top level."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")}


def test_trainer_holds_no_sweep_code():
    sweep = {name: path.name for path in sources("sweeps") for name in top_level_names(path)}
    assert {"BenchSpec", "plan_bench", "aggregate_base2new", "write_outputs"} <= set(sweep), "expected the sweeps"
    trainer_files = sources("trainer")
    assert not [p for p in trainer_files if p.stem in ("bench", "sweep", "sweeps") or p.stem.startswith("sweep")]
    # a sweep function or class defined again inside the trainer is sweep code in the wrong room
    doubled = [f"{path.relative_to(ROOT)}: {name} (sweeps/{sweep[name]})"
               for path in trainer_files for name in sorted(top_level_names(path) & set(sweep))]
    assert doubled == []


def test_no_bare_top_level_imports_of_project_packages():
    files = [p for folder in FOLDERS for p in sources(folder)] + sorted((ROOT / "tests").rglob("*.py")) \
        + sorted((ROOT / "benchmarks").rglob("*.py")) + sorted((ROOT / "scripts").rglob("*.py"))
    violations = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
                  for path in files for line, module in imports(path)
                  if module.split(".")[0] in BARE]
    assert violations == []
