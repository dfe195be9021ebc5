"""`sept bench` end to end: the real CLI against a real Prefect server and worker (its own small
stack, no vLLM), the random-weight CLAP, mini copies of two benchmark datasets (real names and
class lists), 2 epochs, 1 shot, 1 fold. Table figures are checked against the runs' results.json.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_audio import write_benchmark_root
from fixtures_prefect import free_port
from sept.neighbor_store import NeighborRecord, Store
from sept.trainer.metrics import harmonic_mean

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DATASETS = ["Beijing-Opera", "CREMA-D"]
# lr 5: the learners move off chance within 2 epochs on the random-weight CLAP, so Base and New differ
TRAINING = ["epochs=2", "coop.epochs=1", "lr=5", "shots=1", "n_ctx=4", "batch_size=4", "device=cpu"]


@pytest.fixture(scope="module")
def bench_stack(tmp_path_factory):
    """Server, process work pool, the deployments of flows/prefect.yaml and a worker."""
    from sept.flows.stack import Stack, StackConfig, StackError

    root = tmp_path_factory.mktemp("bench-stack")
    stack = Stack(StackConfig(root=root / "stack", port=free_port(), pool="sept-bench-test", store=root / "store",
                              timeout=180), log=lambda m: print(f"[stack] {m}"))
    try:
        stack.up()
    except StackError as e:
        stack.down()
        pytest.fail(f"the Prefect stack did not come up: {e}")
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory, bench_stack):
    """The two datasets, and in the stack's store a base-only version tagged base-v1 of each (and an
    all-class one tagged all-v1, which base-to-new must refuse)."""
    from sept.splits import resolve_split

    base = tmp_path_factory.mktemp("bench-data")
    root = write_benchmark_root(base / "data", DATASETS, clips_per_class=1)
    store = Store(bench_stack.deploy_env()["SEPT_STORE"])
    for name in DATASETS:
        with open(root / name / "train.csv", newline="") as f:
            classes = sorted({row["classname"] for row in csv.DictReader(f)})
        split = resolve_split(classes)
        texts = ("a loud {}", "a distant {}")
        store.write_version(name, split.base, [NeighborRecord(**{"class": c, "text": t.format(c)})
                                               for c in split.base for t in texts],
                            params={"backend": "human", "visible_classes": split.base}, tag="base-v1")
        store.write_version(name, classes, [NeighborRecord(**{"class": c, "text": t.format(c)})
                                            for c in classes for t in texts], params={"backend": "human"},
                            tag="all-v1")
    return root, base


def sept_bench(stack, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(stack.env(), COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "sept", "bench", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def common(bench_data, clap_checkpoint, stack, out: Path, *extra: str, seeds: str = "1") -> list[str]:
    root, base = bench_data
    return ["--datasets-root", str(root), "--checkpoint", str(clap_checkpoint), "--datasets", ",".join(DATASETS),
            "--folds", "1", "--seeds", seeds, "--store", stack.deploy_env()["SEPT_STORE"], "--out", str(out), "-q",
            *extra, *TRAINING, f"cache_dir={base / 'audio-cache'}"]


def results_of(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/results.json")}


def test_bench_through_prefect_matches_results_and_resumes(bench_stack, bench_data, clap_checkpoint,
                                                           clap_tokenizer_dir):
    out = bench_data[1] / "bench"
    arms = ("--methods", "coop,palm", "--sept", "off,on")
    args = common(bench_data, clap_checkpoint, bench_stack, out, *arms, "--neighbors", "base-v1")

    # an all-class version is refused before anything trains, with the command that makes a base-only one
    refused = sept_bench(bench_stack, "base2new", *[a if a != "base-v1" else "all-v1" for a in args])
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "'naobo', 'xiaoluo'" in refused.stderr and "--split base" in refused.stderr
    assert "sept generate --dataset CREMA-D" in refused.stderr and not (out / "runs").exists()

    first = sept_bench(bench_stack, "base2new", *args)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "8 runs: 8 trained, 0 done before, 0 failed" in first.stdout
    results = results_of(out)
    assert len(results) == 8
    rows = {r["run"]: r for r in csv.DictReader((out / "runs.csv").open())}
    assert {r["status"] for r in rows.values()} == {"trained"}
    # one CLAP load in the one process that ran them all (threads runner, 1 on the CPU)
    assert len({r["worker"] for r in rows.values()}) == 1 and {r["clap_loads"] for r in rows.values()} == {"1"}
    for name, res in results.items():
        arm = rows[name]["arm"]
        assert (res["neighbors"] is not None) == (arm == "on")
        if arm == "on":
            assert res["neighbors"]["ref"].endswith(res["config"]["neighbors"].split("@")[1][:12])
        assert res["config"]["base_to_new"] is True
        assert res["config"]["epochs"] == (1 if rows[name]["method"] == "coop" else 2)   # coop.epochs=1 wins

    # the table against the runs' own figures
    table = {r["row"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert list(table) == ["CoOp", "CoOp + SEPT", "PALM", "PALM + SEPT"]
    for label, row in table.items():
        method, arm = row["method"], row["arm"]
        per_dataset = {}
        for d in DATASETS:
            (res,) = [r for n, r in results.items() if rows[n]["method"] == method and rows[n]["arm"] == arm
                      and rows[n]["dataset"] == d]
            b, n = 100 * res["metrics"]["base"]["accuracy"], 100 * res["metrics"]["new"]["accuracy"]
            assert float(row[f"{d}/base"]) == pytest.approx(b) and float(row[f"{d}/new"]) == pytest.approx(n)
            assert float(row[f"{d}/H"]) == pytest.approx(harmonic_mean(b, n))
            per_dataset[d] = (b, n, harmonic_mean(b, n))
        mb = sum(v[0] for v in per_dataset.values()) / 2
        mn = sum(v[1] for v in per_dataset.values()) / 2
        assert float(row["avg/base"]) == pytest.approx(mb) and float(row["avg/new"]) == pytest.approx(mn)
        assert float(row["avg/H"]) == pytest.approx(sum(v[2] for v in per_dataset.values()) / 2)
        assert float(row["avg/H_of_means"]) == pytest.approx(harmonic_mean(mb, mn))
    md = (out / "table.md").read_text()
    coop = next(line for line in md.splitlines() if line.startswith("| CoOp |"))
    assert f"{float(table['CoOp']['avg/H']):.2f}" in coop and "65.00 / 34.09 / 42.83" in coop
    assert "64.36 / 42.98 / 49.70" in next(line for line in md.splitlines() if line.startswith("| CoOp + SEPT |"))
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == ["base_new_h.png", "sept_gain.png"]

    # again: nothing is trained, nothing is rewritten
    stamps = {n: (out / "runs" / n / "results.json").stat().st_mtime_ns for n in results}
    second = sept_bench(bench_stack, "base2new", *args)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "8 runs: 0 trained, 8 done before, 0 failed" in second.stdout
    assert {n: (out / "runs" / n / "results.json").stat().st_mtime_ns for n in results} == stamps
    assert {r["status"] for r in csv.DictReader((out / "runs.csv").open())} == {"skipped"}

    # --dry-run with one more seed: the 8 done, 8 to train, nothing run
    dry = sept_bench(bench_stack, "base2new", *common(bench_data, clap_checkpoint, bench_stack, out, *arms,
                                                      "--neighbors", "base-v1", seeds="1,2"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "8 of 16 runs done, 8 to train" in dry.stdout and len(results_of(out)) == 8

    # the deployment runs the same sweep on the worker: done already, so it trains nothing and completes
    from sept.flows.demo import run_deployment

    root, base = bench_data
    params = {"datasets_root": str(root), "datasets": ",".join(DATASETS), "methods": "coop,palm", "sept": "off,on",
              "neighbors": "base-v1", "seeds": "1", "folds": "1", "out": str(out), "checkpoint": str(clap_checkpoint),
              "options": " ".join(TRAINING + [f"cache_dir={base / 'audio-cache'}"])}
    code, text = run_deployment(bench_stack, "train-sweep/default", params, 400, echo=lambda line: None)
    assert code == 0, text[-4000:]
    assert '"skipped": 8' in text and '"trained": 0' in text
    assert {n: (out / "runs" / n / "results.json").stat().st_mtime_ns for n in results} == stamps


def test_ray_runs_in_parallel_and_a_failed_run_fails_alone(bench_stack, bench_data, clap_checkpoint,
                                                           clap_tokenizer_dir):
    out = bench_data[1] / "bench-ray"
    # the coop runs get a checkpoint that does not exist: they fail, the palm runs go on
    args = common(bench_data, clap_checkpoint, bench_stack, out, "--methods", "palm,coop", "--sept", "off",
                  "--task-runner", "ray", "--ray-workers", "2")
    res = sept_bench(bench_stack, "base2new", *args, "coop.checkpoint=/nonexistent/clap.pt")
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-4000:]
    assert "4 runs: 2 trained, 0 done before, 2 failed" in res.stdout
    failed = [line for line in res.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 2 and all("-coop-" in line and "/nonexistent/clap.pt" in line for line in failed)
    summary = json.loads((out / "summary.json").read_text())
    assert {f["method"] for f in summary["failed"]} == {"coop"} and summary["trained"] == 2

    rows = [r for r in csv.DictReader((out / "runs.csv").open()) if r["status"] == "trained"]
    assert {r["method"] for r in rows} == {"palm"} and all(r["base"] for r in rows)
    a, b = rows
    # two Ray worker processes, each loading CLAP once, and the runs overlapping in time
    assert a["worker"] != b["worker"] and a["clap_loads"] == b["clap_loads"] == "1"
    assert float(a["started"]) < float(b["ended"]) and float(b["started"]) < float(a["ended"]), rows
    table = (out / "table.md").read_text()
    assert "| PALM |" in table and "2 run(s) failed" in table
    assert "| CoOp | – | – | – | – | – | – |" in table
