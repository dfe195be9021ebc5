"""The project as a user installs it: a non-editable wheel in a fresh venv, used from outside the checkout.

The wheel is built from a copy of the working tree (what git tracks or would track), so the
checkout gets no build/ or egg-info litter. The last test runs the local Prefect stack and a
generate-neighbors deployment from that install, in a temporary working directory, and
checks that its state went under $SEPT_HOME and nothing was written in site-packages. The fresh venv sees the project venv's dependencies
through a .pth line naming its site-packages: torch & co. are not reinstalled, and since .pth files
inside a directory added that way are not executed, the project's editable finder stays out.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fixtures_prefect import free_port

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"sept": "sept", "pipeline": "sept/pipeline", "trainer": "sept/trainer", "flows": "sept/flows",
           "prompts": "sept/prompts", "neighbor_store": "sept/neighbor_store"}


def run(*args, cwd, env=None, timeout=600):
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def checkout_files() -> list[str]:
    out = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def project_site_packages() -> str:
    """The site-packages of the interpreter running the tests (the project venv)."""
    prefix = Path(sys.prefix).resolve()
    found = [p for p in sys.path if Path(p).name == "site-packages" and Path(p).resolve().is_relative_to(prefix)]
    assert found, f"no site-packages under {prefix} in sys.path"
    return found[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, fresh venv's python, its site-packages, a clean environment for it)."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    files = checkout_files()
    for rel in files:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, source / rel)
    wheels = base / "wheels"
    run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", wheels, cwd=source)
    (wheel,) = wheels.glob("sept-*.whl")

    venv = base / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel, cwd=base)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base).stdout.strip())
    (site / "project_dependencies.pth").write_text(project_site_packages() + "\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(base), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PREFECT_HOME": str(base / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    return wheel, python, site, env


def test_wheel_holds_only_the_sept_namespace_and_its_data(installed):
    wheel = installed[0]
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"sept", next(t for t in tops if t.endswith(".dist-info"))}
    for bare in ("trainer/", "pipeline/", "flows/", "prompts/", "neighbor_store/"):
        assert not any(n.startswith(bare) for n in names), bare
    for required in ("sept/prompts/generation/default.yaml", "sept/prompts/templates/default.yaml",
                     "sept/pipeline/classlists/esc50.txt", "sept/flows/prefect.yaml"):
        assert required in names, required
    # every data file of a package folder ships, under its sept.* package
    data = [f for f in checkout_files() if f.split("/")[0] in FOLDERS and not f.endswith(".py")]
    assert any(f.endswith(".yaml") for f in data) and any(f.endswith(".txt") for f in data)
    shipped = {FOLDERS[f.split("/")[0]] + f[len(f.split("/")[0]):] for f in data}
    assert sorted(shipped - set(names)) == []
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "sept = sept.cli:main" in entry_points
    assert "sept/tiny_llm.py" in names and "sept/home.py" in names


def test_every_module_imports_from_the_installed_wheel(installed, tmp_path):
    wheel, python, site, env = installed
    # `python -m sept` (__main__) runs the CLI when imported: it is run by the entry-point test instead
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__")
                     for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py") and not n.endswith("__main__.py"))
    assert {"sept.trainer.train", "sept.pipeline.llm.backend", "sept.neighbor_store.store", "sept.clap.model",
            "sept.flows.generate", "sept.prompts"} <= set(modules)
    script = ("import importlib, os, sys\n"
              f"for name in {modules!r}:\n"
              "    importlib.import_module(name)\n"
              "import sept, sept.trainer\n"
              "print(sept.trainer.__file__)\n"
              "print(all(m.__file__.startswith(os.environ['SEPT_WHEEL_SITE']) for n, m in sys.modules.items()\n"
              "          if n.split('.')[0] == 'sept' and getattr(m, '__file__', None)))\n")
    out = run(python, "-c", script, cwd=tmp_path, env={**env, "SEPT_WHEEL_SITE": str(site)}).stdout.split()
    assert Path(out[-2]).resolve().is_relative_to(site.resolve())      # the wheel's copy, not the checkout
    assert out[-1] == "True"


def test_sept_help_from_the_installed_entry_point(installed, tmp_path):
    wheel, python, site, env = installed
    sept = python.parent / "sept"
    assert sept.is_file()
    out = run(sept, "--help", cwd=tmp_path, env=env).stdout
    for verb in ("store", "generate", "margins", "train", "eval"):
        assert verb in out, verb
    assert run(python, "-m", "sept", "train", "--help", cwd=tmp_path, env=env).stdout.count("--checkpoint") >= 1


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: relative path -> (size, mtime_ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_deployment_run_from_the_wheel_keeps_its_state_under_sept_home(installed, tmp_path):
    """`sept stack up` and `prefect deployment run 'generate-neighbors/vllm-local'` from the
    installed wheel, in an empty working directory, against the stand-in LLM server."""
    wheel, python, site, env = installed
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    # no bytecode caches: the check below is about what sept writes, and pip compiled the wheel already
    env = {**env, "SEPT_HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
    env.pop("PREFECT_HOME")   # the stack's own, under $SEPT_HOME
    before = snapshot(site)
    server = subprocess.Popen([python, ROOT / "tests" / "fault_server.py", "--items", "5"], cwd=work, env=env,
                              stdout=subprocess.PIPE, text=True)
    sept = python.parent / "sept"
    try:
        base_url = server.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), base_url
        up = run(sept, "stack", "up", "--port", free_port(), "--pool", "sept-wheel-test", "--vllm-url", base_url,
                 "--served-model", "stand-in", "--timeout", "240", cwd=work, env=env, timeout=600)
        try:
            assert str(home / "stack") in up.stdout
            stack_env = dict(line[len("export "):].split("=", 1) for line in
                             (home / "stack" / "env.sh").read_text().splitlines() if line.startswith("export "))
            stack_env = {k: v.strip("'") for k, v in stack_env.items()}
            res = subprocess.run([python, "-m", "prefect", "deployment", "run", "generate-neighbors/vllm-local",
                                  "--param", "dataset=wheel-set", "--param", "classes=" + json.dumps(["door knock", "rain"]),
                                  "--watch", "--watch-timeout", "400"],
                                 cwd=work, env={**env, **stack_env}, capture_output=True, text=True, timeout=500)
            assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        finally:
            down = run(sept, "stack", "down", cwd=work, env=env)
        assert "worker" in down.stdout and "server" in down.stdout
    finally:
        server.terminate()
        server.wait(10)

    # the version, in the default store of the working directory
    manifests = list((work / "neighbor-store").rglob("manifest.json"))
    assert len(manifests) == 1, manifests
    manifest = json.loads(manifests[0].read_text())
    assert manifest["dataset"] == "wheel-set" and manifest["params"]["backend"] == "vllm"
    # the stack's state and the shared response cache under $SEPT_HOME
    assert (home / "stack" / "stack.json").is_file() and (home / "stack" / "prefect").is_dir()
    assert (home / "stack" / "prefect.yaml").is_file() and (home / "stack" / "logs" / "worker.log").is_file()
    assert any(p.is_file() for p in (home / "llm-cache").rglob("*")), "no response cache under $SEPT_HOME"
    assert snapshot(site) == before, "files were written inside site-packages"
    assert sorted(os.listdir(work)) == ["neighbor-store"]
